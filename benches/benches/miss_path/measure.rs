//! Measuring one path: warm-up, sequential latency, throughput with callers in flight, and
//! the NATS messages per call read from the server's /varz; fresh ids for every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fstore_benches::{Call, Failures, Latency, Throughput, throughput};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::settings::Settings;

/// Calls one after another, unmeasured.
pub(crate) async fn warm_up<C: Call>(caller: &mut C, n: usize) -> Failures {
    let mut failures = Failures::default();
    for _ in 0..n {
        if let Err(e) = caller.call().await {
            failures.add(format!("warm-up: {e}"));
        }
    }
    failures
}

/// Up to `n` calls one after another, stopping early after `cap`.
pub(crate) async fn sequential_capped<C: Call>(caller: &mut C, n: usize, cap: Duration) -> Latency {
    // 1 µs .. 60 s at 3 significant digits.
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut failures = Failures::default();
    let stop = Instant::now() + cap;
    for _ in 0..n {
        if Instant::now() >= stop {
            break;
        }
        let start = Instant::now();
        let r = caller.call().await;
        let us = start.elapsed().as_micros().max(1) as u64;
        match r {
            Ok(()) => histogram.saturating_record(us),
            Err(e) => failures.add(e),
        }
    }
    Latency {
        histogram,
        failures,
    }
}

/// The server's client-message counters, read from its monitoring endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MsgCount {
    pub(crate) msgs_in: u64,
    pub(crate) msgs_out: u64,
}

pub(crate) async fn varz(port: u16) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to the nats-server monitor on port {port}"))?;
    s.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text)
}

/// The scalar after the first `"field":` in a JSON text.
pub(crate) fn json_scalar<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let at = text.find(&format!("\"{field}\":"))? + field.len() + 3;
    let rest = text[at..].trim_start();
    let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

pub(crate) async fn msg_count(port: u16) -> anyhow::Result<MsgCount> {
    let text = varz(port).await?;
    let field = |f: &str| {
        json_scalar(&text, f)
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("/varz has no {f}"))
    };
    Ok(MsgCount {
        msgs_in: field("in_msgs")?,
        msgs_out: field("out_msgs")?,
    })
}

/// NATS messages per call between two snapshots (in from clients, out to clients).
pub(crate) fn per_call(before: MsgCount, after: MsgCount, calls: u64) -> (f64, f64) {
    let calls = calls.max(1) as f64;
    (
        after.msgs_in.saturating_sub(before.msgs_in) as f64 / calls,
        after.msgs_out.saturating_sub(before.msgs_out) as f64 / calls,
    )
}

/// What one path measured on one server.
#[derive(Debug)]
pub(crate) struct PathResult {
    pub(crate) warmup: Failures,
    pub(crate) seq: Latency,
    /// NATS messages per sequential call: (client → server, server → client).
    pub(crate) msgs: (f64, f64),
    pub(crate) thr: Throughput,
}

impl PathResult {
    pub(crate) fn failures(&self) -> Vec<(&'static str, &Failures)> {
        [
            ("warm-up", &self.warmup),
            ("sequential", &self.seq.failures),
            ("throughput", &self.thr.failures),
        ]
        .into_iter()
        .filter(|(_, f)| f.count > 0)
        .collect()
    }
}

pub(crate) async fn measure<C: Call>(
    s: &Settings,
    monitor: u16,
    callers: &[C],
) -> anyhow::Result<PathResult> {
    let mut one = callers[0].clone();
    let mut warmup = warm_up(&mut one, s.warmup).await;
    let before = msg_count(monitor).await?;
    let seq = sequential_capped(&mut one, s.seq, Duration::from_secs_f64(s.seq_secs)).await;
    let after = msg_count(monitor).await?;
    let msgs = per_call(before, after, seq.histogram.len() + seq.failures.count);
    if s.warmup_secs > 0.0 {
        let warm = throughput(
            callers,
            s.concurrency,
            Duration::from_secs_f64(s.warmup_secs),
            s.max_requests,
        )
        .await;
        warmup.count += warm.failures.count;
        if let Some(e) = warm.failures.first {
            warmup
                .first
                .get_or_insert(format!("throughput warm-up: {e}"));
        }
    }
    let thr = throughput(
        callers,
        s.concurrency,
        Duration::from_secs_f64(s.secs),
        s.max_requests,
    )
    .await;
    Ok(PathResult {
        warmup,
        seq,
        msgs,
        thr,
    })
}

/// Entity ids and keys nobody used before: a per-run prefix and a shared counter.
#[derive(Debug, Clone)]
pub(crate) struct Fresh {
    pub(crate) prefix: Arc<str>,
    pub(crate) next: Arc<AtomicU64>,
}

impl Fresh {
    pub(crate) fn new(what: &str) -> Self {
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        Fresh {
            prefix: format!("{what}-{nonce:x}-").into(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn next(&self) -> String {
        format!(
            "{}{:08}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}
