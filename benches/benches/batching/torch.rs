//! The side-by-side run (`BATCHING_TORCH`): sentence-transformers on torch, in a Python
//! process of its own (`benches/torch/side.py`), measured on the same texts, batch sizes
//! and window as candle, each size right after candle's, so both see the same machine.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::sample::Sample;

pub(crate) struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The torch and sentence-transformers versions it runs.
    pub(crate) versions: String,
}

impl Torch {
    /// Starts `python` on the side script with the model folder and the texts, on
    /// `threads` torch threads.
    pub(crate) fn start(
        python: &Path,
        folder: &Path,
        texts: &[&str],
        threads: usize,
    ) -> anyhow::Result<Torch> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("torch/side.py");
        let mut child = Command::new(python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (BATCHING_TORCH: a python with sentence-transformers; \
                     `benches/versus-torch.sh --install` makes one)",
                    python.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the torch side's pipes were not opened");
        };
        let mut torch = Torch {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            versions: String::new(),
        };
        let hello = torch.ask(&json!({
            "model": folder, "threads": threads, "sentences": texts,
        }))?;
        torch.versions = format!(
            "torch {}, sentence-transformers {}",
            hello["torch"].as_str().unwrap_or("?"),
            hello["sentence_transformers"].as_str().unwrap_or("?")
        );
        Ok(torch)
    }

    fn ask(&mut self, request: &Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{request}").context("writing to the torch side")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the torch side exited (its error is above)");
        }
        serde_json::from_str(&line).with_context(|| format!("the torch side answered {line:?}"))
    }

    /// `encode` on batches of `batch` texts for `secs`.
    pub(crate) fn measure(&mut self, batch: usize, secs: f64) -> anyhow::Result<Sample> {
        let r = self.ask(&json!({"measure": batch, "secs": secs}))?;
        let number = |k: &str| {
            r[k].as_f64()
                .with_context(|| format!("the torch side's answer has no {k}: {r}"))
        };
        Ok(Sample {
            per_sec: number("per_sec")?,
            p50_us: number("p50_us")? as u64,
            p99_us: number("p99_us")? as u64,
            mean_batch: batch as f64,
        })
    }

    /// torch's embedding of every text, in order.
    pub(crate) fn embeddings(&mut self) -> anyhow::Result<Vec<Vec<f32>>> {
        let r = self.ask(&json!({"embed": true}))?;
        serde_json::from_value(r["embeddings"].clone()).context("the torch side's embeddings")
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
