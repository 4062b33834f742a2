//! `text.minilm`: 384-d sentence embeddings with all-MiniLM-L6-v2 (BERT on candle).
//!
//! The pipeline is sentence-transformers': tokenize (`tokenizer.json`, truncated to
//! `max_length` tokens counting [CLS] and [SEP]), run BERT, mean-pool the last hidden
//! states weighted by the attention mask, L2-normalise. A batch runs as padded
//! sub-batches of texts of similar length; padding is masked out of attention and pooling.
//!
//! The model is read from `<model dir>/all-minilm-l6-v2/` (`model.safetensors`,
//! `tokenizer.json`, optionally `config.json`), where the model dir is `FSTORE_MODEL_DIR`
//! or `.data/models`. `scripts/fetch-model` puts the files there; nothing is downloaded
//! at run time. The model is loaded on the first batch, not at construction.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct, PositionEmbeddingType};
use tokenizers::Tokenizer;
use tokenizers::utils::truncation::{TruncationParams, truncate_encodings};

use super::{SpecBuilder, input, param};
use crate::model::sha256_file;
use crate::{Error, Flow, FlowInput, FlowSpec, LazyModel, ModelInfo, Params, Value, ValueType};

/// The environment variable naming the folder that holds `all-minilm-l6-v2/`.
pub const MODEL_DIR_ENV: &str = "FSTORE_MODEL_DIR";
/// The model's folder inside the model dir.
pub const MODEL_FOLDER: &str = "all-minilm-l6-v2";
/// The model's name as operators see it.
pub const MODEL_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Length of an embedding.
pub const DIM: usize = 384;
/// The longest input in tokens, [CLS] and [SEP] included (the model's `max_seq_length`).
pub const MAX_LENGTH: usize = 256;
/// Most texts per forward pass; bigger batches run as several passes.
const SUB_BATCH: usize = 32;

/// Sentence embeddings with all-MiniLM-L6-v2: one L2-normalised `[384]` tensor per text.
#[derive(Debug)]
pub struct MiniLm {
    spec: FlowSpec,
    folder: PathBuf,
    lazy: LazyModel<Loaded>,
}

/// The loaded model: BERT, the tokenizer (without its own truncation and padding) and
/// the device BERT runs on.
struct Loaded {
    bert: BertModel,
    tokenizer: Tokenizer,
    /// Tokens the post-processor adds to one sequence ([CLS] and [SEP]).
    added_tokens: usize,
    device: Device,
}

impl MiniLm {
    /// A flow reading the model from `model_dir/all-minilm-l6-v2/`. Loads nothing yet.
    pub fn new(model_dir: PathBuf) -> Self {
        let spec = SpecBuilder::new(
            "text.minilm",
            1,
            ValueType::Tensor,
            "sentence embedding of a text with all-MiniLM-L6-v2: tensor [384], L2-normalised",
        )
        .input(input("text", ValueType::String))
        .param(param(
            "max_length",
            Some("256"),
            "tokens kept of the text, [CLS] and [SEP] included, 1 to 256",
        ))
        .build();
        let folder = model_dir.join(MODEL_FOLDER);
        let load_from = folder.clone();
        let lazy = LazyModel::new(MODEL_NAME, folder.display().to_string(), move || {
            load(&load_from)
        });
        MiniLm { spec, folder, lazy }
    }

    /// A flow reading the model from `$FSTORE_MODEL_DIR/all-minilm-l6-v2/`, or without
    /// that variable from `.data/models/all-minilm-l6-v2/` in the current directory or
    /// the nearest parent that has one (so it is found from anywhere in the repository).
    pub fn from_env() -> Self {
        Self::new(model_dir_from_env())
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
}

fn model_dir_from_env() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let default = Path::new(".data").join("models");
    let Ok(cwd) = std::env::current_dir() else {
        return default;
    };
    cwd.ancestors()
        .map(|dir| dir.join(&default))
        .find(|dir| dir.join(MODEL_FOLDER).is_dir())
        .unwrap_or_else(|| cwd.join(default))
}

fn max_length(params: &Params) -> Result<usize, Error> {
    let n = params.u64_or("max_length", MAX_LENGTH as u64)?;
    if n == 0 || n > MAX_LENGTH as u64 {
        return Err(Error::Permanent(format!(
            "param `max_length` = {n} is out of range 1..={MAX_LENGTH}"
        )));
    }
    Ok(n as usize)
}

fn missing_files(folder: &Path) -> Error {
    Error::Permanent(format!(
        "the all-MiniLM-L6-v2 model files (model.safetensors, tokenizer.json) are not in {}: \
         run scripts/fetch-model to fetch them (it puts them in \
         ${MODEL_DIR_ENV}/{MODEL_FOLDER}, default .data/models/{MODEL_FOLDER})",
        folder.display()
    ))
}

/// all-MiniLM-L6-v2's config.json, for a folder without one.
fn known_config() -> Config {
    Config {
        vocab_size: 30522,
        hidden_size: DIM,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.1,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: PositionEmbeddingType::Absolute,
        use_cache: true,
        classifier_dropout: None,
        model_type: Some("bert".to_string()),
    }
}

fn read_config(folder: &Path) -> Result<Config, Error> {
    let path = folder.join("config.json");
    let config = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Config>(&bytes).map_err(|e| {
            Error::Permanent(format!(
                "{} is not a BERT config ({e}): run scripts/fetch-model to fetch the model again",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => known_config(),
        Err(e) => {
            return Err(Error::Permanent(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    // "gelu" is the exact erf GELU the model was trained with; the tanh approximation
    // moves components by ~3e-4.
    if config.hidden_act != HiddenAct::Gelu || config.hidden_size != DIM {
        return Err(Error::Permanent(format!(
            "{} is not all-MiniLM-L6-v2's config (hidden_act {:?}, hidden_size {}; expected \
             gelu and {DIM}): run scripts/fetch-model to fetch the model again",
            path.display(),
            config.hidden_act,
            config.hidden_size
        )));
    }
    Ok(config)
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

/// Reads the model from `folder`; returns it with the sha256 of its weights.
fn load(folder: &Path) -> Result<(Loaded, String), Error> {
    let weights = folder.join("model.safetensors");
    let tokenizer_file = folder.join("tokenizer.json");
    if !weights.is_file() || !tokenizer_file.is_file() {
        return Err(missing_files(folder));
    }
    let config = read_config(folder)?;
    let sha256 = sha256_file(&weights)?;
    let device = device()?;
    // Read into memory rather than mmaped: mmap needs unsafe code.
    let bytes = std::fs::read(&weights)
        .map_err(|e| Error::Permanent(format!("cannot read {}: {e}", weights.display())))?;
    let broken = |e: candle_core::Error| {
        Error::Permanent(format!(
            "{} is not all-MiniLM-L6-v2's weights ({e}): run scripts/fetch-model to fetch \
             them again",
            weights.display()
        ))
    };
    // Keys have no `bert.` prefix; `embeddings.position_ids` and `pooler.*` are never read.
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(broken)?;
    let bert = BertModel::load(vb, &config).map_err(broken)?;
    let mut tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(|e| {
        Error::Permanent(format!(
            "{} is not a tokenizer ({e}): run scripts/fetch-model to fetch it again",
            tokenizer_file.display()
        ))
    })?;
    // tokenizer.json asks for truncation and fixed padding at 128; truncation is per item
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

    /// One forward pass over `seqs` padded to the longest: one `[384]` CPU tensor each.
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
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?; // [n, len, 384]
        let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [n, len, 1]
        let summed = hidden.broadcast_mul(&weights)?.sum(1)?; // [n, 384]
        let counts = weights.sum(1)?.maximum(1e-9)?; // [n, 1]
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        let unit = mean.broadcast_div(&norms)?.to_device(&Device::Cpu)?;
        (0..n)
            .map(|i| Ok(unit.get(i)?))
            .collect::<Result<Vec<_>, Error>>()
    }
}

impl Flow for MiniLm {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        max_length(params).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let prepared: Vec<Result<(&str, usize), Error>> = batch
            .iter()
            .map(|item| Ok((item.value("text")?.as_str()?, max_length(&item.params)?)))
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
            match model.embed(&seqs) {
                Ok(vectors) if vectors.len() == chunk.len() => {
                    for (i, v) in chunk.iter().zip(vectors) {
                        out[*i] = Some(Ok(Value::Tensor(v)));
                    }
                }
                Ok(_) => {
                    for i in chunk {
                        out[*i] = Some(Err(Error::Permanent(
                            "the model returned the wrong number of embeddings".to_string(),
                        )));
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
    use super::*;
    use crate::builtin::testing::item;

    fn params(max_length: &str) -> Params {
        [("max_length".to_string(), max_length.to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn spec_and_params() {
        let flow = MiniLm::new(PathBuf::from("/nowhere"));
        assert_eq!(flow.spec().id.to_string(), "text.minilm@1");
        assert!(flow.spec().batchable);
        assert_eq!(flow.spec().output, ValueType::Tensor);
        for ok in ["1", "128", "256"] {
            assert!(flow.check_params(&params(ok)).is_ok(), "max_length {ok}");
        }
        assert!(flow.check_params(&Params::default()).is_ok());
        for bad in ["0", "300", "-1", "x"] {
            let err = flow.check_params(&params(bad)).expect_err(bad);
            assert!(!err.is_transient(), "{err}");
        }
        let unknown = [("dim".to_string(), "3".to_string())].into_iter().collect();
        assert!(flow.check_params(&unknown).is_err());
    }

    #[test]
    fn missing_model_fails_every_item_with_the_fetch_command() {
        let dir =
            std::env::temp_dir().join(format!("fstore-minilm-missing-{}", std::process::id()));
        let flow = MiniLm::new(dir.clone());
        let text = |t: &str| item(&[("text", Value::String(t.to_string()))], &[]);
        let out = flow.run(&[text("a"), text(""), item(&[], &[])]);
        assert_eq!(out.len(), 3);
        for r in &out[..2] {
            let err = r.as_ref().expect_err("no model, no embedding");
            assert!(matches!(err, Error::Permanent(_)), "{err:?}");
            assert!(err.message().contains("scripts/fetch-model"), "{err}");
            assert!(
                err.message()
                    .contains(&dir.join(MODEL_FOLDER).display().to_string()),
                "{err}"
            );
        }
        let err = out[2].as_ref().expect_err("no input");
        assert!(err.message().contains("`text`"), "{err}");
        let info = flow.model().expect("model info");
        assert_eq!(info.name, MODEL_NAME);
        assert!(!info.loaded);
        assert_eq!(info.loads, 0);
    }

    #[test]
    fn construction_loads_nothing() {
        let flow = MiniLm::from_env();
        assert!(flow.model_folder().ends_with(MODEL_FOLDER));
        assert!(!flow.model().expect("model info").loaded);
    }
}
