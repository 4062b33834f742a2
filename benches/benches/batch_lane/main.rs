//! The batch lane against interactive traffic, on a real nats-server: the p50/p99 of
//! sequential SYNC misses of a cheap feature (`test.probe@1`) with no backfill running,
//! then the same while a backfill of `BATCH_LANE_ENTITIES` entities of another cheap
//! feature saturates the workers, and the backfill's throughput (nodes per second, from
//! its own record) once it ends. The 2× target: the loaded p99 within twice the unloaded.
//!
//! `NATS_SERVER_BIN=$(scripts/install-nats) cargo bench -p fstore-benches --bench batch_lane`.
//! Environment overrides:
//! - `BATCH_LANE_ENTITIES` (100000): the backfill's entities
//! - `BATCH_LANE_SEQ` (300): sequential interactive misses measured per phase, after
//!   `BATCH_LANE_WARMUP` (20)
//! - `BATCH_LANE_SLOTS` (4): `worker.slots`
//! - `BATCH_LANE_WINDOW` (`backfill.window`'s default): chunks the backfill has in flight
//! - `BATCH_LANE_MAX_SECS` (600): bound on the backfill's run

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fstore::client::Client;
use fstore_benches::{Call, Latency, env, sequential};
use fstore_proto::api::{self, BackfillState};
use fstore_tests::nats::NatsServer;

const TENANT: &str = "bench";

struct Settings {
    entities: usize,
    seq: usize,
    warmup: usize,
    slots: usize,
    window: usize,
    max_secs: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let s = Settings {
            entities: env("BATCH_LANE_ENTITIES", 100_000)?,
            seq: env("BATCH_LANE_SEQ", 300)?,
            warmup: env("BATCH_LANE_WARMUP", 20)?,
            slots: env("BATCH_LANE_SLOTS", 4)?,
            window: env(
                "BATCH_LANE_WINDOW",
                fstore::Config::default().backfill.window,
            )?,
            max_secs: env("BATCH_LANE_MAX_SECS", 600)?,
        };
        ensure!(
            s.entities > 0 && s.seq > 0 && s.slots > 0,
            "BATCH_LANE_ENTITIES, BATCH_LANE_SEQ and BATCH_LANE_SLOTS must be above zero"
        );
        Ok(s)
    }
}

/// A SYNC GetFeatures of `bench.interactive` for a new entity: must answer READY,
/// computed for the call.
#[derive(Clone)]
struct Miss {
    client: Client,
    prefix: &'static str,
    next: u64,
}

impl Call for Miss {
    async fn call(&mut self) -> Result<(), String> {
        self.next += 1;
        let req = api::GetFeaturesRequest {
            entities: vec![api::EntityRequest {
                entity_id: format!("{}{}", self.prefix, self.next),
                ..Default::default()
            }],
            features: vec!["bench.interactive".into()],
            mode: api::Mode::Sync as i32,
            wait_ms: 10_000,
            ..Default::default()
        };
        let r = self
            .client
            .get_features(req)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        match r.results.as_slice() {
            [one] if one.status() == api::Status::Ready && !one.from_cache => Ok(()),
            other => Err(format!("answered {other:?}")),
        }
    }
}

fn row(name: &str, l: &Latency, unloaded_p99: u64) -> String {
    format!(
        "| {name} | {} | {} | {:.2}× | {} |",
        l.p50_us(),
        l.p99_us(),
        l.p99_us() as f64 / unloaded_p99.max(1) as f64,
        l.histogram.len()
    )
}

async fn run(s: &Settings) -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut config = fstore_tests::test_config();
    config.server.default_tenant = Some(TENANT.into());
    config.worker.slots = s.slots;
    config.backfill.window = s.window.max(1);
    config.queue.max_queued_per_tenant = config.queue.max_queued_per_flow;
    let running = fstore_tests::start_on_nats(config, &nats.url()).await?;
    let mut client = Client::connect(&running.url(), None).await?;
    client
        .register_file(
            "[[feature]]\nname = \"bench.interactive\"\nentity_type = \"e\"\nflow = \"test.probe@1\"\nttl = \"1h\"\nparams = { value = \"1\" }\n\n\
             [[feature]]\nname = \"bench.bulk\"\nentity_type = \"e\"\nflow = \"test.probe@1\"\nttl = \"1h\"\nparams = { value = \"2\" }\n",
        )
        .await?;

    let mut quiet = Miss {
        client: client.clone(),
        prefix: "q",
        next: 0,
    };
    let unloaded = sequential(&mut quiet, s.warmup, s.seq).await;
    eprintln!("batch_lane: unloaded misses measured; starting the backfill");
    ensure!(
        unloaded.failures.count == 0,
        "unloaded misses failed: {:?}",
        unloaded.failures.first
    );

    let entities: Vec<api::EntityRequest> = (0..s.entities)
        .map(|i| api::EntityRequest {
            entity_id: format!("b{i}"),
            ..Default::default()
        })
        .collect();
    let started = Instant::now();
    let backfill = client
        .start_backfill(vec!["bench.bulk".into()], None, entities)
        .await?;
    // Measure once the backfill has the workers busy.
    loop {
        let b = client.get_backfill(backfill.id.clone()).await?;
        if b.done >= 1_000 || b.state() != BackfillState::Running {
            break;
        }
        if started.elapsed() > Duration::from_secs(s.max_secs) {
            bail!("the backfill made no progress in {} s", s.max_secs);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut loaded_caller = Miss {
        client: client.clone(),
        prefix: "l",
        next: 0,
    };
    let loaded = sequential(&mut loaded_caller, s.warmup, s.seq).await;
    let during = client.get_backfill(backfill.id.clone()).await?;
    ensure!(
        during.state() == BackfillState::Running,
        "the backfill ended before the loaded measurement did: raise BATCH_LANE_ENTITIES"
    );
    ensure!(
        loaded.failures.count == 0,
        "loaded misses failed: {:?}",
        loaded.failures.first
    );
    eprintln!(
        "batch_lane: loaded misses measured; the backfill is at {}/{}",
        during.done, during.total
    );
    let done = loop {
        let b = client.get_backfill(backfill.id.clone()).await?;
        if b.state() != BackfillState::Running {
            break b;
        }
        if started.elapsed() > Duration::from_secs(s.max_secs) {
            bail!("the backfill did not end within {} s: {b:?}", s.max_secs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        done.state() == BackfillState::Done && done.done == s.entities as u64,
        "the backfill ended {done:?}"
    );
    let secs = (done.finished_at_ms - done.created_at_ms) as f64 / 1000.0;

    println!();
    println!(
        "interactive SYNC misses (test.probe@1) on NATS, {} sequential after {} warm-up, worker.slots = {}, backfill.window = {}, while a backfill of {} entities of another test.probe feature runs; {} CPUs",
        s.seq,
        s.warmup,
        s.slots,
        s.window,
        s.entities,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| interactive misses | p50 µs | p99 µs | p99 vs unloaded | calls |");
    println!("|---|---:|---:|---:|---:|");
    println!("{}", row("no backfill", &unloaded, unloaded.p99_us()));
    println!(
        "{}",
        row(
            "backfill saturating the workers",
            &loaded,
            unloaded.p99_us()
        )
    );
    println!();
    println!(
        "backfill: {} nodes in {secs:.1} s = {:.0} nodes/s ({} done, {} failed, {} skipped)",
        done.total,
        done.total as f64 / secs.max(1e-9),
        done.done,
        done.failed,
        done.skipped
    );
    running.shutdown().await;
    drop(nats);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    let rt = tokio::runtime::Runtime::new().context("building the tokio runtime")?;
    rt.block_on(run(&s))
}
