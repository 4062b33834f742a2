//! Sentence embeddings from a sentence-transformers model folder, on candle: the flow
//! behind `kind = "sentence-transformer"` entries of a worker's configuration, and
//! behind the built-in `text.minilm@1` (one such folder).
//!
//! The pipeline is sentence-transformers': tokenize (`tokenizer.json`, truncated to
//! `max_length` tokens counting [CLS] and [SEP]), run BERT, pool the last hidden states
//! (mean or max over the real tokens, or the [CLS] token's), L2-normalise when the
//! folder's pipeline ends with Normalize. A batch runs packed (no padding in the dense
//! layers, see [`bert`]), in passes of texts of similar length within a token budget.
//! The weights are read on the first batch, not at construction.

mod bert;
mod folder;
mod kernels;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;
use tokenizers::utils::truncation::{TruncationParams, truncate_encodings};

use bert::{Bert, Packing};
pub use folder::{Folder, Pooling};

use crate::builtin::{SpecBuilder, input, param};
use crate::model::sha256_file;
use crate::{Error, Flow, FlowInput, FlowSpec, LazyModel, ModelInfo, Params, Value, ValueType};

/// Most tokens per forward pass, counting the padding attention adds (texts × the
/// longest): it bounds the pass's memory. A bigger batch runs as several passes.
const TOKEN_BUDGET: usize = 4096;

/// What a configured model flow is called and where its folder is.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub version: u32,
    pub folder: PathBuf,
    /// What operators see as the model's name (default: the folder's name).
    pub model: Option<String>,
    /// The flow's description (default: one made from the folder).
    pub description: Option<String>,
}

/// Sentence embeddings with a BERT-family model: one `[hidden]` tensor per text.
#[derive(Debug)]
pub struct SentenceTransformer {
    spec: FlowSpec,
    folder: PathBuf,
    max_seq_length: usize,
    lazy: LazyModel<Loaded>,
}

/// The loaded model: BERT (on its device), the tokenizer (without its own truncation and
/// padding) and the pooling.
struct Loaded {
    bert: Bert,
    tokenizer: Tokenizer,
    /// Tokens the post-processor adds to one sequence ([CLS] and [SEP]).
    added_tokens: usize,
    pooling: Pooling,
    normalize: bool,
}

impl SentenceTransformer {
    /// A flow over the folder `options` names, read now (not its weights): a folder it
    /// cannot serve is refused here, so a worker refuses it at start.
    pub fn open(options: &Options) -> Result<Self, Error> {
        let folder = Folder::read(&options.folder)?;
        let model = options.model.clone().unwrap_or_else(|| {
            folder.path.file_name().map_or_else(
                || folder.path.display().to_string(),
                |n| n.to_string_lossy().into(),
            )
        });
        let description = options.description.clone().unwrap_or_else(|| {
            format!(
                "sentence embedding of a text with {model}: tensor [{}], {} pooling{}",
                folder.dim(),
                folder.pooling.name(),
                if folder.normalize {
                    ", L2-normalised"
                } else {
                    ""
                }
            )
        });
        let folder_path = folder.path.clone();
        Ok(Self::build(
            &options.name,
            options.version,
            folder_path,
            folder.max_seq_length,
            &description,
            model,
            None,
        ))
    }

    /// A flow over `folder`, read at its first batch; `missing` says how to get the
    /// folder when it is not there (a built-in flow's model fetched by a script).
    pub(crate) fn build(
        name: &str,
        version: u32,
        folder: PathBuf,
        max_seq_length: usize,
        description: &str,
        model: String,
        missing: Option<String>,
    ) -> Self {
        let spec = SpecBuilder::new(name, version, ValueType::Tensor, description)
            .input(input("text", ValueType::String))
            .param(param(
                "max_length",
                Some(&max_seq_length.to_string()),
                &format!(
                    "tokens kept of the text, [CLS] and [SEP] included, 1 to {max_seq_length}"
                ),
            ))
            .build();
        let load_from = folder.clone();
        let lazy = LazyModel::new(model, folder.display().to_string(), move || {
            load(&load_from, missing.as_deref())
        });
        SentenceTransformer {
            spec,
            folder,
            max_seq_length,
            lazy,
        }
    }

    /// The folder the model files are read from.
    pub fn model_folder(&self) -> &Path {
        &self.folder
    }

    /// The token ids BERT sees for `text` at `max_length` ([CLS] … [SEP]). Loads the model
    /// if needed.
    pub fn token_ids(&self, text: &str, max_length: usize) -> Result<Vec<u32>, Error> {
        self.lazy.get()?.encode(text, max_length)
    }

    fn max_length(&self, params: &Params) -> Result<usize, Error> {
        let most = self.max_seq_length;
        let n = params.u64_or("max_length", most as u64)?;
        if n == 0 || n > most as u64 {
            return Err(Error::Permanent(format!(
                "param `max_length` = {n} is out of range 1..={most}"
            )));
        }
        Ok(n as usize)
    }
}

fn device() -> Result<Device, Error> {
    #[cfg(feature = "cuda")]
    {
        Device::cuda_if_available(0)
            .map_err(|e| Error::Transient(format!("cannot open the cuda device: {e}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

/// Reads the model from `folder`; returns it with the sha256 of its weights. `missing`
/// replaces the error of a folder that is not there.
fn load(folder: &Path, missing: Option<&str>) -> Result<(Loaded, String), Error> {
    let described = match (Folder::read(folder), missing) {
        (Ok(f), _) => f,
        (Err(_), Some(hint)) if !folder.join("model.safetensors").is_file() => {
            return Err(Error::Permanent(hint.to_string()));
        }
        (Err(e), _) => return Err(e),
    };
    let weights = folder.join("model.safetensors");
    let tokenizer_file = folder.join("tokenizer.json");
    let sha256 = sha256_file(&weights)?;
    let device = device()?;
    // Read into memory rather than mmaped: mmap needs unsafe code.
    let bytes = std::fs::read(&weights)
        .map_err(|e| Error::Permanent(format!("cannot read {}: {e}", weights.display())))?;
    let broken = |e: candle_core::Error| {
        Error::Permanent(format!(
            "{} does not hold the weights its config.json describes ({e})",
            weights.display()
        ))
    };
    // Keys with or without the `bert.` prefix; `pooler.*` is never read.
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(broken)?;
    let bert = Bert::load(vb, &described.config).map_err(broken)?;
    let mut tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(|e| {
        Error::Permanent(format!(
            "{} is not a tokenizer ({e})",
            tokenizer_file.display()
        ))
    })?;
    // tokenizer.json may ask for truncation and fixed padding; truncation is per item
    // (max_length) and padding per batch here.
    tokenizer
        .with_truncation(None)
        .map_err(|e| Error::Permanent(format!("cannot configure the tokenizer: {e}")))?;
    tokenizer.with_padding(None);
    let added_tokens = tokenizer
        .get_post_processor()
        .map(|p| tokenizers::PostProcessor::added_tokens(p, false))
        .unwrap_or(0);
    let loaded = Loaded {
        bert,
        tokenizer,
        added_tokens,
        pooling: described.pooling,
        normalize: described.normalize,
    };
    Ok((loaded, sha256))
}

impl Loaded {
    /// Token ids of `text`, truncated (right, like the `tokenizers` library's truncation)
    /// so that with [CLS] and [SEP] there are at most `max_length` (but at least those two).
    fn encode(&self, text: &str, max_length: usize) -> Result<Vec<u32>, Error> {
        let failed = |e: tokenizers::Error| Error::Permanent(format!("cannot tokenize: {e}"));
        let encoding = self.tokenizer.encode_fast(text, false).map_err(failed)?;
        let params = TruncationParams {
            max_length: max_length.saturating_sub(self.added_tokens),
            ..TruncationParams::default()
        };
        let (encoding, _) = truncate_encodings(encoding, None, &params).map_err(failed)?;
        let encoding = self
            .tokenizer
            .post_process(encoding, None, true)
            .map_err(failed)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// One forward pass over `seqs` (packed, see [`bert`]): one `[hidden]` CPU tensor each.
    fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<Tensor>, Error> {
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(Error::Permanent(
                "nothing to embed: a text has no tokens".into(),
            ));
        }
        let packing = Packing::new(seqs);
        let hidden = self.bert.forward(seqs, &packing)?;
        bert::pool(&hidden, &packing, self.pooling)?
            .into_iter()
            .map(|mut v| {
                if self.normalize {
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                let n = v.len();
                Ok(Tensor::from_vec(v, n, &Device::Cpu)?)
            })
            .collect()
    }
}

/// Passes of a batch: consecutive texts (sorted by length) while the pass, padded to its
/// longest text for attention, stays within `budget` tokens; a text longer than the
/// budget runs alone.
fn passes(lengths: &[usize], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut passes = Vec::new();
    let mut start = 0;
    let mut longest = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let longer = longest.max(len);
        if i > start && longer * (i + 1 - start) > budget {
            passes.push(start..i);
            start = i;
            longest = len;
        } else {
            longest = longer;
        }
    }
    if start < lengths.len() {
        passes.push(start..lengths.len());
    }
    passes
}

impl Flow for SentenceTransformer {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        self.max_length(params).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let prepared: Vec<Result<(&str, usize), Error>> = batch
            .iter()
            .map(|item| {
                Ok((
                    item.value("text")?.as_str()?,
                    self.max_length(&item.params)?,
                ))
            })
            .collect();
        if prepared.iter().all(Result::is_err) {
            // Nothing to embed: do not load the model for it.
            return prepared
                .into_iter()
                .filter_map(Result::err)
                .map(Err)
                .collect();
        }
        let model = match self.lazy.get() {
            Ok(model) => model,
            Err(e) => {
                return prepared
                    .into_iter()
                    .map(|p| Err(p.err().unwrap_or_else(|| e.clone())))
                    .collect();
            }
        };
        let tokens: Vec<Result<Vec<u32>, Error>> = prepared
            .into_iter()
            .map(|p| p.and_then(|(text, max)| model.encode(text, max)))
            .collect();
        let mut out: Vec<Option<Result<Value, Error>>> = vec![None; batch.len()];
        // Sorted by length, so each pass's attention pads little.
        let mut order: Vec<usize> = (0..batch.len()).filter(|i| tokens[*i].is_ok()).collect();
        order.sort_by_key(|i| tokens[*i].as_ref().map(Vec::len).unwrap_or(0));
        let lengths: Vec<usize> = order
            .iter()
            .map(|i| tokens[*i].as_ref().map(Vec::len).unwrap_or(0))
            .collect();
        for pass in passes(&lengths, TOKEN_BUDGET) {
            let chunk = &order[pass];
            let seqs: Vec<&[u32]> = chunk
                .iter()
                .filter_map(|i| tokens[*i].as_ref().ok().map(Vec::as_slice))
                .collect();
            let embedded = match model.embed(&seqs) {
                Ok(vectors) if vectors.len() == chunk.len() => Ok(vectors),
                Ok(_) => Err(Error::Permanent(
                    "the model returned the wrong number of embeddings".to_string(),
                )),
                Err(e) => Err(e),
            };
            match embedded {
                Ok(vectors) => {
                    for (i, v) in chunk.iter().zip(vectors) {
                        out[*i] = Some(Ok(Value::Tensor(v)));
                    }
                }
                Err(e) => {
                    for i in chunk {
                        out[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        tokens
            .into_iter()
            .zip(out)
            .map(|(t, o)| match (t, o) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(r)) => r,
                (Ok(_), None) => Err(Error::Permanent("item was not computed".to_string())),
            })
            .collect()
    }

    fn model(&self) -> Option<ModelInfo> {
        Some(self.lazy.info())
    }

    fn unload(&self) {
        self.lazy.unload();
    }
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn passes_keep_texts_times_the_longest_within_the_budget() {
        assert!(passes(&[], 100).is_empty());
        assert_eq!(passes(&[10; 10], 100), vec![0..10]);
        assert_eq!(passes(&[10; 11], 100), vec![0..10, 10..11]);
        // Sorted lengths: the longer texts go fewer to a pass.
        assert_eq!(passes(&[5, 5, 5, 30, 40, 60], 100), vec![0..3, 3..5, 5..6]);
        // A text over the budget runs alone rather than not at all.
        assert_eq!(passes(&[10, 500, 600], 100), vec![0..1, 1..2, 2..3]);
    }
}
