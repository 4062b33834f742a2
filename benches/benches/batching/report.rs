//! The printed tables: the median of each column over the runs, the speed-up over the
//! first batch size and the verdicts against the target; the load average.

use crate::sample::{Sample, ms};
use crate::settings::Settings;

/// Batched throughput must be at least this many times batch 1's.
pub(crate) const TARGET_RATIO: f64 = 3.0;

pub(crate) fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The median of each column over the runs of one batch size.
pub(crate) fn median(runs: &[Sample]) -> Sample {
    Sample {
        per_sec: median_f64(runs.iter().map(|r| r.per_sec).collect()),
        p50_us: median_u64(runs.iter().map(|r| r.p50_us).collect()),
        p99_us: median_u64(runs.iter().map(|r| r.p99_us).collect()),
        mean_batch: median_f64(runs.iter().map(|r| r.mean_batch).collect()),
    }
}

/// What one table shows besides the common columns.
pub(crate) enum Extra<'a> {
    /// Part A: attention's tokens with padding over tokens without, per batch size.
    Padding(&'a [f64]),
    /// Part B: callers and texts per forward pass.
    Worker,
}

/// Prints the table of one part and the verdicts; true when every batched size meets
/// the target.
pub(crate) fn report(s: &Settings, part: &str, runs: &[Vec<Sample>], extra: Extra<'_>) -> bool {
    let rows: Vec<Sample> = runs.iter().map(|r| median(r)).collect();
    let base = rows[0].per_sec.max(1e-9);
    let base_size = s.sizes[0];
    println!();
    println!("{part}");
    println!();
    match extra {
        Extra::Worker => {
            println!(
                "| batch | callers | embeddings/s | p50 ms | p99 ms | vs batch {base_size} | texts per forward |"
            );
            println!("|---:|---:|---:|---:|---:|---:|---:|");
        }
        Extra::Padding(_) => {
            println!(
                "| batch | embeddings/s | p50 ms | p99 ms | vs batch {base_size} | attention's tokens, padded / real |"
            );
            println!("|---:|---:|---:|---:|---:|---:|");
        }
    }
    for (i, (r, &b)) in rows.iter().zip(&s.sizes).enumerate() {
        let common = format!(
            "{:.1} | {:.1} | {:.1} | {:.2}×",
            r.per_sec,
            ms(r.p50_us),
            ms(r.p99_us),
            r.per_sec / base
        );
        match extra {
            Extra::Worker => println!(
                "| {b} | {} | {common} | {:.1} |",
                b * s.callers_per_slot,
                r.mean_batch
            ),
            Extra::Padding(p) => println!(
                "| {b} | {common} | {:.2} |",
                p.get(i).copied().unwrap_or(f64::NAN)
            ),
        }
    }
    println!();
    let mut all_met = true;
    for (r, &b) in rows.iter().zip(&s.sizes).skip(1) {
        let ratio = r.per_sec / base;
        let met = ratio >= TARGET_RATIO;
        all_met &= met;
        println!(
            "batch {b}: {ratio:.2}× batch {base_size}'s throughput (target ≥ {TARGET_RATIO}×): {}",
            if met { "met" } else { "NOT met" }
        );
    }
    all_met
}

/// The 1, 5 and 15 minute load averages, where the system tells them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The side-by-side table: candle's and torch's medians per batch size, and their ratio.
pub(crate) fn report_versus(
    s: &Settings,
    part: &str,
    candle: &[Vec<Sample>],
    torch: &[Vec<Sample>],
) {
    println!();
    println!("{part}");
    println!();
    println!(
        "| batch | candle embeddings/s | torch embeddings/s | candle / torch | candle p50 ms | torch p50 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for ((c, t), b) in candle.iter().zip(torch).zip(&s.sizes) {
        let (c, t) = (median(c), median(t));
        println!(
            "| {b} | {:.1} | {:.1} | {:.2}× | {:.1} | {:.1} |",
            c.per_sec,
            t.per_sec,
            c.per_sec / t.per_sec.max(1e-9),
            ms(c.p50_us),
            ms(t.p50_us)
        );
    }
}
