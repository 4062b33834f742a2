//! Dynamic batching of `text.minilm@1` (all-MiniLM-L6-v2 on candle): embeddings per
//! second at batch sizes 1, 8 and 32, and the latency each costs. The target is batched
//! (8 and 32) at least 3× the throughput of batch 1.
//!
//! - Part A, the flow alone: `MiniLm::run` called on batches of 1, 8 or 32 texts, one
//!   call after another. The latency is that of one batched call: what every item of the
//!   batch waits.
//! - Part B, end to end: an in-process feature store (gRPC server, embedded substrate, a
//!   worker with one slot and `max_batch` = 1, 8 or 32) answering SYNC GetFeatures calls
//!   for one entity each, every call a miss, from `max_batch × BATCHING_CALLERS`
//!   concurrent callers. The latency is that of one call.
//!
//! Texts cycle through a fixed list of 64 English sentences of 8 to 40 words, the same in
//! both parts and for every batch size.
//!
//! `cargo bench -p fstore-benches --bench batching` (needs the model: `scripts/fetch-model`;
//! read from `$FSTORE_MODEL_DIR/all-minilm-l6-v2`, default `.data/models` in the
//! workspace). Environment overrides:
//! - `MEDIAN_OF` (1): runs of every measurement; the tables show the median of each column
//! - `BATCHING_SECS` (5): seconds measured per batch size in part A
//! - `BATCHING_E2E_SECS` (5): seconds measured per batch size in part B
//! - `BATCHING_WARMUP_SECS` (1): unmeasured load before each part B window
//! - `BATCHING_CALLERS` (1): concurrent callers per unit of `max_batch` in part B
//! - `BATCHING_MAX_WAIT_MS` (5): the worker's `max_wait`
//! - `BATCHING_SIZES` (1,8,32): the batch sizes; the first is the baseline
//! - `BATCHING_PARTS` (flow,worker): which parts to run
//! - `BATCHING_UNIFORM` (0): 1 makes every text the sentence nearest the mean length, so
//!   batches carry no padding: what batching gains when padding costs nothing
//!
//! candle runs CPU matmuls on `RAYON_NUM_THREADS` threads (default: every CPU). On a
//! 2-CPU machine shared with other work, `RAYON_NUM_THREADS=1` gives steadier numbers;
//! the header prints the load average before and after.

use fstore_benches::env;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fstore_flows::builtin::MiniLm;
use fstore_flows::{
    Catalog, Error as FlowError, Flow, FlowInput, FlowSpec, ModelInfo, Params, Value,
};
use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use fstore_tests::{TestClient, build};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Length of an embedding.
const DIM: usize = 384;
/// Batched throughput must be at least this many times batch 1's.
const TARGET_RATIO: f64 = 3.0;
/// The model's folder inside the model dir (as `MiniLm` reads it).
const MODEL_FOLDER: &str = "all-minilm-l6-v2";
const FEATURE: &str = "doc.emb";
/// Most connections part B opens to the server.
const MAX_CHANNELS: usize = 4;

/// 64 English sentences of 8 to 40 words.
const SENTENCES: [&str; 64] = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Our quarterly revenue grew by twelve percent, driven mostly by strong subscription renewals in Europe and a recovering retail segment in North America.",
    "Please restart the router before calling support again.",
    "She walked into the quiet library, found an empty table by the window, and spent the whole afternoon reading about the history of early navigation instruments.",
    "Free shipping on all orders over fifty dollars this weekend only.",
    "The new firmware update fixes a memory leak that caused the camera to freeze after several hours of continuous recording.",
    "How do I change the default language of the mobile app?",
    "Scientists have discovered a species of deep-sea fish that produces its own light to attract prey in complete darkness.",
    "The meeting has been moved to Thursday at three in the afternoon.",
    "After the storm knocked out power across the valley, volunteers set up a temporary shelter in the high school gym and handed out blankets, water and hot meals to hundreds of families.",
    "This stainless steel water bottle keeps drinks cold for twenty-four hours.",
    "The committee rejected the proposal because the projected costs were too high.",
    "I ordered a medium pepperoni pizza but received a large vegetarian one instead.",
    "Machine learning models can inherit biases from the data they are trained on, which is why careful evaluation across different groups of users matters before deployment.",
    "The train to Edinburgh departs from platform nine every hour.",
    "Add two cups of flour, a pinch of salt and one teaspoon of baking powder, then whisk until smooth.",
    "Our hotel room had a beautiful view of the harbour and the old lighthouse.",
    "The defendant's lawyer argued that the evidence had been collected without a valid warrant and should therefore be excluded from the trial.",
    "Battery life is excellent, easily lasting two full days of normal use.",
    "Remote work has changed how teams communicate, with more written updates and fewer spontaneous conversations.",
    "The museum's new exhibit explores the art and daily life of ancient Mesopotamian cities.",
    "Customers who bought this lamp also purchased a matching set of linen shades.",
    "Heavy rain is expected tomorrow morning, so leave early and drive carefully.",
    "The startup raised forty million dollars to expand its battery recycling plants across three countries over the next two years.",
    "My package was marked as delivered, but it never arrived at my door.",
    "The orchestra opened the concert with a bold and energetic performance of a little-known symphony by a Czech composer.",
    "Regular exercise improves sleep quality, mood and long-term heart health.",
    "To reset your password, click the link in the email we just sent you.",
    "The bridge will be closed for maintenance every night between midnight and five.",
    "Despite a slow start, the home team rallied in the second half and won the championship with a last-minute goal from their youngest player.",
    "These running shoes are lightweight, breathable and surprisingly durable on rough trails.",
    "The city council approved a plan to plant ten thousand trees along major streets.",
    "Why does my laptop fan get so loud when I open a video call?",
    "Inflation slowed for the third consecutive month as energy prices fell and supply chains continued to recover from earlier disruptions.",
    "The novel follows two sisters who reconnect after decades apart and uncover a family secret hidden in their grandmother's letters.",
    "Turn left at the second traffic light and the pharmacy is on your right.",
    "The database migration failed halfway through because a foreign key constraint referenced a table that had already been dropped.",
    "Fresh basil, ripe tomatoes and good olive oil make the simplest summer salad.",
    "Astronomers observed a distant galaxy whose light left it more than thirteen billion years ago, shortly after the universe began.",
    "The warranty covers manufacturing defects for two years but not accidental damage.",
    "Kids under twelve get in free at the science center on Sundays.",
    "Our support team typically replies within one business day.",
    "The hiking trail climbs steeply through pine forest before opening onto a wide ridge with views of three lakes and the snowy peaks beyond.",
    "This coffee maker brews a full pot in under five minutes and shuts off automatically.",
    "The senator announced she would not seek re-election after serving four terms.",
    "Local farmers are struggling with an unusually dry spring that has delayed planting of corn and soybeans.",
    "Can I return an item bought online to one of your physical stores?",
    "The software engineer spent the entire week tracking down a race condition that only appeared under heavy load on machines with many cores.",
    "A gentle introduction to linear algebra for students with no prior background.",
    "The airline cancelled dozens of flights after a software outage grounded its fleet.",
    "Wireless earbuds with active noise cancellation and a compact charging case.",
    "The children built a sandcastle with towers, a moat and a tiny flag made from a leaf.",
    "Researchers found that people who spend time in green spaces report lower stress and better concentration, even after only twenty minutes outdoors.",
    "The restaurant's new chef brings a modern twist to traditional Basque cooking.",
    "Unemployment claims rose slightly last week, but economists say the labour market remains tight.",
    "Store the cheese wrapped in paper in the coldest part of the fridge.",
    "The documentary examines how plastic waste travels from city streets into rivers and finally reaches the open ocean, harming wildlife along the way.",
    "Please confirm your attendance by replying to this message before Friday.",
    "The volcano erupted early on Sunday, sending ash several kilometres into the sky.",
    "A well-designed API makes the common case easy and the rare case possible.",
    "He learned to play the violin at sixty and now performs with a community orchestra every spring.",
    "The apartment has two bedrooms, a small balcony and is close to public transport.",
    "Shares of the chip maker jumped after it reported record demand for data center processors and raised its forecast for the rest of the year.",
    "The garden is full of bees and butterflies from early May until late September.",
];

#[derive(Debug)]
struct Settings {
    median_of: usize,
    flow_secs: f64,
    e2e_secs: f64,
    warmup_secs: f64,
    callers_per_slot: usize,
    max_wait: Duration,
    sizes: Vec<usize>,
    flow_part: bool,
    worker_part: bool,
    uniform: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let sizes = env("BATCHING_SIZES", "1,8,32".to_string())?
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("BATCHING_SIZES must be comma-separated batch sizes")?;
        ensure!(
            !sizes.is_empty() && sizes.iter().all(|&b| (1..=1024).contains(&b)),
            "BATCHING_SIZES: every size must be 1 to 1024"
        );
        let parts = env("BATCHING_PARTS", "flow,worker".to_string())?;
        let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
        ensure!(
            parts.iter().all(|p| matches!(*p, "flow" | "worker")),
            "BATCHING_PARTS: a comma-separated subset of flow,worker"
        );
        let s = Settings {
            median_of: env("MEDIAN_OF", 1usize)?,
            flow_secs: env("BATCHING_SECS", 5.0)?,
            e2e_secs: env("BATCHING_E2E_SECS", 5.0)?,
            warmup_secs: env("BATCHING_WARMUP_SECS", 1.0)?,
            callers_per_slot: env("BATCHING_CALLERS", 1usize)?,
            max_wait: Duration::from_millis(env("BATCHING_MAX_WAIT_MS", 5u64)?),
            sizes,
            flow_part: parts.contains(&"flow"),
            worker_part: parts.contains(&"worker"),
            uniform: env("BATCHING_UNIFORM", 0u8)? != 0,
        };
        ensure!(s.median_of >= 1, "MEDIAN_OF must be at least 1");
        ensure!(
            s.callers_per_slot >= 1,
            "BATCHING_CALLERS must be at least 1"
        );
        ensure!(
            s.flow_secs > 0.0 && s.e2e_secs > 0.0 && s.warmup_secs >= 0.0,
            "BATCHING_SECS and BATCHING_E2E_SECS must be positive, BATCHING_WARMUP_SECS not negative"
        );
        Ok(s)
    }
}

/// `$FSTORE_MODEL_DIR`, else `.data/models` at the workspace root; fails unless the
/// model files are there.
fn model_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("FSTORE_MODEL_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".data")
            .join("models"),
    };
    let folder = dir.join(MODEL_FOLDER);
    for file in ["model.safetensors", "tokenizer.json"] {
        if !folder.join(file).is_file() {
            bail!(
                "{} is missing: run scripts/fetch-model to fetch all-MiniLM-L6-v2 \
                 (or point FSTORE_MODEL_DIR at a folder holding {MODEL_FOLDER}/)",
                folder.join(file).display()
            );
        }
    }
    Ok(dir)
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Why an output of the flow is not a `[384]` tensor, if it is not.
fn check_output(out: &Result<Value, FlowError>) -> Result<(), String> {
    match out {
        Ok(Value::Tensor(t)) if t.dims() == [DIM] => Ok(()),
        Ok(Value::Tensor(t)) => Err(format!("a tensor of shape {:?}, not [{DIM}]", t.dims())),
        Ok(v) => Err(format!("a {:?}, not a tensor", v.value_type())),
        Err(e) => Err(format!("failed: {}", e.message())),
    }
}

// ---------------------------------------------------------------------------------------
// Part A: the flow alone
// ---------------------------------------------------------------------------------------

/// One measurement of a batch size.
#[derive(Debug, Clone, Copy)]
struct Sample {
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    /// Part B: texts per forward pass the worker ran (mean).
    mean_batch: f64,
}

fn flow_input(text: &str) -> FlowInput {
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
fn measure_flow(
    flow: &MiniLm,
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

fn run_flow_part(s: &Settings, flow: &MiniLm, texts: &[&str]) -> anyhow::Result<Vec<Vec<Sample>>> {
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
        }
    }
    Ok(samples)
}

/// Tokens BERT sees for each batch size, padding included, over tokens without padding:
/// the texts are cut into the same batches as [`measure_flow`] cuts them, and each batch
/// is padded as `MiniLm::run` pads it (sorted by length, groups of at most 32 padded to
/// their longest).
fn padding(lens: &[usize], sizes: &[usize]) -> Vec<f64> {
    let n = lens.len();
    sizes
        .iter()
        .map(|&b| {
            let (mut real, mut padded) = (0usize, 0usize);
            // n batches starting at multiples of b cover every start a run can see.
            for k in 0..n {
                let mut batch: Vec<usize> = (0..b).map(|j| lens[(k * b + j) % n]).collect();
                batch.sort_unstable();
                real += batch.iter().sum::<usize>();
                padded += batch
                    .chunks(32)
                    .map(|c| c.len() * c.last().copied().unwrap_or(0))
                    .sum::<usize>();
            }
            padded as f64 / real.max(1) as f64
        })
        .collect()
}

/// Tokens of each text, [CLS] and [SEP] included.
fn token_counts(flow: &MiniLm, texts: &[&str]) -> anyhow::Result<Vec<usize>> {
    texts
        .iter()
        .map(|t| flow.token_ids(t, 256).map(|ids| ids.len()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("tokenizing: {}", e.message()))
}

// ---------------------------------------------------------------------------------------
// Part B: through the worker's dynamic batching
// ---------------------------------------------------------------------------------------

/// `text.minilm@1` as the worker sees it, counting the batches it is given.
struct Recorder {
    inner: Arc<MiniLm>,
    forwards: AtomicU64,
    items: AtomicU64,
}

impl Recorder {
    fn reset(&self) {
        self.forwards.store(0, Ordering::Relaxed);
        self.items.store(0, Ordering::Relaxed);
    }

    fn mean_batch(&self) -> f64 {
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
fn check_answer(r: &api::GetFeaturesResponse) -> Result<(), String> {
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
struct Load {
    /// Calls answered correctly by the end of the window.
    in_window: u64,
    /// Latencies of every call sent in the window and answered correctly.
    hist: Histogram<u64>,
    failures: u64,
    first_failure: Option<String>,
}

/// `callers` tasks sending SYNC GetFeatures calls one after another for `window`, each for
/// a new entity (so a miss), cycling through `texts`.
async fn load(
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
async fn measure_worker(
    s: &Settings,
    flow: &Arc<MiniLm>,
    batch: usize,
    next: &Arc<AtomicU64>,
    texts: &Arc<[&'static str]>,
) -> anyhow::Result<Sample> {
    let mut config = fstore::Config::default();
    config.server.default_tenant = Some("bench".into());
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

async fn run_worker_part(
    s: &Settings,
    flow: &Arc<MiniLm>,
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

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The median of each column over the runs of one batch size.
fn median(runs: &[Sample]) -> Sample {
    Sample {
        per_sec: median_f64(runs.iter().map(|r| r.per_sec).collect()),
        p50_us: median_u64(runs.iter().map(|r| r.p50_us).collect()),
        p99_us: median_u64(runs.iter().map(|r| r.p99_us).collect()),
        mean_batch: median_f64(runs.iter().map(|r| r.mean_batch).collect()),
    }
}

/// What one table shows besides the common columns.
enum Extra<'a> {
    /// Part A: tokens with padding over tokens without, per batch size.
    Padding(&'a [f64]),
    /// Part B: callers and texts per forward pass.
    Worker,
}

/// Prints the table of one part and the verdicts; true when every batched size meets
/// the target.
fn report(s: &Settings, part: &str, runs: &[Vec<Sample>], extra: Extra<'_>) -> bool {
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
                "| batch | embeddings/s | p50 ms | p99 ms | vs batch {base_size} | tokens padded / real |"
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
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    let dir = model_dir()?;
    let flow = Arc::new(MiniLm::new(dir));
    let t = Instant::now();
    let first = flow.run(&[flow_input(SENTENCES[0])]);
    match first.first() {
        Some(out) => {
            check_output(out).map_err(|e| anyhow::anyhow!("the first embedding is {e}"))?
        }
        None => bail!("the flow answered nothing for one input"),
    }
    eprintln!(
        "model loaded from {} and first text embedded in {:.2} s",
        flow.model_folder().display(),
        t.elapsed().as_secs_f64()
    );

    let all_lens = token_counts(&flow, &SENTENCES)?;
    let texts: Arc<[&'static str]> = if s.uniform {
        let mean = all_lens.iter().sum::<usize>() as f64 / all_lens.len().max(1) as f64;
        let nearest = (0..SENTENCES.len())
            .min_by(|&a, &b| {
                (all_lens[a] as f64 - mean)
                    .abs()
                    .total_cmp(&(all_lens[b] as f64 - mean).abs())
            })
            .unwrap_or(0);
        vec![SENTENCES[nearest]; SENTENCES.len()].into()
    } else {
        SENTENCES.to_vec().into()
    };
    let lens = token_counts(&flow, &texts)?;

    let load_before = load_average();
    let flow_runs = if s.flow_part {
        Some(run_flow_part(&s, &flow, &texts)?)
    } else {
        None
    };
    let worker_runs = if s.worker_part {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        Some(runtime.block_on(run_worker_part(&s, &flow, &texts))?)
    } else {
        None
    };

    let load_after = load_average();
    let pad = padding(&lens, &s.sizes);

    println!();
    println!(
        "text.minilm@1 (all-MiniLM-L6-v2, candle, CPU), {} CPUs, load average {load_before} before and {load_after} after; \
         {}; median of {} run(s) per row, each column on its own",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if s.uniform {
            format!(
                "every text the same sentence of {} tokens (BATCHING_UNIFORM=1: no padding)",
                lens.first().copied().unwrap_or(0)
            )
        } else {
            format!(
                "texts cycle through {} sentences of 8 to 40 words ({} to {} tokens, mean {:.1}, [CLS] and [SEP] included)",
                SENTENCES.len(),
                lens.iter().min().copied().unwrap_or(0),
                lens.iter().max().copied().unwrap_or(0),
                lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64,
            )
        },
        s.median_of,
    );
    let mut met = true;
    if let Some(runs) = &flow_runs {
        met &= report(
            &s,
            &format!(
                "A. the flow alone: MiniLm::run on one batch after another for {:.1} s per size; latency = one batched call",
                s.flow_secs
            ),
            runs,
            Extra::Padding(&pad),
        );
    }
    if let Some(runs) = &worker_runs {
        met &= report(
            &s,
            &format!(
                "B. end to end: SYNC GetFeatures (1 entity, a miss) from {} caller(s) per unit of max_batch, worker with 1 slot, max_wait {} ms, {:.1} s per size after {:.1} s warm-up; latency = one call",
                s.callers_per_slot,
                s.max_wait.as_millis(),
                s.e2e_secs,
                s.warmup_secs
            ),
            runs,
            Extra::Worker,
        );
    }
    println!();
    println!(
        "target batched ≥ {TARGET_RATIO}× batch {}: {}",
        s.sizes[0],
        if met { "met" } else { "NOT met" }
    );
    Ok(())
}
