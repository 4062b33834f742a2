//! The hit path: GetFeatures for 1 entity × 10 and 1 × 250 cached features, p50/p99 one
//! call at a time and throughput with 64 calls in flight, side by side in the same run
//! with a bare tonic echo service answering messages of the same sizes. The target is
//! at least 0.8× the echo's throughput.
//!
//! Each case runs twice: features answered from the value cache (`cached`), and
//! snapshot-served features answered from their published generation in memory
//! (`snapshot`, published by a staged backfill before the run).
//!
//! A third table times the GetFeatures handler alone (`Service::get_features` called
//! in-process, no HTTP/2 or codec): the feature store's own work per call.
//!
//! `cargo bench -p fstore-benches --bench hit_path`. Environment overrides:
//! - `HIT_PATH_SECS` (3): seconds of each throughput window
//! - `HIT_PATH_WARMUP_SECS` (0.5): unmeasured throughput before each window
//! - `HIT_PATH_SEQ_10` (2000), `HIT_PATH_SEQ_250` (1000): sequential calls measured
//! - `HIT_PATH_WARMUP` (200): sequential calls before those
//! - `HIT_PATH_IN_FLIGHT` (64), `HIT_PATH_CHANNELS` (4): concurrency and connections
//! - `HIT_PATH_MAX_REQUESTS` (10000000): bound on calls of one throughput window
//! - `HIT_PATH_FULL_DECODE` (0): 1 builds and fully decodes GetFeatures messages in the
//!   load generator, as an application would, instead of sending pre-encoded bytes and
//!   decoding only the statuses
//! - `HIT_PATH_CASES` (10,250): the feature counts to run
//! - `HIT_PATH_SERVING` (cached,snapshot): where the features are answered from
//! - `HIT_PATH_AUTH` (off,on): without API keys, and with them (a second replica on the
//!   same substrate with `auth.enabled`, every call carrying a key): the cost of the
//!   trust boundary on the hit path
//! - `HIT_PATH_FSTORE_NODELAY` (0): 1 binds the feature store's listener with TCP_NODELAY,
//!   which Linux copies onto accepted connections. `server::start` serves a bare
//!   `TcpListenerStream`, so its connections otherwise keep Nagle's algorithm while the
//!   echo (like any tonic server that binds its own listener) has it off.

mod features;

use features::{Serving, publish, register, warm};
use fstore_benches::env;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fstore_benches::{
    AnyFeaturesCall, Call, EchoCall, Failures, FeaturesCall, FeaturesFullCall, Latency, Throughput,
    channels, echo_reply_payload_len, echo_request, local_listener, sequential, serve_echo,
    throughput,
};
use fstore_proto::api::feature_store_server::FeatureStore;
use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use hdrhistogram::Histogram;
use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const FEATURES: usize = 250;
const ENTITY: &str = "item:1";
const TARGET_RATIO: f64 = 0.8;

#[derive(Debug)]
struct Settings {
    secs: f64,
    warmup_secs: f64,
    seq_10: usize,
    seq_250: usize,
    warmup: usize,
    in_flight: usize,
    channels: usize,
    max_requests: u64,
    full_decode: bool,
    fstore_nodelay: bool,
    cases: Vec<usize>,
    serving: Vec<Serving>,
    auth: Vec<bool>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let cases = env("HIT_PATH_CASES", "10,250".to_string())?
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("HIT_PATH_CASES must be comma-separated feature counts")?;
        for &c in &cases {
            ensure!(
                (1..=FEATURES).contains(&c),
                "HIT_PATH_CASES: {c} is not 1 to {FEATURES}"
            );
        }
        Ok(Settings {
            secs: env("HIT_PATH_SECS", 3.0)?,
            warmup_secs: env("HIT_PATH_WARMUP_SECS", 0.5)?,
            seq_10: env("HIT_PATH_SEQ_10", 2000)?,
            seq_250: env("HIT_PATH_SEQ_250", 1000)?,
            warmup: env("HIT_PATH_WARMUP", 200)?,
            in_flight: env("HIT_PATH_IN_FLIGHT", 64)?,
            channels: env("HIT_PATH_CHANNELS", 4)?,
            max_requests: env("HIT_PATH_MAX_REQUESTS", 10_000_000)?,
            full_decode: env("HIT_PATH_FULL_DECODE", 0u8)? != 0,
            fstore_nodelay: env("HIT_PATH_FSTORE_NODELAY", 0u8)? != 0,
            cases,
            serving: env("HIT_PATH_SERVING", "cached,snapshot".to_string())?
                .split(',')
                .map(|c| match c.trim() {
                    "cached" => Ok(Serving::Cached),
                    "snapshot" => Ok(Serving::Snapshot),
                    other => bail!("HIT_PATH_SERVING: `{other}` is not cached or snapshot"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            auth: env("HIT_PATH_AUTH", "off,on".to_string())?
                .split(',')
                .map(|c| match c.trim() {
                    "off" => Ok(false),
                    "on" => Ok(true),
                    other => bail!("HIT_PATH_AUTH: `{other}` is not off or on"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        })
    }

    fn sequential_calls(&self, features: usize) -> usize {
        if features <= 10 {
            self.seq_10
        } else {
            self.seq_250
        }
    }
}

struct Row {
    case: String,
    features: usize,
    request_bytes: usize,
    response_bytes: usize,
    echo_request_bytes: usize,
    echo_response_bytes: usize,
    store_seq: Latency,
    /// `Service::get_features` called in-process: the handler without gRPC.
    handler: Latency,
    echo_seq: Latency,
    store_thr: Throughput,
    echo_thr: Throughput,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.store_thr.per_sec() / self.echo_thr.per_sec().max(1e-9)
    }

    fn failures(&self) -> Vec<(&'static str, u64, Option<&str>)> {
        [
            ("fstore sequential", &self.store_seq.failures),
            ("fstore handler in-process", &self.handler.failures),
            ("echo sequential", &self.echo_seq.failures),
            ("fstore @in-flight", &self.store_thr.failures),
            ("echo @in-flight", &self.echo_thr.failures),
        ]
        .into_iter()
        .filter(|(_, f)| f.count > 0)
        .map(|(what, f)| (what, f.count, f.first.as_deref()))
        .collect()
    }
}

/// Calls the service's GetFeatures handler directly, without transport or codec (the
/// request is cloned outside the timed part).
/// `Service::get_features` in-process; as `principal` when the store wants keys (what
/// the auth layer would have put in the request).
async fn handler_latency(
    service: &fstore::service::Service,
    principal: Option<&std::sync::Arc<fstore::auth::Principal>>,
    request: &api::GetFeaturesRequest,
    warmup: usize,
    n: usize,
) -> Latency {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut failures = Failures::default();
    let expect = request.features.len();
    for i in 0..warmup + n {
        let mut call = tonic::Request::new(request.clone());
        if let Some(p) = principal {
            call.extensions_mut().insert(p.clone());
        }
        let start = Instant::now();
        let answer = service.get_features(call).await;
        let us = start.elapsed().as_micros().max(1) as u64;
        let checked = match answer {
            Ok(r) => {
                let r = r.into_inner();
                if r.results.len() == expect
                    && r.ticket.is_empty()
                    && r.results
                        .iter()
                        .all(|x| x.status() == api::Status::Ready && x.from_cache)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "{} results, {} READY from the cache, ticket {:?}",
                        r.results.len(),
                        r.results
                            .iter()
                            .filter(|x| x.status() == api::Status::Ready && x.from_cache)
                            .count(),
                        r.ticket
                    ))
                }
            }
            Err(st) => Err(format!("{:?}: {}", st.code(), st.message())),
        };
        match checked {
            Ok(()) if i >= warmup => histogram.saturating_record(us),
            Ok(()) => {}
            Err(e) => failures.add(e),
        }
    }
    Latency {
        histogram,
        failures,
    }
}

/// One store under test: its service, channels, and the key its calls carry (if any).
struct Target<'a> {
    service: &'a fstore::service::Service,
    channels: &'a [Channel],
    key: Option<&'a str>,
}

async fn run_case(
    s: &Settings,
    features: usize,
    serving: Serving,
    target: &Target<'_>,
    echo_channels: &[Channel],
) -> anyhow::Result<Row> {
    let (service, store_channels, key) = (target.service, target.channels, target.key);
    ensure!(
        !(s.full_decode && key.is_some()),
        "HIT_PATH_FULL_DECODE=1 sends no key: run it with HIT_PATH_AUTH=off"
    );
    let mut store = FeatureStoreClient::new(store_channels[0].clone());
    let request = api::GetFeaturesRequest {
        entities: vec![api::EntityRequest {
            entity_id: ENTITY.into(),
            ..Default::default()
        }],
        features: (0..features).map(|i| serving.feature(i)).collect(),
        ..Default::default()
    };
    // One real call gives the sizes the echo must match.
    let mut sizing = tonic::Request::new(request.clone());
    if let Some(k) = key {
        sizing
            .metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse()?);
    }
    let response = store.get_features(sizing).await?.into_inner();
    ensure!(
        response.results.len() == features
            && response
                .results
                .iter()
                .all(|r| r.status() == api::Status::Ready
                    && r.from_cache
                    && (serving == Serving::Cached) == (r.generation == 0)),
        "the sizing call for {features} {} features did not answer every one READY from there",
        serving.name()
    );
    let request_bytes = request.encode_to_vec().len();
    let response_bytes = response.encode_to_vec().len();
    let reply_payload = echo_reply_payload_len(response_bytes);
    let echo_req = echo_request(request_bytes, reply_payload);
    let echo_request_bytes = echo_req.encoded_len();
    let echo_response_bytes = fstore_benches::pb::EchoReply {
        payload: vec![0u8; reply_payload as usize].into(),
    }
    .encoded_len();

    let store_calls: Vec<AnyFeaturesCall> = store_channels
        .iter()
        .map(|ch| {
            if s.full_decode {
                AnyFeaturesCall::Full(FeaturesFullCall::new(ch.clone(), request.clone()))
            } else {
                AnyFeaturesCall::Light(FeaturesCall::new(ch.clone(), &request).with_key(key))
            }
        })
        .collect();
    let echo_calls: Vec<EchoCall> = echo_channels
        .iter()
        .map(|ch| EchoCall::new(ch.clone(), echo_req.clone()))
        .collect();

    let n = s.sequential_calls(features);
    let store_seq = sequential(&mut store_calls[0].clone(), s.warmup, n).await;
    let echo_seq = sequential(&mut echo_calls[0].clone(), s.warmup, n).await;
    let principal = key.map(|_| {
        std::sync::Arc::new(fstore::auth::Principal {
            tenant: "bench".into(),
            roles: vec![fstore::auth::Role::Read],
            key_id: "bench".into(),
        })
    });
    let handler = handler_latency(service, principal.as_ref(), &request, s.warmup, n).await;

    let window = Duration::from_secs_f64(s.secs);
    let warmup = Duration::from_secs_f64(s.warmup_secs);
    let store_thr = measure_throughput(s, &store_calls, warmup, window).await;
    let echo_thr = measure_throughput(s, &echo_calls, warmup, window).await;

    Ok(Row {
        case: format!(
            "1 × {features} {}{}",
            serving.name(),
            if key.is_some() { ", API key" } else { "" }
        ),
        features,
        request_bytes,
        response_bytes,
        echo_request_bytes,
        echo_response_bytes,
        store_seq,
        handler,
        echo_seq,
        store_thr,
        echo_thr,
    })
}

async fn measure_throughput<C: Call>(
    s: &Settings,
    calls: &[C],
    warmup: Duration,
    window: Duration,
) -> Throughput {
    if !warmup.is_zero() {
        throughput(calls, s.in_flight, warmup, s.max_requests).await;
    }
    throughput(calls, s.in_flight, window, s.max_requests).await
}

async fn run() -> anyhow::Result<()> {
    let s = Settings::from_env()?;

    let mut config = fstore::Config::default();
    config.server.default_tenant = Some("bench".into());
    config.auth.enabled = Some(false);
    let store_listener = if s.fstore_nodelay {
        local_listener(true)?
    } else {
        TcpListener::bind("127.0.0.1:0").await?
    };
    let store_config = config.clone();
    let store =
        fstore::server::start_embedded(config, fstore_flows::Catalog::builtins(), store_listener)
            .await?;
    let echo = serve_echo(TcpListener::bind("127.0.0.1:0").await?)?;

    let store_channels = channels(&store.url(), s.channels).await?;
    let echo_channels = channels(&echo.url(), s.channels).await?;
    let mut admin = FeatureStoreClient::new(store_channels[0].clone());

    register(&mut admin).await?;
    warm(&mut admin).await?;
    if s.serving.contains(&Serving::Snapshot) {
        publish(&mut admin).await?;
    }

    // The same store behind keys: a second replica on the same substrate (the same
    // features and cached values) with authentication on.
    let mut secure_config = store_config.clone();
    secure_config.auth.enabled = Some(true);
    let secure = fstore::server::start_sharing(
        secure_config,
        store.substrate.clone(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let roles = ["read".to_string()];
    let key = fstore::auth::create_key(store.substrate.keys.as_ref(), "bench", &roles, "bench")
        .await?
        .secret;
    let secure_channels = channels(&secure.url(), s.channels).await?;

    let mut rows = Vec::new();
    for &features in &s.cases {
        for &serving in &s.serving {
            for &auth in &s.auth {
                let target = if auth {
                    Target {
                        service: &secure.service,
                        channels: &secure_channels,
                        key: Some(&key),
                    }
                } else {
                    Target {
                        service: &store.service,
                        channels: &store_channels,
                        key: None,
                    }
                };
                rows.push(run_case(&s, features, serving, &target, &echo_channels).await?);
            }
        }
    }

    println!();
    println!(
        "hit path: 1 entity × N cached features vs a bare tonic echo of the same message sizes; \
         {} sequential warm-up calls; {} in flight over {} connections for {:.1} s (after {:.1} s warm-up); \
         load generator {}; fstore listener {}; {} CPUs",
        s.warmup,
        s.in_flight,
        s.channels,
        s.secs,
        s.warmup_secs,
        if s.full_decode {
            "builds and fully decodes GetFeatures messages"
        } else {
            "sends pre-encoded requests and decodes only result statuses"
        },
        if s.fstore_nodelay {
            "with TCP_NODELAY (HIT_PATH_FSTORE_NODELAY=1)"
        } else {
            "as server::start serves it (accepted sockets keep Nagle)"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();
    println!(
        "| case | fstore p50 µs | fstore p99 µs | echo p50 µs | echo p99 µs | fstore req/s @{0} | echo req/s @{0} | throughput ratio |",
        s.in_flight
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2}× |",
            r.case,
            r.store_seq.p50_us(),
            r.store_seq.p99_us(),
            r.echo_seq.p50_us(),
            r.echo_seq.p99_us(),
            r.store_thr.per_sec(),
            r.echo_thr.per_sec(),
            r.ratio(),
        );
    }
    println!();
    println!(
        "| case | request bytes (fstore / echo) | response bytes (fstore / echo) | sequential calls | fstore calls @{0} | echo calls @{0} |",
        s.in_flight
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} / {} | {} / {} | {} | {} in {:.2} s | {} in {:.2} s |",
            r.case,
            r.request_bytes,
            r.echo_request_bytes,
            r.response_bytes,
            r.echo_response_bytes,
            r.store_seq.histogram.len(),
            r.store_thr.requests,
            r.store_thr.elapsed.as_secs_f64(),
            r.echo_thr.requests,
            r.echo_thr.elapsed.as_secs_f64(),
        );
    }
    println!();
    println!(
        "| case | handler alone p50 µs | handler alone p99 µs | handler p50 µs per feature | handler p50 / fstore p50 |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.0}% |",
            r.case,
            r.handler.p50_us(),
            r.handler.p99_us(),
            r.handler.p50_us() as f64 / r.features as f64,
            100.0 * r.handler.p50_us() as f64 / r.store_seq.p50_us().max(1) as f64,
        );
    }
    println!(
        "(handler alone: Service::get_features called in-process, no HTTP/2, no codec — the feature store's own work per call)"
    );
    println!();
    for r in &rows {
        let ratio = r.ratio();
        println!(
            "{}: fstore throughput is {:.2}× the echo's (target ≥ {TARGET_RATIO}×): {}",
            r.case,
            ratio,
            if ratio >= TARGET_RATIO {
                "met"
            } else {
                "NOT met"
            }
        );
    }

    // The key check alone, as the auth layer makes it on every call: a cache hit.
    let auth =
        fstore::auth::Authenticator::new(store.substrate.keys.clone(), Duration::from_secs(60));
    auth.authenticate(&key).await?;
    let checks = 1_000_000u32;
    let started = Instant::now();
    for _ in 0..checks {
        auth.authenticate(&key).await?;
    }
    println!(
        "the key check alone (Authenticator::authenticate, cached): {:.0} ns per call",
        started.elapsed().as_nanos() as f64 / f64::from(checks)
    );
    for keyed in rows.iter().filter(|r| r.case.ends_with(", API key")) {
        let plain = keyed.case.trim_end_matches(", API key");
        if let Some(r) = rows.iter().find(|r| r.case == plain) {
            println!(
                "{plain}: with API keys, {:.1}% of the throughput without (target ≥ 95%); p50 {} vs {} µs",
                100.0 * keyed.store_thr.per_sec() / r.store_thr.per_sec().max(1e-9),
                keyed.store_seq.p50_us(),
                r.store_seq.p50_us(),
            );
        }
    }

    for r in &rows {
        if r.store_seq.p50_us() >= 30_000 && r.echo_seq.p50_us() < 10_000 {
            println!(
                "note {}: a sequential p50 near 40 ms is Nagle's algorithm meeting delayed ACKs \
                 (the feature store's accepted connections lack TCP_NODELAY); \
                 HIT_PATH_FSTORE_NODELAY=1 shows the server without it",
                r.case
            );
        }
    }

    let mut failed = false;
    for r in &rows {
        for (what, count, first) in r.failures() {
            failed = true;
            eprintln!(
                "FAILURES {} {what}: {count}; first: {}",
                r.case,
                first.unwrap_or("?")
            );
        }
    }

    // Connections first, so the servers' graceful shutdowns have nothing to wait for.
    drop((admin, store_channels, secure_channels, echo_channels));
    let stop = async {
        echo.shutdown().await?;
        secure.shutdown().await;
        store.shutdown().await;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .context("shutting the servers down took over 10 s")??;
    if failed {
        bail!(
            "some calls failed or answered something other than a cache hit; the numbers above do not measure the hit path"
        );
    }
    println!("every measured call answered all its features READY from the cache");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(run())
}
