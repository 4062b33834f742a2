//! The miss path: a SYNC GetFeatures for an entity nobody asked for before, one trivial
//! feature (`test.probe@1`), end to end through serve → claim → JetStream enqueue →
//! worker pull → compute → KV put → ready notification → SYNC wakes → answer. Side by
//! side, on the same nats-server and in the same process, the floor: the same round trip
//! written directly with async-nats (publish a job with a message id and wait for the
//! ack, a worker pulls it, puts the value into a KV bucket, publishes a core "ready" and
//! acks, the caller wakes on "ready" and reads the value back). Job and value payloads
//! are padded to the sizes fstore's own messages have in the same run.
//!
//! Each durability profile gets its own nats-server:
//! - `default`: JetStream's default, writes reach the OS and are fsynced every 2 min;
//! - `durable`: `jetstream { sync_interval: always }`, fsync before every ack.
//!
//! Printed per profile: p50/p99 of sequential misses, misses/s with C callers in flight,
//! the fstore/raw ratios, what the feature log costs, the NATS messages each miss costs (from the server's /varz),
//! then a summary across profiles with what `sync_interval: always` costs.
//!
//! `NATS_SERVER_BIN=$(scripts/install-nats) cargo bench -p fstore-benches --bench miss_path`.
//! Environment overrides:
//! - `MISS_PATH_PROFILES` (default,durable): the profiles to run, in order
//! - `MISS_PATH_SEQ` (300): sequential misses measured per path, after `MISS_PATH_WARMUP`
//!   (20); `MISS_PATH_SEQ_SECS` (10) bounds the sequential run of one path in time
//! - `MISS_PATH_SECS` (5): seconds of each throughput window, after
//!   `MISS_PATH_WARMUP_SECS` (0.5) unmeasured
//! - `MISS_PATH_CONCURRENCY` (32): callers in flight; `MISS_PATH_CHANNELS` (4): gRPC
//!   connections they share
//! - `MISS_PATH_MAX_REQUESTS` (50000): bound on the calls of one throughput window
//! - `MISS_PATH_SLOTS` (4): fstore `worker.slots`, and the raw worker's concurrency
//!   unless `MISS_PATH_RAW_SLOTS` says otherwise (fstore settles the jobs of one pull one
//!   after another, so `slots` jobs are settled at a time in both)
//! - `MISS_PATH_BATCH_WAIT_MS` (fstore's default `worker.max_wait`): how long a worker
//!   that pulled fewer than `max_batch` jobs waits for more before it computes
//! - `MISS_PATH_WAIT_MS` (5000): the SYNC wait of each call, and the raw caller's bound
//! - `MISS_PATH_LOG_BASELINE` (1): also measure the store with a feature log that keeps
//!   nothing, to print what writing the log costs (0: skip it)

mod fstore_path;
mod measure;
mod raw_floor;
mod report;
mod settings;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use fstore_benches::Failures;
use fstore_tests::nats::NatsServer;

use crate::fstore_path::{Log, start_fstore};
use crate::measure::{PathResult, json_scalar, measure, varz};
use crate::raw_floor::start_raw;
use crate::report::{print_profile, print_summary};
use crate::settings::{Profile, Settings};

struct ProfileResult {
    profile: Profile,
    sync_always: bool,
    job_bytes: usize,
    value_bytes: usize,
    fstore: PathResult,
    /// The same store with a feature log that keeps nothing (None: not measured).
    unlogged: Option<PathResult>,
    raw: PathResult,
    raw_worker: Failures,
}

impl ProfileResult {
    fn thr_ratio(&self) -> f64 {
        self.fstore.thr.per_sec() / self.raw.thr.per_sec().max(1e-9)
    }

    /// What writing the feature log costs in throughput, as a fraction of the unlogged
    /// store's.
    fn log_cost(&self) -> Option<f64> {
        let u = self.unlogged.as_ref()?.thr.per_sec();
        Some(1.0 - self.fstore.thr.per_sec() / u.max(1e-9))
    }

    fn p50_ratio(&self) -> f64 {
        self.fstore.seq.p50_us() as f64 / self.raw.seq.p50_us().max(1) as f64
    }
}

/// A config file with `jetstream { sync_interval: always }`, removed on drop.
struct DurableConfig(std::path::PathBuf);

impl DurableConfig {
    fn write() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "fstore-miss-path-{}-{}.conf",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::write(&path, "jetstream {\n  sync_interval: always\n}\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(DurableConfig(path))
    }
}

impl Drop for DurableConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn run_profile(s: &Settings, profile: Profile) -> anyhow::Result<ProfileResult> {
    let monitor = fstore_tests::process::free_port()?;
    let mut args = vec!["-m".to_string(), monitor.to_string()];
    let config_file = match profile {
        Profile::Default => None,
        Profile::Durable => Some(DurableConfig::write()?),
    };
    if let Some(c) = &config_file {
        args.push("-c".into());
        args.push(c.0.display().to_string());
    }
    let server = NatsServer::start_with(args)?;
    // The server has read its configuration; the file is not needed any more.
    drop(config_file);
    let sync_always = json_scalar(&varz(monitor).await?, "sync_always") == Some("true");
    ensure!(
        sync_always == (profile == Profile::Durable),
        "profile {}: the server reports sync_always = {sync_always}",
        profile.name()
    );
    let url = server.url();

    // fstore first (logging, then not when asked), then the floor with fstore gone:
    // none sees another's traffic.
    let (fstore, job_bytes, value_bytes) = measure_fstore(s, monitor, &url, Log::On).await?;
    let unlogged = if s.log_baseline {
        Some(measure_fstore(s, monitor, &url, Log::Off).await?.0)
    } else {
        None
    };
    let raw_side = start_raw(s, &url, job_bytes, value_bytes).await?;
    let raw = measure(s, monitor, &raw_side.callers).await?;
    raw_side.worker.abort();
    let _ = raw_side.worker.await;
    let raw_worker = std::mem::take(
        &mut *raw_side
            .worker_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    drop(raw_side.callers);
    drop(server);

    Ok(ProfileResult {
        profile,
        sync_always,
        job_bytes,
        value_bytes,
        fstore,
        unlogged,
        raw,
        raw_worker,
    })
}

/// Starts a store on `url`, measures it, and stops it: the path's figures and the job
/// and value sizes it sent.
async fn measure_fstore(
    s: &Settings,
    monitor: u16,
    url: &str,
    log: Log,
) -> anyhow::Result<(PathResult, usize, usize)> {
    let side = start_fstore(s, url, log).await?;
    let result = measure(s, monitor, &side.callers).await?;
    let running = side.running;
    drop(side.callers);
    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .context("stopping fstore took over 10 s")?;
    Ok((result, side.job_bytes, side.value_bytes))
}

fn run() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    let mut results = Vec::new();
    for &profile in &s.profiles {
        // A runtime per profile: whatever a profile leaves behind (fstore's reconnecting
        // client once its server is gone) ends with it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        eprintln!("miss_path: profile {} ...", profile.name());
        let r = rt
            .block_on(run_profile(&s, profile))
            .with_context(|| format!("profile {}", profile.name()))?;
        rt.shutdown_timeout(Duration::from_secs(5));
        results.push(r);
    }

    println!();
    println!(
        "miss path: SYNC GetFeatures of 1 new entity × 1 trivial feature (test.probe@1), against a raw async-nats round trip on the same server; \
         {} sequential warm-up calls, then up to {} (≤ {:.0} s); {} callers in flight for {:.1} s (after {:.1} s warm-up) over {} gRPC connections; \
         fstore worker.slots = {} and max_wait = {:?}, raw worker concurrency = {}; {} CPUs",
        s.warmup,
        s.seq,
        s.seq_secs,
        s.concurrency,
        s.secs,
        s.warmup_secs,
        s.channels,
        s.slots,
        s.batch_wait,
        s.raw_slots,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for r in &results {
        print_profile(&s, r);
    }
    print_summary(&s, &results);

    let mut failed = false;
    for r in &results {
        let unlogged = r.unlogged.iter().map(|u| ("fstore without log", u));
        for (path, p) in [("fstore", &r.fstore), ("raw", &r.raw)]
            .into_iter()
            .chain(unlogged)
        {
            for (what, f) in p.failures() {
                failed = true;
                eprintln!(
                    "FAILURES {} {path} {what}: {}; first: {}",
                    r.profile.name(),
                    f.count,
                    f.first.as_deref().unwrap_or("?")
                );
            }
        }
        if r.raw_worker.count > 0 {
            failed = true;
            eprintln!(
                "FAILURES {} raw worker: {}; first: {}",
                r.profile.name(),
                r.raw_worker.count,
                r.raw_worker.first.as_deref().unwrap_or("?")
            );
        }
    }
    if failed {
        bail!(
            "some misses failed or were not computed for the call; the numbers above do not measure the miss path"
        );
    }
    println!();
    println!(
        "every measured fstore call answered READY, computed for that call; every raw round trip read its value back"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    run()
}
