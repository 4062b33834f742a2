//! The printed report: a table per profile and a summary of what `sync_interval: always`
//! costs.

use crate::ProfileResult;
use crate::settings::{Profile, Settings};

pub(crate) fn print_profile(s: &Settings, r: &ProfileResult) {
    println!();
    println!(
        "### profile `{}` — {} (server sync_always = {})",
        r.profile.name(),
        r.profile.describe(),
        r.sync_always
    );
    println!();
    println!(
        "| path | p50 µs | p99 µs | misses/s @{} | NATS msgs/miss in / out | sequential misses | misses in window |",
        s.concurrency
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let unlogged = r.unlogged.iter().map(|u| {
        (
            "fstore with a feature log that keeps nothing (the log's baseline)",
            u,
        )
    });
    for (name, p) in [
        (
            "fstore: gRPC SYNC → serve → JetStream → worker → KV + log → caller",
            &r.fstore,
        ),
        (
            "raw async-nats floor: publish → pull → KV put → ready → ack; KV get",
            &r.raw,
        ),
    ]
    .into_iter()
    .chain(unlogged)
    {
        println!(
            "| {name} | {} | {} | {:.0} | {:.1} / {:.1} | {} | {} in {:.2} s |",
            p.seq.p50_us(),
            p.seq.p99_us(),
            p.thr.per_sec(),
            p.msgs.0,
            p.msgs.1,
            p.seq.histogram.len(),
            p.thr.requests,
            p.thr.elapsed.as_secs_f64(),
        );
    }
    println!();
    println!(
        "fstore/raw throughput: {:.2}× ({:.0} vs {:.0} misses/s)",
        r.thr_ratio(),
        r.fstore.thr.per_sec(),
        r.raw.thr.per_sec()
    );
    if let (Some(cost), Some(u)) = (r.log_cost(), &r.unlogged) {
        println!(
            "the feature log costs {:.1}% of the miss path's throughput ({:.0} misses/s without it, {:.0} with it; p50 {} vs {} µs)",
            100.0 * cost,
            u.thr.per_sec(),
            r.fstore.thr.per_sec(),
            u.seq.p50_us(),
            r.fstore.seq.p50_us(),
        );
    }
    println!(
        "fstore/raw p50 latency: {:.2}× ({} vs {} µs)",
        r.p50_ratio(),
        r.fstore.seq.p50_us(),
        r.raw.seq.p50_us()
    );
    println!(
        "payloads: job {} bytes, value {} bytes (fstore's, observed on their subjects; the raw floor is padded to them)",
        r.job_bytes, r.value_bytes
    );
}

pub(crate) fn print_summary(s: &Settings, results: &[ProfileResult]) {
    println!();
    println!("### durability profiles");
    println!();
    println!(
        "| profile | fstore misses/s @{0} | without log @{0} | log cost | raw misses/s @{0} | fstore/raw | fstore p50 µs | raw p50 µs |",
        s.concurrency
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.2}× | {} | {} |",
            match r.profile {
                Profile::Default => "default (flush to the OS)",
                Profile::Durable => "sync_interval = always (fsync before ack)",
            },
            r.fstore.thr.per_sec(),
            r.unlogged
                .as_ref()
                .map_or("-".to_string(), |u| format!("{:.0}", u.thr.per_sec())),
            r.log_cost()
                .map_or("-".to_string(), |c| format!("{:.1}%", 100.0 * c)),
            r.raw.thr.per_sec(),
            r.thr_ratio(),
            r.fstore.seq.p50_us(),
            r.raw.seq.p50_us(),
        );
    }
    let find = |p: Profile| results.iter().find(|r| r.profile == p);
    if let (Some(d), Some(a)) = (find(Profile::Default), find(Profile::Durable)) {
        let cost = |default: f64, durable: f64| 100.0 * (1.0 - durable / default.max(1e-9));
        println!();
        println!(
            "sync_interval = always costs fstore {:.0}% of its default throughput ({:.0} → {:.0} misses/s) and the raw floor {:.0}% ({:.0} → {:.0})",
            cost(d.fstore.thr.per_sec(), a.fstore.thr.per_sec()),
            d.fstore.thr.per_sec(),
            a.fstore.thr.per_sec(),
            cost(d.raw.thr.per_sec(), a.raw.thr.per_sec()),
            d.raw.thr.per_sec(),
            a.raw.thr.per_sec(),
        );
    }
}
