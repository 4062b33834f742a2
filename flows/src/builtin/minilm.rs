//! `text.minilm`: 384-d sentence embeddings with all-MiniLM-L6-v2, one instance of the
//! configurable [`SentenceTransformer`] flow (mean pooling, L2-normalised, 256 tokens).
//!
//! The model is read from `<model dir>/all-minilm-l6-v2/`, where the model dir is
//! `FSTORE_MODEL_DIR` or `.data/models`. `scripts/fetch-model` puts the folder there;
//! nothing is downloaded at run time. The model is loaded on the first batch, not at
//! construction, and a missing folder fails the batch with the command that fetches it.

use std::path::{Path, PathBuf};

use crate::sentence::SentenceTransformer;

/// The environment variable naming the folder that holds `all-minilm-l6-v2/`.
pub const MODEL_DIR_ENV: &str = "FSTORE_MODEL_DIR";
/// The model's folder inside the model dir.
pub const MODEL_FOLDER: &str = "all-minilm-l6-v2";
/// The model's name as operators see it.
pub const MODEL_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The longest input in tokens, [CLS] and [SEP] included (the model's `max_seq_length`).
pub const MAX_LENGTH: usize = 256;

/// `text.minilm@1` reading the model from `model_dir/all-minilm-l6-v2/`. Loads nothing yet.
pub fn minilm(model_dir: PathBuf) -> SentenceTransformer {
    let folder = model_dir.join(MODEL_FOLDER);
    let missing = format!(
        "the all-MiniLM-L6-v2 model files (model.safetensors, tokenizer.json) are not in {}: \
         run scripts/fetch-model to fetch them (it puts them in \
         ${MODEL_DIR_ENV}/{MODEL_FOLDER}, default .data/models/{MODEL_FOLDER})",
        folder.display()
    );
    SentenceTransformer::build(
        "text.minilm",
        1,
        folder,
        MAX_LENGTH,
        "sentence embedding of a text with all-MiniLM-L6-v2: tensor [384], L2-normalised",
        MODEL_NAME.to_string(),
        Some(missing),
    )
}

/// `text.minilm@1` reading the model from `$FSTORE_MODEL_DIR/all-minilm-l6-v2/`, or
/// without that variable from `.data/models/all-minilm-l6-v2/` in the current directory
/// or the nearest parent that has one (so it is found from anywhere in the repository).
pub fn minilm_from_env() -> SentenceTransformer {
    minilm(model_dir_from_env())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::item;
    use crate::{Error, Flow, Params, Value, ValueType};

    fn params(max_length: &str) -> Params {
        [("max_length".to_string(), max_length.to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn spec_and_params() {
        let flow = minilm(PathBuf::from("/nowhere"));
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
        let flow = minilm(dir.clone());
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
        let flow = minilm_from_env();
        assert!(flow.model_folder().ends_with(MODEL_FOLDER));
        assert!(!flow.model().expect("model info").loaded);
    }
}
