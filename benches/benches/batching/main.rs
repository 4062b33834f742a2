//! Dynamic batching of `text.minilm@1` (all-MiniLM-L6-v2 on candle): embeddings per
//! second at batch sizes 1, 8 and 32, and the latency each costs. The target is batched
//! (8 and 32) at least 3× the throughput of batch 1.
//!
//! - Part A, the flow alone: `SentenceTransformer::run` called on batches of 1, 8 or 32 texts, one
//!   call after another. The latency is that of one batched call: what every item of the
//!   batch waits.
//! - Part B, end to end: an in-process feature store (gRPC server, embedded substrate, a
//!   worker with one slot and `max_batch` = 1, 8 or 32) answering SYNC GetFeatures calls
//!   for one entity each, every call a miss, from `max_batch × BATCHING_CALLERS`
//!   concurrent callers. The latency is that of one call.
//!
//! Texts cycle through a fixed list of 64 English sentences of 8 to 40 words, the same in
//! both parts and for every batch size.
//!
//! `cargo bench -p fstore-benches --bench batching` (needs the model: `scripts/fetch-model`;
//! read from `$FSTORE_MODEL_DIR/all-minilm-l6-v2`, default `.data/models` in the
//! workspace). Environment overrides:
//! - `MEDIAN_OF` (1): runs of every measurement; the tables show the median of each column
//! - `BATCHING_SECS` (5): seconds measured per batch size in part A
//! - `BATCHING_E2E_SECS` (5): seconds measured per batch size in part B
//! - `BATCHING_WARMUP_SECS` (1): unmeasured load before each part B window
//! - `BATCHING_CALLERS` (1): concurrent callers per unit of `max_batch` in part B
//! - `BATCHING_MAX_WAIT_MS` (5): the worker's `max_wait`
//! - `BATCHING_SIZES` (1,8,32): the batch sizes; the first is the baseline
//! - `BATCHING_PARTS` (flow,worker): which parts to run
//! - `BATCHING_TORCH` (unset): a python with sentence-transformers (`benches/versus-torch.sh
//!   --install` makes one): part A then measures torch on the same batches, each size right
//!   after candle's, on as many threads (`RAYON_NUM_THREADS`), prints them side by side
//!   and the largest difference between the two embeddings
//! - `BATCHING_UNIFORM` (0): 1 makes every text the sentence nearest the mean length, so
//!   batches carry no padding: what batching gains when padding costs nothing
//!
//! candle runs CPU matmuls on `RAYON_NUM_THREADS` threads (default: every CPU). On a
//! 2-CPU machine shared with other work, `RAYON_NUM_THREADS=1` gives steadier numbers;
//! the header prints the load average before and after.

mod flow_part;
mod report;
mod sample;
mod settings;
mod texts;
mod torch;
mod worker_part;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use fstore_flows::Flow;

use crate::flow_part::{flow_input, run_flow_part};
use crate::report::{Extra, TARGET_RATIO, load_average, report, report_versus};
use crate::sample::check_output;
use crate::settings::{Settings, model_dir};
use crate::texts::{SENTENCES, padding, token_counts};
use crate::torch::Torch;
use crate::worker_part::run_worker_part;

fn main() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    let dir = model_dir()?;
    let flow = Arc::new(fstore_flows::builtin::minilm(dir));
    let t = Instant::now();
    let first = flow.run(&[flow_input(SENTENCES[0])]);
    match first.first() {
        Some(out) => {
            check_output(out).map_err(|e| anyhow::anyhow!("the first embedding is {e}"))?
        }
        None => bail!("the flow answered nothing for one input"),
    }
    eprintln!(
        "model loaded from {} and first text embedded in {:.2} s",
        flow.model_folder().display(),
        t.elapsed().as_secs_f64()
    );

    let all_lens = token_counts(&flow, &SENTENCES)?;
    let texts: Arc<[&'static str]> = if s.uniform {
        let mean = all_lens.iter().sum::<usize>() as f64 / all_lens.len().max(1) as f64;
        let nearest = (0..SENTENCES.len())
            .min_by(|&a, &b| {
                (all_lens[a] as f64 - mean)
                    .abs()
                    .total_cmp(&(all_lens[b] as f64 - mean).abs())
            })
            .unwrap_or(0);
        vec![SENTENCES[nearest]; SENTENCES.len()].into()
    } else {
        SENTENCES.to_vec().into()
    };
    let lens = token_counts(&flow, &texts)?;

    let mut torch = match &s.torch {
        Some(python) if s.flow_part => {
            let torch = Torch::start(python, flow.model_folder(), &texts, s.threads)?;
            eprintln!("torch side started: {}", torch.versions);
            Some(torch)
        }
        _ => None,
    };
    let load_before = load_average();
    let flow_runs = if s.flow_part {
        Some(run_flow_part(&s, &flow, &texts, torch.as_mut())?)
    } else {
        None
    };
    let worker_runs = if s.worker_part {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        Some(runtime.block_on(run_worker_part(&s, &flow, &texts))?)
    } else {
        None
    };

    let load_after = load_average();
    let pad = padding(&lens, &s.sizes);

    println!();
    println!(
        "text.minilm@1 (all-MiniLM-L6-v2, candle, CPU), {} CPUs, load average {load_before} before and {load_after} after; \
         {}; median of {} run(s) per row, each column on its own",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if s.uniform {
            format!(
                "every text the same sentence of {} tokens (BATCHING_UNIFORM=1: no padding)",
                lens.first().copied().unwrap_or(0)
            )
        } else {
            format!(
                "texts cycle through {} sentences of 8 to 40 words ({} to {} tokens, mean {:.1}, [CLS] and [SEP] included)",
                SENTENCES.len(),
                lens.iter().min().copied().unwrap_or(0),
                lens.iter().max().copied().unwrap_or(0),
                lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64,
            )
        },
        s.median_of,
    );
    let mut met = true;
    if let Some(runs) = &flow_runs {
        met &= report(
            &s,
            &format!(
                "A. the flow alone: SentenceTransformer::run on one batch after another for {:.1} s per size; latency = one batched call",
                s.flow_secs
            ),
            &runs.candle,
            Extra::Padding(&pad),
        );
        if let Some(torch) = torch.as_mut() {
            report_versus(
                &s,
                &format!(
                    "C. side by side: sentence-transformers ({}) on {} CPU thread(s), `encode` on the same batches, each size right after candle's",
                    torch.versions, s.threads
                ),
                &runs.candle,
                &runs.torch,
            );
            let worst = max_difference(&flow, &texts, &torch.embeddings()?)?;
            println!();
            println!(
                "largest difference between candle's and torch's embeddings over the {} texts: {worst:.2e}",
                texts.len()
            );
        }
    }
    if let Some(runs) = &worker_runs {
        met &= report(
            &s,
            &format!(
                "B. end to end: SYNC GetFeatures (1 entity, a miss) from {} caller(s) per unit of max_batch, worker with 1 slot, max_wait {} ms, {:.1} s per size after {:.1} s warm-up; latency = one call",
                s.callers_per_slot,
                s.max_wait.as_millis(),
                s.e2e_secs,
                s.warmup_secs
            ),
            runs,
            Extra::Worker,
        );
    }
    println!();
    println!(
        "target batched ≥ {TARGET_RATIO}× batch {}: {}",
        s.sizes[0],
        if met { "met" } else { "NOT met" }
    );
    Ok(())
}

/// The largest difference, over every dimension of every text, between the flow's
/// embeddings (batch 1) and `theirs`.
fn max_difference(
    flow: &fstore_flows::sentence::SentenceTransformer,
    texts: &[&str],
    theirs: &[Vec<f32>],
) -> anyhow::Result<f32> {
    anyhow::ensure!(
        theirs.len() == texts.len(),
        "torch embedded {} of {} texts",
        theirs.len(),
        texts.len()
    );
    let mut worst = 0f32;
    for (text, theirs) in texts.iter().zip(theirs) {
        let ours = match flow.run(&[flow_input(text)]).pop() {
            Some(Ok(fstore_flows::Value::Tensor(t))) => t.to_vec1::<f32>()?,
            other => bail!("the flow did not embed {text:?}: {other:?}"),
        };
        anyhow::ensure!(
            ours.len() == theirs.len(),
            "torch's embedding has {} dimensions",
            theirs.len()
        );
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(worst)
}
