//! The chaos run's printed report: calls by kind, faults by kind, the invariants' figures,
//! RSS at the end, and — on failure — the seed, the fault log and where the logs are.

use std::path::Path;

use fstore_benches::memory::mib;

use crate::check::Verdict;
use crate::faults::{Fault, Kind as FaultKind};
use crate::load::Kind;
use crate::stats::Stats;
use crate::topology::TENANTS;

pub(crate) fn calls(s: &Stats) {
    println!();
    println!("| calls | sent | final |");
    println!("|---|---:|---:|");
    for k in Kind::ALL {
        println!(
            "| {} | {} | {} |",
            k.name(),
            s.sent.get(&k).copied().unwrap_or(0),
            s.done.get(&k).copied().unwrap_or(0)
        );
    }
    println!(
        "| **all** | **{}** | **{}** |",
        s.sent.values().sum::<u64>(),
        s.done.values().sum::<u64>()
    );
    let retried = s
        .retried
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!();
    println!("| outcome | count |");
    println!("|---|---:|");
    println!("| READY results, equal to the reference | {} |", s.ready);
    println!(
        "| FAILED results, expected (poison) | {} |",
        s.failed_expected
    );
    println!(
        "| **FAILED results, unexpected** | **{}** |",
        s.failed_unexpected
    );
    println!(
        "| **wrong results (value, status, result set)** | **{}** |",
        s.wrong
    );
    println!(
        "| **lost (accepted, not final in its bound)** | **{}** |",
        s.lost
    );
    println!(
        "| **never accepted within the bound** | **{}** |",
        s.never_accepted
    );
    println!(
        "| **refused with a non-retryable error** | **{}** |",
        s.refused
    );
    println!(
        "| errors retried on the other replica | {} ({retried}) |",
        s.retried.values().sum::<u64>()
    );
}

pub(crate) fn faults(log: &[Fault]) {
    println!();
    println!("| faults injected | count |");
    println!("|---|---:|");
    for k in FaultKind::ALL {
        println!(
            "| {} | {} |",
            k.name(),
            log.iter().filter(|f| f.kind == k).count()
        );
    }
    println!("| **all** | **{}** |", log.len());
}

pub(crate) fn fault_log(log: &[Fault]) {
    println!("fault log (seconds into the load, Unix ms):");
    for f in log {
        println!(
            "  {:>6.1} – {:>6.1} s  [{} – {}]  {:<28} {:<8} {}",
            f.at_s,
            f.end_s,
            f.at_ms,
            f.end_ms,
            f.kind.name(),
            f.target,
            f.detail
        );
    }
}

pub(crate) fn verdict(v: &Verdict) {
    println!();
    println!("| invariant | figure |");
    println!("|---|---:|");
    println!(
        "| log records checked (after the start of the load) | {} |",
        v.log_values
    );
    println!(
        "| of those READY and equal to the reference | {} |",
        v.log_ready_checked
    );
    println!("| of those FAILED, poison | {} |", v.log_failed_poison);
    println!(
        "| **FAILED in the log, not poison** | **{}** |",
        v.log_failed_unexpected
    );
    println!(
        "| **values differing from the reference** | **{}** |",
        v.log_wrong
    );
    println!(
        "| recomputes after an invalidation or an expiry (allowed) | {} |",
        v.recomputes_allowed
    );
    println!(
        "| duplicate computes explained by a fault on a planner | {} |",
        v.duplicates_explained
    );
    println!(
        "| **duplicate computes, unexplained** | **{}** |",
        v.duplicates_unexplained
    );
    println!(
        "| same compute logged twice (beyond the de-duplication window) | {} |",
        v.log_repeats
    );
    println!("| dead letters, poison | {} |", v.dead_letters);
    println!(
        "| **dead letters, not poison** | **{}** |",
        v.dead_letters_other
    );
    for (t, (got, missing, dup, unknown)) in v.events.iter().enumerate() {
        println!(
            "| events to the {} subscriber: received / missing / duplicated / not in log | {got} / {missing} / {dup} / {unknown} |",
            TENANTS[t]
        );
    }
    for b in &v.backfills {
        println!("backfill {b}");
    }
}

pub(crate) fn rss(names: &[String], end: &[Option<u64>]) {
    println!();
    println!("| RSS at the end | MiB |");
    println!("|---|---:|");
    for (n, r) in names.iter().zip(end) {
        println!("| {n} | {} |", mib(*r));
    }
}

pub(crate) fn failure(seed: u64, secs: f64, log: &[Fault], dir: &Path, problems: &[String]) {
    println!();
    println!(
        "CHAOS FAILED — seed {seed:#x} ({secs} s); replay: CHAOS_SEED={seed} CHAOS_SECS={secs} benches/chaos.sh"
    );
    for p in problems {
        println!("  violation: {p}");
    }
    fault_log(log);
    println!("process logs: {}", dir.display());
}
