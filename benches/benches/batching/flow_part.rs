//! Part A, the flow alone: `SentenceTransformer::run` on batches of each size, one call after
//! another.

use std::time::{Duration, Instant};

use anyhow::ensure;
use fstore_flows::sentence::SentenceTransformer;
use fstore_flows::{Flow, FlowInput, Params, Value};

use crate::sample::{Sample, check_output, histogram, ms};
use crate::settings::Settings;
use crate::torch::Torch;

pub(crate) fn flow_input(text: &str) -> FlowInput {
    FlowInput {
        entity_id: "bench".to_string(),
        params: Params::default(),
        values: [("text".to_string(), Value::String(text.to_string()))]
            .into_iter()
            .collect(),
        attempt: 1,
    }
}

/// Runs `flow` on batches of `batch` texts, one call after another, for `secs` (at least
/// 3 calls); every output must be a `[384]` tensor.
pub(crate) fn measure_flow(
    flow: &SentenceTransformer,
    items: &[FlowInput],
    n: usize,
    batch: usize,
    secs: f64,
) -> anyhow::Result<Sample> {
    let mut start_at = 0;
    let call = |start_at: &mut usize| -> anyhow::Result<u64> {
        let chunk = &items[*start_at..*start_at + batch];
        *start_at = (*start_at + batch) % n;
        let t = Instant::now();
        let out = flow.run(chunk);
        let us = t.elapsed().as_micros().max(1) as u64;
        ensure!(
            out.len() == batch,
            "the flow answered {} outputs for {batch} inputs",
            out.len()
        );
        for (i, o) in out.iter().enumerate() {
            check_output(o).map_err(|e| {
                anyhow::anyhow!("batch {batch}: the output for {:?} is {e}", chunk[i].values)
            })?;
        }
        Ok(us)
    };
    // Unmeasured: the first call of a shape may allocate.
    call(&mut start_at)?;
    let mut hist = histogram();
    let window = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < window || calls < 3 {
        hist.saturating_record(call(&mut start_at)?);
        calls += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Sample {
        per_sec: (calls * batch as u64) as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        mean_batch: batch as f64,
    })
}

/// Candle's samples per batch size, and torch's when it runs beside (each size measured
/// right after candle's).
pub(crate) struct FlowRuns {
    pub(crate) candle: Vec<Vec<Sample>>,
    pub(crate) torch: Vec<Vec<Sample>>,
}

pub(crate) fn run_flow_part(
    s: &Settings,
    flow: &SentenceTransformer,
    texts: &[&str],
    mut torch: Option<&mut Torch>,
) -> anyhow::Result<FlowRuns> {
    // The texts, then the largest batch's worth again, so every batch is a contiguous
    // slice.
    let largest = s.sizes.iter().copied().max().unwrap_or(1);
    let items: Vec<FlowInput> = texts
        .iter()
        .cycle()
        .take(texts.len() + largest)
        .map(|t| flow_input(t))
        .collect();
    let mut samples = vec![Vec::new(); s.sizes.len()];
    let mut torch_samples = vec![Vec::new(); s.sizes.len()];
    for round in 0..s.median_of {
        for (i, &b) in s.sizes.iter().enumerate() {
            let sample = measure_flow(flow, &items, texts.len(), b, s.flow_secs)?;
            eprintln!(
                "flow  run {}/{} batch {b:>3}: {:.1} embeddings/s, p50 {:.1} ms",
                round + 1,
                s.median_of,
                sample.per_sec,
                ms(sample.p50_us)
            );
            samples[i].push(sample);
            if let Some(torch) = torch.as_deref_mut() {
                let sample = torch.measure(b, s.flow_secs)?;
                eprintln!(
                    "torch run {}/{} batch {b:>3}: {:.1} embeddings/s, p50 {:.1} ms",
                    round + 1,
                    s.median_of,
                    sample.per_sec,
                    ms(sample.p50_us)
                );
                torch_samples[i].push(sample);
            }
        }
    }
    Ok(FlowRuns {
        candle: samples,
        torch: torch_samples,
    })
}
