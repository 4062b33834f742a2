//! What a flow in Python costs next to the same flow in Rust: the built-in `num.affine`
//! and `py.affine` (the same `scale · x + offset` in numpy, `affine.py` beside this file)
//! served by a sidecar, measured in the same run.
//!
//! - A. The flow alone, as the worker calls it (`Flow::run` on one batch after another):
//!   latency per batch of 1 and of 16 items, and what the sidecar adds per batch.
//! - B. Through the worker: an embedded server, SYNC calls of 16 new entities each from
//!   4 callers at once; jobs per second end to end, Rust flow vs Python flow.
//!
//! `cargo bench -p fstore-benches --bench python_flow` (needs FSTORE_PYTHON, the venv's
//! python with fstore-flow: `FSTORE_PYTHON=$(scripts/python-venv)`). Environment:
//! `PY_BENCH_BATCHES` (2000) batches per case in A, `PY_BENCH_CALLS` (2000) calls per
//! flow in B, `PY_BENCH_SECS` (20) bound on each case's time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use fstore_benches::env;
use fstore_flows::{Catalog, Flow, FlowId, FlowInput, Params, Value};
use fstore_proto::api::{self, Status, value::Kind};
use fstore_substrate::worker::sidecar::{Sidecar, SidecarOptions};
use fstore_tests::TestClient;
use fstore_tests::build::{self, entity, feature};
use hdrhistogram::Histogram;

const SIZES: [usize; 2] = [1, 16];
const CALLERS: usize = 4;
const ENTITIES_PER_CALL: usize = 16;

fn venv() -> anyhow::Result<PathBuf> {
    let python = std::env::var_os("FSTORE_PYTHON")
        .context("set FSTORE_PYTHON to a venv's python with fstore-flow: FSTORE_PYTHON=$(scripts/python-venv)")?;
    PathBuf::from(python)
        .parent()
        .and_then(|bin| bin.parent())
        .map(PathBuf::from)
        .context("FSTORE_PYTHON is not a venv's bin/python")
}

fn batch(n: usize, round: usize) -> Vec<FlowInput> {
    (0..n)
        .map(|i| FlowInput {
            entity_id: format!("e{i}"),
            params: Params::new(BTreeMap::from([("scale".into(), "2".into())])),
            values: BTreeMap::from([("x".into(), Value::F64((round * n + i) as f64))]),
            attempt: 1,
        })
        .collect()
}

/// Per-batch latency of `flow` over `batches` batches of `n` (bounded by `secs`).
fn time_flow(
    flow: &dyn Flow,
    n: usize,
    batches: usize,
    secs: f64,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    for round in 0..20 {
        flow.run(&batch(n, round)); // warm-up
    }
    let started = Instant::now();
    for round in 0..batches {
        let input = batch(n, round);
        let t = Instant::now();
        let out = flow.run(&input);
        h.record(t.elapsed().as_nanos() as u64)?;
        anyhow::ensure!(
            out.iter().all(Result::is_ok),
            "{}: {:?}",
            flow.spec().id,
            out.first()
        );
        if started.elapsed().as_secs_f64() > secs {
            break;
        }
    }
    Ok(h)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Jobs per second through an embedded server: `calls` SYNC calls of 16 entities new
/// to this `run`.
async fn through_worker(
    c: &TestClient,
    feature: &str,
    run: &str,
    calls: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let per_caller = calls / CALLERS;
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let c = c.clone();
        let feature = feature.to_string();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut jobs = 0usize;
            for call in 0..per_caller {
                if started.elapsed().as_secs_f64() > secs {
                    break;
                }
                let mut req = build::sync(&[], &[feature.as_str()], 30_000);
                req.entities = (0..ENTITIES_PER_CALL)
                    .map(|i| {
                        let x = api::Value {
                            kind: Some(Kind::F64((caller * 1_000_000 + call * 100 + i) as f64)),
                        };
                        entity(&format!("{feature}-{run}-{caller}-{call}-{i}"), &[("x", x)])
                    })
                    .collect();
                let r = c.get(req).await?;
                anyhow::ensure!(
                    r.results.iter().all(|x| x.status() == Status::Ready),
                    "{:?}",
                    r.results.first()
                );
                jobs += r.results.len();
            }
            anyhow::Ok(jobs)
        }));
    }
    let mut jobs = 0;
    for t in tasks {
        jobs += t.await??;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let batches: usize = env("PY_BENCH_BATCHES", 2000)?;
    let calls: usize = env("PY_BENCH_CALLS", 2000)?;
    let secs: f64 = env("PY_BENCH_SECS", 20.0)?;
    let venv = venv()?;
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python_flow/affine.py");
    let sidecar = Sidecar::start(SidecarOptions {
        command: SidecarOptions::python(&venv, &module.display().to_string()),
        start_timeout: Duration::from_secs(60),
        batch_timeout: Duration::from_secs(30),
        restart_base: Duration::from_millis(500),
        restart_max: Duration::from_secs(5),
    })?;
    let python = sidecar
        .flows()
        .into_iter()
        .next()
        .context("the sidecar declares no flow")?;
    let builtins = Catalog::builtins();
    let rust = builtins
        .get(&FlowId::new("num.affine", 1))
        .context("num.affine is built in")?
        .clone();

    println!("A. the flow alone (Flow::run, one batch after another), {batches} batches per size");
    println!(
        "| batch | Rust p50 µs | Rust p99 µs | Python p50 µs | Python p99 µs | added per batch (p50) µs | Python items/s | Rust items/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in SIZES {
        let r = time_flow(rust.as_ref(), n, batches, secs)?;
        let p = time_flow(python.as_ref(), n, batches, secs)?;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            us(r.value_at_quantile(0.5)),
            us(r.value_at_quantile(0.99)),
            us(p.value_at_quantile(0.5)),
            us(p.value_at_quantile(0.99)),
            us(p.value_at_quantile(0.5)) - us(r.value_at_quantile(0.5)),
            n as f64 / (p.mean() / 1e9),
            n as f64 / (r.mean() / 1e9),
        );
    }

    let catalog = Catalog::builtins().with(python.clone());
    let mut config = fstore_tests::test_config();
    config.worker.slots = 2;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = fstore::server::start_embedded(config, catalog, listener).await?;
    let c = TestClient::connect(&running.url(), None).await?;
    for (name, flow) in [("rust", "num.affine@1"), ("python", "py.affine@1")] {
        c.register(feature(
            name,
            flow,
            &[("scale", "2")],
            &[("x", "request:x")],
            600_000,
        ))
        .await?;
    }
    println!();
    println!(
        "B. through the worker: SYNC calls of {ENTITIES_PER_CALL} new entities, {CALLERS} callers, {calls} calls per flow"
    );
    println!("| flow | jobs/s | ratio to Rust |");
    println!("|---|---:|---:|");
    through_worker(&c, "rust", "warm", 40, secs).await?;
    through_worker(&c, "python", "warm", 40, secs).await?;
    let rust_rate = through_worker(&c, "rust", "run", calls, secs).await?;
    let py_rate = through_worker(&c, "python", "run", calls, secs).await?;
    println!("| num.affine (Rust) | {rust_rate:.0} | 1.00 |");
    println!(
        "| py.affine (Python sidecar) | {py_rate:.0} | {:.2} |",
        py_rate / rust_rate
    );
    running.shutdown().await;
    Ok(())
}
