//! What `kind = "sentence-transformer"` reads of a model folder, as the
//! sentence-transformers library saves one: `config.json` (a BERT-family config),
//! `modules.json` (the pipeline: Transformer, Pooling, optionally Normalize), the
//! pooling module's `config.json`, `sentence_bert_config.json` (`max_seq_length`),
//! `tokenizer.json` and `model.safetensors`. Read when a worker starts, so a folder it
//! cannot serve is refused then, with what to fix; the weights are read at first use.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::bert::Config;
use crate::Error;

/// How token embeddings become one sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the tokens' embeddings (padding excluded).
    Mean,
    /// The first token's ([CLS]).
    Cls,
    /// Per dimension, the largest over the tokens (padding excluded).
    Max,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "CLS",
            Pooling::Max => "max",
        }
    }
}

/// A sentence-transformers folder a worker can serve.
#[derive(Debug, Clone)]
pub struct Folder {
    pub path: PathBuf,
    pub config: Config,
    pub pooling: Pooling,
    /// Whether a Normalize module ends the pipeline (L2-normalised embeddings).
    pub normalize: bool,
    /// The longest input in tokens, [CLS] and [SEP] included.
    pub max_seq_length: usize,
}

#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The pooling module's config; every mode sentence-transformers knows is read, so one
/// this flow does not run is refused by name rather than ignored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PoolingConfig {
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
    pooling_mode_weightedmean_tokens: bool,
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// Model types candle's BERT runs: the architecture, weights and tokenizer of BERT.
const BERT_FAMILY: [&str; 1] = ["bert"];

impl Folder {
    /// Reads the folder's description (not its weights); a folder this flow cannot serve
    /// is refused with what is missing or unsupported.
    pub fn read(path: &Path) -> Result<Folder, Error> {
        let refuse =
            |what: String| Error::Permanent(format!("the model folder {} {what}", path.display()));
        if !path.is_dir() {
            return Err(refuse(
                "does not exist: point `path` at a sentence-transformers model folder".into(),
            ));
        }
        for file in [
            "config.json",
            "modules.json",
            "tokenizer.json",
            "model.safetensors",
        ] {
            if !path.join(file).is_file() {
                return Err(refuse(format!(
                    "has no {file}: a sentence-transformers folder (as `SentenceTransformer.save` \
                     writes one, with a fast tokenizer and safetensors weights) is needed"
                )));
            }
        }
        let config: serde_json::Value = read_json(&path.join("config.json"))?;
        let model_type = config["model_type"].as_str().unwrap_or("");
        if !BERT_FAMILY.contains(&model_type) {
            return Err(refuse(format!(
                "holds a `{model_type}` model: kind sentence-transformer runs BERT-family models \
                 (model_type {})",
                BERT_FAMILY.join(", ")
            )));
        }
        let config: Config = serde_json::from_value(config)
            .map_err(|e| refuse(format!("has a config.json that is not a BERT config ({e})")))?;
        if let Some(why) = config.unsupported() {
            return Err(refuse(format!(
                "has a config.json this flow cannot run: {why}"
            )));
        }
        let modules: Vec<Module> = read_json(&path.join("modules.json"))?;
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| m.path.clone())
            .ok_or_else(|| refuse("lists no Pooling module in modules.json".into()))?;
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        if let Some(other) = modules.iter().find(|m| {
            !(m.kind.ends_with(".Transformer")
                || m.kind.ends_with(".Pooling")
                || m.kind.ends_with(".Normalize"))
        }) {
            return Err(refuse(format!(
                "has a module this flow does not run: {} (only Transformer, Pooling and \
                 Normalize are supported)",
                other.kind
            )));
        }
        let pooling_config: PoolingConfig =
            read_json(&path.join(&pooling_dir).join("config.json"))?;
        let pooling = pooling_mode(&pooling_config).map_err(refuse)?;
        let max_position = config.max_position_embeddings;
        let max_seq_length = match path.join("sentence_bert_config.json") {
            p if p.is_file() => read_json::<SentenceBertConfig>(&p)?.max_seq_length,
            _ => None,
        }
        .unwrap_or(max_position);
        if max_seq_length == 0 || max_seq_length > max_position {
            return Err(refuse(format!(
                "has max_seq_length {max_seq_length}, outside 1..={max_position} (the model's \
                 max_position_embeddings)"
            )));
        }
        Ok(Folder {
            path: path.to_path_buf(),
            config,
            pooling,
            normalize,
            max_seq_length,
        })
    }

    /// The length of an embedding.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }
}

fn pooling_mode(c: &PoolingConfig) -> Result<Pooling, String> {
    let unsupported = [
        (c.pooling_mode_mean_sqrt_len_tokens, "mean_sqrt_len_tokens"),
        (c.pooling_mode_weightedmean_tokens, "weightedmean_tokens"),
        (c.pooling_mode_lasttoken, "lasttoken"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(format!(
            "pools with pooling_mode_{name}: this flow pools by mean, CLS or max"
        ));
    }
    match (
        c.pooling_mode_mean_tokens,
        c.pooling_mode_cls_token,
        c.pooling_mode_max_tokens,
    ) {
        (true, false, false) => Ok(Pooling::Mean),
        (false, true, false) => Ok(Pooling::Cls),
        (false, false, true) => Ok(Pooling::Max),
        (false, false, false) => Err("turns on no pooling mode in its Pooling config".into()),
        _ => Err(
            "turns on several pooling modes (concatenated): this flow pools by exactly one".into(),
        ),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Permanent(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Permanent(format!("{} is not what it should be: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_supported_pooling_mode_is_read_and_others_are_refused() {
        let mode = |json: &str| pooling_mode(&serde_json::from_str(json).expect("json"));
        assert_eq!(
            mode(r#"{"pooling_mode_mean_tokens": true}"#),
            Ok(Pooling::Mean)
        );
        assert_eq!(
            mode(r#"{"pooling_mode_cls_token": true}"#),
            Ok(Pooling::Cls)
        );
        assert_eq!(
            mode(r#"{"pooling_mode_max_tokens": true}"#),
            Ok(Pooling::Max)
        );
        let refused = |json: &str, says: &str| {
            let e = mode(json).expect_err(json);
            assert!(e.contains(says), "{e}");
        };
        refused(r#"{"pooling_mode_lasttoken": true}"#, "lasttoken");
        refused(
            r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#,
            "several",
        );
        refused("{}", "no pooling mode");
    }
}
