//! The printed report: the tables of calls, results, latencies and RSS, and the list of
//! failed checks.

use hdrhistogram::Histogram;

use crate::Outcome;
use crate::load::Kind;
use crate::settings::Settings;
use fstore_benches::memory::mib;

pub(crate) fn l1_label(l1: Option<u64>) -> String {
    match l1 {
        Some(b) => format!(
            "{:.2} MiB of weighed envelopes (SOAK_L1_MAX_BYTES; `default` keeps the processes' own)",
            b as f64 / (1024.0 * 1024.0)
        ),
        None => "the processes' own nats.l1_max_bytes (64 MiB unless configured)".to_string(),
    }
}

pub(crate) fn quantile_ms(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".to_string()
    } else {
        format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Prints the tables; the list of failed checks.
pub(crate) fn report(
    settings: &Settings,
    o: &Outcome,
    names: &[String],
    checked: usize,
) -> Vec<String> {
    let s = &o.stats;
    let mut failed = Vec::new();
    println!();
    println!(
        "soak: {:.0} s of load, {} clients, 2 replicas + 2 workers on one nats-server; L1: {}",
        o.load_secs,
        settings.clients,
        l1_label(settings.l1_max_bytes)
    );
    println!();
    println!("| calls | count |");
    println!("|---|---:|");
    for k in Kind::ALL {
        println!(
            "| sent: {} | {} |",
            k.name(),
            s.sent.get(&k).copied().unwrap_or(0)
        );
    }
    println!("| **sent** | **{}** |", s.sent_total());
    println!(
        "| final (READY/FAILED, or Invalidate answered) | {} |",
        s.done
    );
    println!(
        "| of those: answered PENDING, ticket polled | {} ({} polls) |",
        s.followed, s.polls
    );
    let refused = s
        .refused
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "| refused (gRPC error) | {}{} |",
        s.refused_total(),
        if refused.is_empty() {
            String::new()
        } else {
            format!(" ({refused})")
        }
    );
    println!("| **lost** | **{}** |", s.lost);
    println!();
    println!("| results | count |");
    println!("|---|---:|");
    println!("| READY (value checked) | {} |", s.ready);
    println!("| of those from the cache | {} |", s.from_cache);
    println!(
        "| FAILED, expected (refused entity) | {} |",
        s.failed_expected
    );
    println!("| FAILED, unexpected | {} |", s.failed_unexpected);
    println!("| wrong (value, status or result set) | {} |", s.wrong);
    println!();
    println!("| latency | n | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in [
        ("first answer, every call", &s.call_us),
        ("first answer, hits", &s.hit_us),
        ("send → final, calls that went pending", &s.final_us),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            h.len(),
            quantile_ms(h, 0.5),
            quantile_ms(h, 0.99),
            if h.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", h.max() as f64 / 1000.0)
            }
        );
    }
    println!();
    println!(
        "| RSS MiB | after warm-up ({:.0} s) | peak | end ({:.0} s) | end / warm-up | check (≤ {:.2}×) |",
        settings.warmup_secs,
        o.load_secs,
        1.0 + settings.rss_tolerance
    );
    println!("|---|---:|---:|---:|---:|---|");
    for (i, name) in names.iter().enumerate() {
        let warm = o.rss.warmup.as_ref().and_then(|v| v[i]);
        let end = o.rss.end.as_ref().and_then(|v| v[i]);
        let peak = o.rss.samples.iter().filter_map(|(_, v)| v[i]).max();
        let (ratio, verdict) = match (warm, end) {
            (Some(w), Some(e)) => {
                let r = e as f64 / w as f64;
                (
                    format!("{r:.3}"),
                    if r <= 1.0 + settings.rss_tolerance {
                        "PASS"
                    } else {
                        "FAIL"
                    },
                )
            }
            _ => ("-".to_string(), "FAIL (process gone or never read)"),
        };
        let verdict = if i < checked { verdict } else { "-" };
        if i < checked && verdict != "PASS" {
            failed.push(format!("RSS of {name}: {verdict}"));
        }
        println!(
            "| {name} | {} | {} | {} | {ratio} | {verdict} |",
            mib(warm),
            mib(peak),
            mib(end)
        );
    }
    println!();
    println!("RSS over the run (MiB, {}):", names.join(" / "));
    let n = o.rss.samples.len();
    let step = n.div_ceil(12).max(1);
    for (i, (at, v)) in o.rss.samples.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            println!(
                "  {at:>6.0} s  {}",
                v.iter().map(|r| mib(*r)).collect::<Vec<_>>().join(" / ")
            );
        }
    }
    for (label, ex) in [
        ("lost", &s.lost_examples),
        ("wrong", &s.wrong_examples),
        ("refused", &s.refused_examples),
    ] {
        for e in &ex.0 {
            println!("{label}: {e}");
        }
    }
    if s.lost > 0 {
        failed.push(format!("{} calls lost", s.lost));
    }
    if s.failed_unexpected + s.wrong > 0 {
        failed.push(format!(
            "{} unexpected FAILED and {} wrong results",
            s.failed_unexpected, s.wrong
        ));
    }
    if s.sent_total() != s.done + s.refused_total() + s.lost {
        failed.push(format!(
            "calls unaccounted for: {} sent, {} final + {} refused + {} lost",
            s.sent_total(),
            s.done,
            s.refused_total(),
            s.lost
        ));
    }
    failed
}
