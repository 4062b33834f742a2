//! Part B, end to end: an in-process feature store whose worker batches up to
//! `max_batch` jobs, loaded with SYNC GetFeatures misses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fstore_flows::sentence::SentenceTransformer;
use fstore_flows::{
    Catalog, Error as FlowError, Flow, FlowInput, FlowSpec, ModelInfo, Params, Value,
};
use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use fstore_tests::{TestClient, build};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::sample::{DIM, Sample, histogram, ms};
use crate::settings::Settings;

pub(crate) const FEATURE: &str = "doc.emb";
/// Most connections part B opens to the server.
pub(crate) const MAX_CHANNELS: usize = 4;

/// `text.minilm@1` as the worker sees it, counting the batches it is given.
pub(crate) struct Recorder {
    pub(crate) inner: Arc<SentenceTransformer>,
    pub(crate) forwards: AtomicU64,
    pub(crate) items: AtomicU64,
}

impl Recorder {
    pub(crate) fn reset(&self) {
        self.forwards.store(0, Ordering::Relaxed);
        self.items.store(0, Ordering::Relaxed);
    }

    pub(crate) fn mean_batch(&self) -> f64 {
        self.items.load(Ordering::Relaxed) as f64
            / self.forwards.load(Ordering::Relaxed).max(1) as f64
    }
}

impl Flow for Recorder {
    fn spec(&self) -> &FlowSpec {
        self.inner.spec()
    }

    fn check_params(&self, params: &Params) -> Result<(), FlowError> {
        self.inner.check_params(params)
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, FlowError>> {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.inner.run(batch)
    }

    fn model(&self) -> Option<ModelInfo> {
        self.inner.model()
    }

    fn unload(&self) {
        self.inner.unload()
    }
}

/// Why a GetFeatures answer is not one fresh READY `[384]` tensor, if it is not.
pub(crate) fn check_answer(r: &api::GetFeaturesResponse) -> Result<(), String> {
    let [result] = r.results.as_slice() else {
        return Err(format!("{} results, not 1", r.results.len()));
    };
    if result.status() != api::Status::Ready {
        return Err(format!(
            "status {} ({}), ticket {:?}",
            result.status().as_str_name(),
            result.error,
            r.ticket
        ));
    }
    if result.from_cache {
        return Err("answered from the cache: not a miss".to_string());
    }
    match result.value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(api::value::Kind::Tensor(t)) if t.shape == [DIM as u64] && t.data.len() == DIM => {
            Ok(())
        }
        Some(api::value::Kind::Tensor(t)) => Err(format!(
            "a tensor of shape {:?} with {} values, not [{DIM}]",
            t.shape,
            t.data.len()
        )),
        other => Err(format!("value {other:?}, not a tensor")),
    }
}

/// What the load of one window gave.
#[derive(Debug)]
pub(crate) struct Load {
    /// Calls answered correctly by the end of the window.
    pub(crate) in_window: u64,
    /// Latencies of every call sent in the window and answered correctly.
    pub(crate) hist: Histogram<u64>,
    pub(crate) failures: u64,
    pub(crate) first_failure: Option<String>,
}

/// `callers` tasks sending SYNC GetFeatures calls one after another for `window`, each for
/// a new entity (so a miss), cycling through `texts`.
pub(crate) async fn load(
    channels: &[Channel],
    callers: usize,
    window: Duration,
    next: &Arc<AtomicU64>,
    texts: &Arc<[&'static str]>,
) -> Load {
    let start = Instant::now();
    let deadline = start + window;
    let mut tasks = JoinSet::new();
    for c in 0..callers {
        let mut client = FeatureStoreClient::new(channels[c % channels.len()].clone());
        let next = next.clone();
        let texts = texts.clone();
        tasks.spawn(async move {
            let mut hist = histogram();
            let mut in_window = 0u64;
            let mut failures = 0u64;
            let mut first_failure = None;
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let text = texts[n as usize % texts.len()];
                let request = api::GetFeaturesRequest {
                    entities: vec![build::entity(
                        &format!("doc-{n}"),
                        &[("text", build::text(text))],
                    )],
                    features: vec![FEATURE.to_string()],
                    mode: api::Mode::Sync as i32,
                    wait_ms: 60_000,
                    ..Default::default()
                };
                let t = Instant::now();
                let answer = client.get_features(request).await;
                let done = Instant::now();
                let checked = match answer {
                    Ok(r) => check_answer(r.get_ref()),
                    Err(st) => Err(format!("GetFeatures: {:?}: {}", st.code(), st.message())),
                };
                match checked {
                    Ok(()) => {
                        hist.saturating_record((done - t).as_micros().max(1) as u64);
                        if done <= deadline {
                            in_window += 1;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        first_failure.get_or_insert(e);
                    }
                }
            }
            (hist, in_window, failures, first_failure)
        });
    }
    let mut out = Load {
        in_window: 0,
        hist: histogram(),
        failures: 0,
        first_failure: None,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((hist, in_window, failures, first)) => {
                out.hist
                    .add(&hist)
                    .expect("histograms with the same bounds");
                out.in_window += in_window;
                out.failures += failures;
                if out.first_failure.is_none() {
                    out.first_failure = first;
                }
            }
            Err(e) => {
                out.failures += 1;
                out.first_failure
                    .get_or_insert(format!("caller task ended abnormally: {e}"));
            }
        }
    }
    out
}

/// A fresh feature store whose worker batches up to `batch` jobs, loaded by
/// `batch × callers_per_slot` callers.
pub(crate) async fn measure_worker(
    s: &Settings,
    flow: &Arc<SentenceTransformer>,
    batch: usize,
    next: &Arc<AtomicU64>,
    texts: &Arc<[&'static str]>,
) -> anyhow::Result<Sample> {
    let mut config = fstore::Config::default();
    config.server.default_tenant = Some("bench".into());
    config.auth.enabled = Some(false);
    config.worker.slots = 1;
    config.worker.max_batch = batch;
    config.worker.max_wait = s.max_wait;
    let recorder = Arc::new(Recorder {
        inner: flow.clone(),
        forwards: AtomicU64::new(0),
        items: AtomicU64::new(0),
    });
    let catalog = Catalog::new().with(recorder.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let store = fstore::server::start_embedded(config, catalog, listener).await?;

    let admin = TestClient::connect(&store.url(), None).await?;
    admin
        .register(build::feature(
            FEATURE,
            "text.minilm@1",
            &[],
            &[("text", "request:text")],
            86_400_000,
        ))
        .await
        .context("registering doc.emb")?;
    let callers = batch * s.callers_per_slot;
    let channels = fstore_benches::channels(&store.url(), callers.min(MAX_CHANNELS)).await?;

    let mut failures = Vec::new();
    if s.warmup_secs > 0.0 {
        let w = load(
            &channels,
            callers,
            Duration::from_secs_f64(s.warmup_secs),
            next,
            texts,
        )
        .await;
        if w.failures > 0 {
            failures.push(format!(
                "warm-up: {} failed calls; first: {}",
                w.failures,
                w.first_failure.unwrap_or_default()
            ));
        }
    }
    // Every warm-up call was answered, so nothing is queued or running now.
    recorder.reset();
    let window = Duration::from_secs_f64(s.e2e_secs);
    let l = load(&channels, callers, window, next, texts).await;
    let mean_batch = recorder.mean_batch();
    if l.failures > 0 {
        failures.push(format!(
            "{} failed calls; first: {}",
            l.failures,
            l.first_failure.unwrap_or_default()
        ));
    }

    // Connections first, so the server's graceful shutdown has nothing to wait for.
    drop((admin, channels));
    tokio::time::timeout(Duration::from_secs(10), store.shutdown())
        .await
        .context("shutting the feature store down took over 10 s")?;
    if !failures.is_empty() {
        bail!("max_batch {batch}: {}", failures.join("; "));
    }
    ensure!(
        l.in_window > 0,
        "max_batch {batch}: no call was answered within the {:.1} s window",
        s.e2e_secs
    );
    Ok(Sample {
        per_sec: l.in_window as f64 / window.as_secs_f64(),
        p50_us: l.hist.value_at_quantile(0.50),
        p99_us: l.hist.value_at_quantile(0.99),
        mean_batch,
    })
}

pub(crate) async fn run_worker_part(
    s: &Settings,
    flow: &Arc<SentenceTransformer>,
    texts: &Arc<[&'static str]>,
) -> anyhow::Result<Vec<Vec<Sample>>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut samples = vec![Vec::new(); s.sizes.len()];
    for round in 0..s.median_of {
        for (i, &b) in s.sizes.iter().enumerate() {
            let sample = measure_worker(s, flow, b, &next, texts).await?;
            eprintln!(
                "e2e   run {}/{} max_batch {b:>3}: {:.1} embeddings/s, p50 {:.1} ms, {:.1} texts per forward",
                round + 1,
                s.median_of,
                sample.per_sec,
                ms(sample.p50_us),
                sample.mean_batch
            );
            samples[i].push(sample);
        }
    }
    Ok(samples)
}
