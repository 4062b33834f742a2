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
//! the fstore/raw ratios, the NATS messages each miss costs (from the server's /varz),
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

use fstore_benches::env;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use async_nats::jetstream::{self, consumer::pull, kv, stream};
use bytes::Bytes;
use fstore_benches::{Call, Failures, Latency, Throughput, channels, throughput};
use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use fstore_tests::nats::NatsServer;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

const FEATURE: &str = "bench.miss";
const TENANT: &str = "bench";
/// The raw floor's names: apart from fstore's (`FSTORE_JOBS`, `fstore_*`).
const RAW_STREAM: &str = "RAW_JOBS";
const RAW_JOB_SUBJECT: &str = "raw.jobs.probe.bench";
const RAW_BUCKET: &str = "raw_values";
const RAW_CONSUMER: &str = "raw_worker";
/// Used when fstore's message sizes cannot be observed.
const FALLBACK_JOB_BYTES: usize = 160;
const FALLBACK_VALUE_BYTES: usize = 100;

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Default,
    Durable,
}

impl Profile {
    fn parse(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "default" => Ok(Profile::Default),
            "durable" | "always" => Ok(Profile::Durable),
            other => bail!("MISS_PATH_PROFILES: unknown profile {other:?} (default, durable)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Durable => "durable",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Profile::Default => "JetStream default: written to the OS, fsync every 2 min",
            Profile::Durable => "`jetstream { sync_interval: always }`: fsync before every ack",
        }
    }
}

#[derive(Debug)]
struct Settings {
    profiles: Vec<Profile>,
    seq: usize,
    seq_secs: f64,
    warmup: usize,
    secs: f64,
    warmup_secs: f64,
    concurrency: usize,
    channels: usize,
    max_requests: u64,
    slots: usize,
    raw_slots: usize,
    batch_wait: Duration,
    wait_ms: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let profiles = env("MISS_PATH_PROFILES", "default,durable".to_string())?
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Profile::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(!profiles.is_empty(), "MISS_PATH_PROFILES names no profile");
        let default_batch_wait = fstore::Config::default().worker.max_wait;
        let slots = env("MISS_PATH_SLOTS", 4)?;
        let s = Settings {
            profiles,
            seq: env("MISS_PATH_SEQ", 300)?,
            seq_secs: env("MISS_PATH_SEQ_SECS", 10.0)?,
            warmup: env("MISS_PATH_WARMUP", 20)?,
            secs: env("MISS_PATH_SECS", 5.0)?,
            warmup_secs: env("MISS_PATH_WARMUP_SECS", 0.5)?,
            concurrency: env("MISS_PATH_CONCURRENCY", 32)?,
            channels: env("MISS_PATH_CHANNELS", 4)?,
            max_requests: env("MISS_PATH_MAX_REQUESTS", 50_000)?,
            slots,
            raw_slots: env("MISS_PATH_RAW_SLOTS", slots)?,
            batch_wait: Duration::from_millis(env(
                "MISS_PATH_BATCH_WAIT_MS",
                default_batch_wait.as_millis() as u64,
            )?),
            wait_ms: env("MISS_PATH_WAIT_MS", 5000)?,
        };
        ensure!(
            s.seq > 0 && s.concurrency > 0 && s.slots > 0 && s.raw_slots > 0,
            "MISS_PATH_SEQ, MISS_PATH_CONCURRENCY, MISS_PATH_SLOTS and MISS_PATH_RAW_SLOTS must be above zero"
        );
        ensure!(
            s.secs > 0.0 && s.seq_secs > 0.0 && s.warmup_secs >= 0.0,
            "MISS_PATH_SECS and MISS_PATH_SEQ_SECS must be above zero"
        );
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------

/// Calls one after another, unmeasured.
async fn warm_up<C: Call>(caller: &mut C, n: usize) -> Failures {
    let mut failures = Failures::default();
    for _ in 0..n {
        if let Err(e) = caller.call().await {
            failures.add(format!("warm-up: {e}"));
        }
    }
    failures
}

/// Up to `n` calls one after another, stopping early after `cap`.
async fn sequential_capped<C: Call>(caller: &mut C, n: usize, cap: Duration) -> Latency {
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
struct MsgCount {
    msgs_in: u64,
    msgs_out: u64,
}

async fn varz(port: u16) -> anyhow::Result<String> {
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
fn json_scalar<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let at = text.find(&format!("\"{field}\":"))? + field.len() + 3;
    let rest = text[at..].trim_start();
    let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

async fn msg_count(port: u16) -> anyhow::Result<MsgCount> {
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
fn per_call(before: MsgCount, after: MsgCount, calls: u64) -> (f64, f64) {
    let calls = calls.max(1) as f64;
    (
        after.msgs_in.saturating_sub(before.msgs_in) as f64 / calls,
        after.msgs_out.saturating_sub(before.msgs_out) as f64 / calls,
    )
}

/// What one path measured on one server.
#[derive(Debug)]
struct PathResult {
    warmup: Failures,
    seq: Latency,
    /// NATS messages per sequential call: (client → server, server → client).
    msgs: (f64, f64),
    thr: Throughput,
}

impl PathResult {
    fn failures(&self) -> Vec<(&'static str, &Failures)> {
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

async fn measure<C: Call>(s: &Settings, monitor: u16, callers: &[C]) -> anyhow::Result<PathResult> {
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
struct Fresh {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Fresh {
    fn new(what: &str) -> Self {
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        Fresh {
            prefix: format!("{what}-{nonce:x}-").into(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}{:08}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

// ---------------------------------------------------------------------------------------
// The fstore path
// ---------------------------------------------------------------------------------------

/// One SYNC GetFeatures for a new entity: must answer READY, computed for this call.
#[derive(Debug, Clone)]
struct FstoreMiss {
    client: FeatureStoreClient<Channel>,
    ids: Fresh,
    wait_ms: u64,
}

impl FstoreMiss {
    fn request(&self, entity: String) -> api::GetFeaturesRequest {
        api::GetFeaturesRequest {
            entities: vec![api::EntityRequest {
                entity_id: entity,
                ..Default::default()
            }],
            features: vec![FEATURE.to_string()],
            mode: api::Mode::Sync as i32,
            wait_ms: self.wait_ms,
            ..Default::default()
        }
    }
}

impl Call for FstoreMiss {
    async fn call(&mut self) -> Result<(), String> {
        let request = self.request(self.ids.next());
        let r = self
            .client
            .get_features(request)
            .await
            .map_err(|s| format!("GetFeatures: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        match r.results.as_slice() {
            [one]
                if one.status() == api::Status::Ready && !one.from_cache && r.ticket.is_empty() =>
            {
                Ok(())
            }
            [one] => Err(format!(
                "answered {} (from_cache {}, error {:?}, ticket {:?})",
                one.status().as_str_name(),
                one.from_cache,
                one.error,
                r.ticket
            )),
            many => Err(format!("{} results, expected 1", many.len())),
        }
    }
}

/// The encoded sizes of fstore's job and value messages, seen by subscribing to their
/// subjects during one miss.
async fn observe_sizes(
    observer: &async_nats::Client,
    call: &mut FstoreMiss,
) -> anyhow::Result<(usize, usize)> {
    let mut jobs = observer.subscribe("fstore.jobs.>").await?;
    let mut values = observer.subscribe("$KV.fstore_values.>").await?;
    observer.flush().await?;
    call.call()
        .await
        .map_err(|e| anyhow::anyhow!("the sizing call failed: {e}"))?;
    let job = first_len(&mut jobs).await.unwrap_or(FALLBACK_JOB_BYTES);
    let value = first_len(&mut values).await.unwrap_or(FALLBACK_VALUE_BYTES);
    jobs.unsubscribe().await?;
    values.unsubscribe().await?;
    Ok((job, value))
}

/// The payload length of the next message on `sub`, if one comes within 2 s.
async fn first_len(sub: &mut async_nats::Subscriber) -> Option<usize> {
    tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .ok()
        .flatten()
        .map(|m| m.payload.len())
}

struct FstoreSide {
    running: fstore::server::Running,
    callers: Vec<FstoreMiss>,
    job_bytes: usize,
    value_bytes: usize,
}

async fn start_fstore(s: &Settings, url: &str) -> anyhow::Result<FstoreSide> {
    let mut config = fstore_tests::test_config();
    config.server.default_tenant = Some(TENANT.into());
    config.server.recheck_interval = Duration::from_millis(100);
    config.worker.slots = s.slots;
    config.worker.max_wait = s.batch_wait;
    config.limits.max_wait = config.limits.max_wait.max(Duration::from_millis(s.wait_ms));
    let running = fstore_tests::start_on_nats(config, url).await?;
    let chans = channels(&running.url(), s.channels).await?;
    let mut admin = FeatureStoreClient::new(chans[0].clone());
    admin
        .register_feature(api::RegisterFeatureRequest {
            definition: Some(fstore_tests::build::feature(
                FEATURE,
                "test.probe@1",
                &[("value", "1")],
                &[],
                3_600_000,
            )),
            force: false,
        })
        .await
        .context("registering the bench feature")?;
    let ids = Fresh::new("e");
    let callers: Vec<FstoreMiss> = chans
        .into_iter()
        .map(|ch| FstoreMiss {
            client: FeatureStoreClient::new(ch),
            ids: ids.clone(),
            wait_ms: s.wait_ms,
        })
        .collect();
    let observer = async_nats::connect(url).await?;
    let (job_bytes, value_bytes) = observe_sizes(&observer, &mut callers[0].clone()).await?;
    drop(observer);
    Ok(FstoreSide {
        running,
        callers,
        job_bytes,
        value_bytes,
    })
}

// ---------------------------------------------------------------------------------------
// The raw async-nats floor
// ---------------------------------------------------------------------------------------

/// publish job (acked, with a message id) → worker: KV put, ready, ack → caller wakes on
/// ready → KV get.
#[derive(Clone)]
struct RawMiss {
    client: async_nats::Client,
    js: jetstream::Context,
    values: kv::Store,
    keys: Fresh,
    job_bytes: usize,
    value_bytes: usize,
    wait: Duration,
}

impl RawMiss {
    async fn round_trip(&self) -> anyhow::Result<()> {
        let key = self.keys.next();
        // Subscribed before the job exists, so the ready message cannot be missed.
        let mut ready = self.client.subscribe(format!("raw.ready.{key}")).await?;
        let mut job = Vec::with_capacity(self.job_bytes.max(key.len() + 1));
        job.extend_from_slice(key.as_bytes());
        job.push(b' ');
        job.resize(self.job_bytes.max(job.len()), b'j');
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, key.as_str());
        let ack = self
            .js
            .publish_with_headers(RAW_JOB_SUBJECT, headers, job.into())
            .await?
            .await?;
        ensure!(!ack.duplicate, "job {key} was taken for a duplicate");
        tokio::time::timeout(self.wait, ready.next())
            .await
            .with_context(|| format!("no ready message for {key} in {:?}", self.wait))?
            .context("the ready subscription ended")?;
        let value = self
            .values
            .get(key.as_str())
            .await?
            .with_context(|| format!("ready, but no value under {key}"))?;
        ensure!(
            value.len() == self.value_bytes,
            "value of {} bytes, expected {}",
            value.len(),
            self.value_bytes
        );
        Ok(())
    }
}

impl Call for RawMiss {
    async fn call(&mut self) -> Result<(), String> {
        self.round_trip().await.map_err(|e| format!("raw: {e:#}"))
    }
}

struct RawSide {
    worker: JoinHandle<()>,
    worker_errors: Arc<Mutex<Failures>>,
    callers: Vec<RawMiss>,
}

/// The raw worker's handling of one job: value stored, ready published, then acked
/// (the order fstore's worker settles a job in).
async fn raw_work(
    m: jetstream::Message,
    client: &async_nats::Client,
    values: &kv::Store,
    value: Bytes,
) -> anyhow::Result<()> {
    let key = m
        .payload
        .split(|b| *b == b' ')
        .next()
        .and_then(|k| std::str::from_utf8(k).ok())
        .context("job without a key")?
        .to_string();
    values.put(key.as_str(), value).await?;
    client
        .publish(format!("raw.ready.{key}"), Bytes::new())
        .await?;
    m.double_ack()
        .await
        .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    Ok(())
}

async fn start_raw(
    s: &Settings,
    url: &str,
    job_bytes: usize,
    value_bytes: usize,
) -> anyhow::Result<RawSide> {
    // One connection for callers and worker, as fstore's serve and worker share one.
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client.clone());
    let jobs = js
        .get_or_create_stream(stream::Config {
            name: RAW_STREAM.into(),
            subjects: vec!["raw.jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the raw jobs stream")?;
    let values = js
        .create_key_value(kv::Config {
            bucket: RAW_BUCKET.into(),
            history: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the raw values bucket")?;
    let consumer = jobs
        .get_or_create_consumer(
            RAW_CONSUMER,
            pull::Config {
                durable_name: Some(RAW_CONSUMER.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .context("creating the raw consumer")?;
    let messages = consumer.messages().await?;
    let worker_errors = Arc::new(Mutex::new(Failures::default()));
    let value = Bytes::from(vec![b'v'; value_bytes]);
    let worker = {
        let (client, values, errors) = (client.clone(), values.clone(), worker_errors.clone());
        tokio::spawn(messages.for_each_concurrent(s.raw_slots, move |m| {
            let (client, values, value, errors) = (
                client.clone(),
                values.clone(),
                value.clone(),
                errors.clone(),
            );
            async move {
                let done = match m {
                    Ok(m) => raw_work(m, &client, &values, value).await,
                    Err(e) => Err(anyhow::anyhow!("pull: {e}")),
                };
                if let Err(e) = done {
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(format!("raw worker: {e:#}"));
                }
            }
        }))
    };
    let caller = RawMiss {
        client,
        js,
        values,
        keys: Fresh::new("k"),
        job_bytes,
        value_bytes,
        wait: Duration::from_millis(s.wait_ms),
    };
    Ok(RawSide {
        worker,
        worker_errors,
        callers: vec![caller],
    })
}

// ---------------------------------------------------------------------------------------
// One profile
// ---------------------------------------------------------------------------------------

struct ProfileResult {
    profile: Profile,
    sync_always: bool,
    job_bytes: usize,
    value_bytes: usize,
    fstore: PathResult,
    raw: PathResult,
    raw_worker: Failures,
}

impl ProfileResult {
    fn thr_ratio(&self) -> f64 {
        self.fstore.thr.per_sec() / self.raw.thr.per_sec().max(1e-9)
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

    // fstore first, then the floor with fstore gone: neither sees the other's traffic.
    let side = start_fstore(s, &url).await?;
    let fstore = measure(s, monitor, &side.callers).await?;
    let (job_bytes, value_bytes) = (side.job_bytes, side.value_bytes);
    let running = side.running;
    drop(side.callers);
    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .context("stopping fstore took over 10 s")?;
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
        raw,
        raw_worker,
    })
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn print_profile(s: &Settings, r: &ProfileResult) {
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
    for (name, p) in [
        (
            "fstore: gRPC SYNC → serve → JetStream → worker → KV → caller",
            &r.fstore,
        ),
        (
            "raw async-nats floor: publish → pull → KV put → ready → ack; KV get",
            &r.raw,
        ),
    ] {
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

fn print_summary(s: &Settings, results: &[ProfileResult]) {
    println!();
    println!("### durability profiles");
    println!();
    println!(
        "| profile | fstore misses/s @{0} | raw misses/s @{0} | fstore/raw | fstore p50 µs | raw p50 µs |",
        s.concurrency
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {:.0} | {:.0} | {:.2}× | {} | {} |",
            match r.profile {
                Profile::Default => "default (flush to the OS)",
                Profile::Durable => "sync_interval = always (fsync before ack)",
            },
            r.fstore.thr.per_sec(),
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
        for (path, p) in [("fstore", &r.fstore), ("raw", &r.raw)] {
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
