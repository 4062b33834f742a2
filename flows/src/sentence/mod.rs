//! Sentence embeddings from a sentence-transformers model folder, on candle: the flow
//! behind `kind = "sentence-transformer"` entries of a worker's configuration, and
//! behind the built-in `text.minilm@1` (one such folder).
//!
//! The pipeline is sentence-transformers': tokenize (`tokenizer.json`, truncated to
//! `max_length` tokens counting [CLS] and [SEP]), run BERT, pool the last hidden states
//! (mean or max over the real tokens, or the [CLS] token's), L2-normalise when the
//! folder's pipeline ends with Normalize. A batch runs as padded sub-batches of texts of
//! similar length; padding is masked out of attention and pooling. The weights are read
//! on the first batch, not at construction.

mod folder;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use tokenizers::Tokenizer;
use tokenizers::utils::truncation::{TruncationParams, truncate_encodings};

pub use folder::{Folder, Pooling};

use crate::builtin::{SpecBuilder, input, param};
use crate::model::sha256_file;
use crate::{Error, Flow, FlowInput, FlowSpec, LazyModel, ModelInfo, Params, Value, ValueType};

/// Most texts per forward pass; bigger batches run as several passes.
const SUB_BATCH: usize = 32;

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

/// The loaded model: BERT, the tokenizer (without its own truncation and padding), the
/// pooling and the device BERT runs on.
struct Loaded {
    bert: BertModel,
    tokenizer: Tokenizer,
    /// Tokens the post-processor adds to one sequence ([CLS] and [SEP]).
    added_tokens: usize,
    pooling: Pooling,
    normalize: bool,
    device: Device,
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
    let bert = BertModel::load(vb, &described.config).map_err(broken)?;
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
        device,
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

    /// One forward pass over `seqs` padded to the longest: one `[hidden]` CPU tensor each.
    fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<Tensor>, Error> {
        let n = seqs.len();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if n == 0 || len == 0 {
            return Ok(Vec::new());
        }
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (i, seq) in seqs.iter().enumerate() {
            ids[i * len..i * len + seq.len()].copy_from_slice(seq);
            mask[i * len..i * len + seq.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?; // [n, len, hidden]
        let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [n, len, 1]
        let pooled = match self.pooling {
            Pooling::Mean => {
                let summed = hidden.broadcast_mul(&weights)?.sum(1)?; // [n, hidden]
                let counts = weights.sum(1)?.maximum(1e-9)?; // [n, 1]
                summed.broadcast_div(&counts)?
            }
            Pooling::Cls => hidden.i((.., 0, ..))?.contiguous()?,
            // Padding set far below any real value, as sentence-transformers does.
            Pooling::Max => hidden.broadcast_add(&((weights - 1.0)? * 1e9)?)?.max(1)?,
        };
        let out = if self.normalize {
            let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
            pooled.broadcast_div(&norms)?
        } else {
            pooled
        };
        let out = out.to_device(&Device::Cpu)?;
        (0..n)
            .map(|i| Ok(out.get(i)?))
            .collect::<Result<Vec<_>, Error>>()
    }
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
        // Sorted by length, so the sub-batches of a big batch pad less.
        let mut order: Vec<usize> = (0..batch.len()).filter(|i| tokens[*i].is_ok()).collect();
        order.sort_by_key(|i| tokens[*i].as_ref().map(Vec::len).unwrap_or(0));
        for chunk in order.chunks(SUB_BATCH) {
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
