//! The bench's settings (`MEDIAN_OF`, `BATCHING_*`) and where the model is read from.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fstore_benches::env;

/// The model's folder inside the model dir (as `text.minilm` reads it).
pub(crate) const MODEL_FOLDER: &str = "all-minilm-l6-v2";

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) median_of: usize,
    pub(crate) flow_secs: f64,
    pub(crate) e2e_secs: f64,
    pub(crate) warmup_secs: f64,
    pub(crate) callers_per_slot: usize,
    pub(crate) max_wait: Duration,
    pub(crate) sizes: Vec<usize>,
    pub(crate) flow_part: bool,
    pub(crate) worker_part: bool,
    pub(crate) uniform: bool,
    /// A python with sentence-transformers, to measure torch beside candle.
    pub(crate) torch: Option<PathBuf>,
    /// Threads candle's matmuls run on (`RAYON_NUM_THREADS`, default every CPU), and
    /// torch's too.
    pub(crate) threads: usize,
}

impl Settings {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let sizes = env("BATCHING_SIZES", "1,8,32".to_string())?
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("BATCHING_SIZES must be comma-separated batch sizes")?;
        ensure!(
            !sizes.is_empty() && sizes.iter().all(|&b| (1..=1024).contains(&b)),
            "BATCHING_SIZES: every size must be 1 to 1024"
        );
        let parts = env("BATCHING_PARTS", "flow,worker".to_string())?;
        let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
        ensure!(
            parts.iter().all(|p| matches!(*p, "flow" | "worker")),
            "BATCHING_PARTS: a comma-separated subset of flow,worker"
        );
        let s = Settings {
            median_of: env("MEDIAN_OF", 1usize)?,
            flow_secs: env("BATCHING_SECS", 5.0)?,
            e2e_secs: env("BATCHING_E2E_SECS", 5.0)?,
            warmup_secs: env("BATCHING_WARMUP_SECS", 1.0)?,
            callers_per_slot: env("BATCHING_CALLERS", 1usize)?,
            max_wait: Duration::from_millis(env("BATCHING_MAX_WAIT_MS", 5u64)?),
            sizes,
            flow_part: parts.contains(&"flow"),
            worker_part: parts.contains(&"worker"),
            uniform: env("BATCHING_UNIFORM", 0u8)? != 0,
            torch: std::env::var_os("BATCHING_TORCH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            threads: match std::env::var("RAYON_NUM_THREADS") {
                Ok(n) => n
                    .parse::<usize>()
                    .context("RAYON_NUM_THREADS must be a number of threads")?,
                Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        ensure!(s.median_of >= 1, "MEDIAN_OF must be at least 1");
        ensure!(
            s.callers_per_slot >= 1,
            "BATCHING_CALLERS must be at least 1"
        );
        ensure!(
            s.flow_secs > 0.0 && s.e2e_secs > 0.0 && s.warmup_secs >= 0.0,
            "BATCHING_SECS and BATCHING_E2E_SECS must be positive, BATCHING_WARMUP_SECS not negative"
        );
        Ok(s)
    }
}

/// `$FSTORE_MODEL_DIR`, else `.data/models` at the workspace root; fails unless the
/// model files are there.
pub(crate) fn model_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("FSTORE_MODEL_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".data")
            .join("models"),
    };
    let folder = dir.join(MODEL_FOLDER);
    for file in ["model.safetensors", "tokenizer.json"] {
        if !folder.join(file).is_file() {
            bail!(
                "{} is missing: run scripts/fetch-model to fetch all-MiniLM-L6-v2 \
                 (or point FSTORE_MODEL_DIR at a folder holding {MODEL_FOLDER}/)",
                folder.join(file).display()
            );
        }
    }
    Ok(dir)
}
