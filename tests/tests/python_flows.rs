//! Flows written in Python (flows-python, `fstore-flow`), served by a sidecar process
//! beside the Rust worker, end to end over gRPC on `fstore dev` and on a `worker --nats`
//! behind `serve --nats`. Sidecars that crash, hang or answer garbage mid-batch are
//! killed and started again, and their jobs end READY (nothing lost); modules that fail
//! to import, declare an invalid spec or clash with a built-in flow are refused at
//! start with what to fix, while the other flows are served.
//!
//! Needs the tests' venv with fstore-flow installed: `scripts/test` makes it
//! (scripts/python-venv) and sets FSTORE_PYTHON.

use std::path::PathBuf;
use std::time::Duration;

use fstore_proto::api::{self, Status, value::Kind};
use fstore_tests::build::{self, entity, feature};
use fstore_tests::nats::NatsServer;
use fstore_tests::process::{dev, open_worker_and_serve};
use fstore_tests::{TestClient, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// The venv the tests' Python runs in (FSTORE_PYTHON is its `bin/python`).
fn venv() -> anyhow::Result<String> {
    let python = std::env::var_os("FSTORE_PYTHON").ok_or_else(|| {
        anyhow::anyhow!(
            "FSTORE_PYTHON is not set: run the tests with scripts/test (it makes the venv)"
        )
    })?;
    let venv = PathBuf::from(python)
        .parent()
        .and_then(|bin| bin.parent())
        .ok_or_else(|| anyhow::anyhow!("FSTORE_PYTHON is not a venv's bin/python"))?
        .to_path_buf();
    Ok(venv.display().to_string())
}

/// A test module of tests/python/flows.
fn module(name: &str) -> String {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    manifest
        .join("python/flows")
        .join(format!("{name}.py"))
        .display()
        .to_string()
}

fn f64_input(x: f64) -> api::Value {
    api::Value {
        kind: Some(Kind::F64(x)),
    }
}

async fn ask(
    c: &TestClient,
    feature: &str,
    id: &str,
    x: f64,
) -> anyhow::Result<api::FeatureResult> {
    let mut req = build::sync(&[], &[feature], 30_000);
    req.entities = vec![entity(id, &[("x", f64_input(x))])];
    let r = c.get(req).await?;
    r.results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no result"))
}

/// The flows of good.py and clash.py are listed and compute; a negative x fails its item
/// with the flow's message.
async fn serves_the_python_flows(c: &TestClient) -> anyhow::Result<()> {
    let flows = wait_until(LONG, "the Python flows to be advertised", || async {
        let flows = c.list_flows().await.ok()?;
        (flows
            .iter()
            .any(|f| f.name == "py.double" && f.live_workers > 0))
        .then_some(flows)
    })
    .await?;
    let double = flows
        .iter()
        .find(|f| f.name == "py.double")
        .ok_or_else(|| anyhow::anyhow!("py.double not listed"))?;
    assert_eq!(double.description, "2·x + offset; a negative x is refused.");
    let sidecar = double
        .models
        .first()
        .ok_or_else(|| anyhow::anyhow!("no sidecar status: {double:?}"))?;
    assert!(sidecar.loaded && sidecar.loads == 1, "{sidecar:?}");
    assert!(
        flows.iter().any(|f| f.name == "py.length"),
        "clash.py's other flow"
    );
    assert!(!flows.iter().any(|f| f.name == "py.bad"));
    c.register(feature(
        "d",
        "py.double@1",
        &[("offset", "0.5")],
        &[("x", "request:x")],
        600_000,
    ))
    .await?;
    let r = ask(c, "d", "a", 3.0).await?;
    assert_eq!(r.status(), Status::Ready, "{r:?}");
    assert_eq!(fstore_tests::build::f64_of(&r), Some(6.5));
    // A feature that leaves the param out gets the flow's declared default.
    c.register(feature(
        "d0",
        "py.double@1",
        &[],
        &[("x", "request:x")],
        600_000,
    ))
    .await?;
    let r = ask(c, "d0", "a", 3.0).await?;
    assert_eq!(fstore_tests::build::f64_of(&r), Some(6.0), "{r:?}");
    let r = ask(c, "d", "b", -1.0).await?;
    assert_eq!(r.status(), Status::Failed, "{r:?}");
    assert!(r.error.contains("x = -1.0 is negative"), "{r:?}");
    // Tensors in and out as numpy arrays.
    c.register(feature(
        "u",
        "py.unit@1",
        &[],
        &[("v", "request:v")],
        600_000,
    ))
    .await?;
    let mut req = build::sync(&[], &["u"], 30_000);
    let v = api::Value {
        kind: Some(Kind::Tensor(api::Tensor {
            shape: vec![2],
            data: vec![3.0, 4.0],
        })),
    };
    req.entities = vec![entity("t", &[("v", v)])];
    let r = c.get(req).await?;
    match r.results[0].value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(Kind::Tensor(t)) => {
            assert_eq!((t.shape.clone(), t.data.clone()), (vec![2], vec![0.6, 0.8]))
        }
        other => anyhow::bail!("not a tensor: {other:?} ({r:?})"),
    }
    Ok(())
}

fn refusals_in(log: &str) -> Vec<&'static str> {
    [
        ("bad_spec.py", "output type 'float'"),
        ("import_error.py", "fstore_no_such_module"),
        ("text.minilm@1 refused", "built-in flow"),
    ]
    .into_iter()
    .filter(|(what, why)| !(log.contains(what) && log.contains(why)))
    .map(|(what, _)| what)
    .collect()
}

fn python_args(venv: &str) -> Vec<String> {
    let mut args = vec!["--venv".to_string(), venv.to_string()];
    for m in ["good", "bad_spec", "import_error", "clash"] {
        args.push("--python".into());
        args.push(module(m));
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_serves_python_flows_and_refuses_bad_modules() -> anyhow::Result<()> {
    let venv = venv()?;
    let dir = tempfile::tempdir()?;
    let args = python_args(&venv);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (dev, url) = dev(&args, &[], dir.path()).await?;
    let missing = refusals_in(&dev.log_text());
    assert!(
        missing.is_empty(),
        "not refused: {missing:?}; log: {}",
        dev.log_text()
    );
    let c = TestClient::connect(&url, None).await?;
    serves_the_python_flows(&c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_serves_python_flows_over_nats() -> anyhow::Result<()> {
    let venv = venv()?;
    let nats = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let args = python_args(&venv);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (worker, _serve, addr) = open_worker_and_serve(&nats.url(), &args, dir.path()).await?;
    let c = TestClient::connect(&addr, None).await?;
    serves_the_python_flows(&c).await?;
    let missing = refusals_in(&worker.log_text());
    assert!(
        missing.is_empty(),
        "not refused: {missing:?}; log: {}",
        worker.log_text()
    );
    Ok(())
}

/// A sidecar that crashes, hangs past the batch timeout, or writes garbage mid-batch is
/// killed and started again, and the batch's job is retried to READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misbehaving_sidecars_are_restarted_and_lose_no_job() -> anyhow::Result<()> {
    let venv = venv()?;
    let dir = tempfile::tempdir()?;
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers)?;
    let markers = markers.display().to_string();
    let misbehave = module("misbehave");
    let (dev, url) = dev(
        &["--venv", &venv, "--python", &misbehave],
        &[
            ("FSTORE_TEST_MARKERS", markers.as_str()),
            ("FSTORE_SIDECAR__BATCH_TIMEOUT", "1s"),
            ("FSTORE_SIDECAR__RESTART_BASE", "100ms"),
            ("FSTORE_WORKER__RETRY_BASE", "50ms"),
        ],
        dir.path(),
    )
    .await?;
    let c = TestClient::connect(&url, None).await?;
    for (name, flow, plus) in [
        ("crash", "py.crash_once@1", 1.0),
        ("hang", "py.hang_once@1", 2.0),
        ("garbage", "py.garbage_once@1", 3.0),
    ] {
        c.register(feature(name, flow, &[], &[("x", "request:x")], 600_000))
            .await?;
        let r = ask(&c, name, name, 10.0).await?;
        assert_eq!(r.status(), Status::Ready, "{name}: {r:?}");
        assert_eq!(fstore_tests::build::f64_of(&r), Some(10.0 + plus), "{name}");
        assert!(r.attempts >= 2, "{name}: retried, {r:?}");
    }
    // As of the worker's next heartbeat: three restarts.
    wait_until(
        LONG,
        "the sidecar's status to show three restarts",
        || async {
            let flows = c.list_flows().await.ok()?;
            let status = flows
                .iter()
                .find(|f| f.name == "py.crash_once")
                .and_then(|f| f.models.first().cloned())?;
            (status.loaded && status.loads == 4).then_some(())
        },
    )
    .await?;
    let log = dev.log_text();
    for says in ["exited", "did not answer within 1s", "over the"] {
        assert!(
            log.contains(says),
            "the log says nothing of `{says}`: {log}"
        );
    }
    Ok(())
}

/// The worked example of examples/python-flow: its numpy re-ranker over two embedding
/// features of a built-in Rust flow, registered from its features.toml.
fn example(file: &str) -> String {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    manifest
        .join("../examples/python-flow")
        .join(file)
        .display()
        .to_string()
}

/// doc.relevance is sigmoid(cos(query, doc) / 0.2) of the two vectors the same call
/// answers.
async fn the_example_ranks(c: &TestClient) -> anyhow::Result<()> {
    let text = |s: &str| api::Value {
        kind: Some(Kind::String(s.to_string())),
    };
    let mut req = build::sync(
        &[],
        &["doc.relevance", "doc.query_vec", "doc.text_vec"],
        30_000,
    );
    req.entities = vec![entity(
        "d1",
        &[
            ("text", text("a red fox jumps over the lazy dog")),
            ("query", text("red fox")),
        ],
    )];
    let r = wait_until(LONG, "the example's features", || async {
        let r = c.get(req.clone()).await.ok()?;
        r.results
            .iter()
            .all(|x| x.status() == Status::Ready)
            .then_some(r)
    })
    .await?;
    let vector = |i: usize| match r.results[i].value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(Kind::Tensor(t)) => Ok(t.data.iter().map(|x| f64::from(*x)).collect::<Vec<_>>()),
        other => Err(anyhow::anyhow!("not a tensor: {other:?}")),
    };
    let (q, d) = (vector(1)?, vector(2)?);
    let dot: f64 = q.iter().zip(&d).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let want = 1.0 / (1.0 + (-(dot / (norm(&q) * norm(&d))) / 0.2).exp());
    let got = fstore_tests::build::f64_of(&r.results[0])
        .ok_or_else(|| anyhow::anyhow!("no relevance: {r:?}"))?;
    assert!(
        (got - want).abs() < 1e-6,
        "relevance {got}, expected {want}"
    );
    assert!(got > 0.5, "the query's words are in the text");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_flow_example_runs_on_dev_and_on_a_worker() -> anyhow::Result<()> {
    let venv = venv()?;
    let (flow, features) = (example("rerank.py"), example("features.toml"));
    let dir = tempfile::tempdir()?;
    let (_dev, url) = dev(
        &["--venv", &venv, "--python", &flow, "--features", &features],
        &[],
        dir.path(),
    )
    .await?;
    the_example_ranks(&TestClient::connect(&url, None).await?).await?;

    let nats = NatsServer::start()?;
    let (_worker, _serve, addr) = open_worker_and_serve(
        &nats.url(),
        &["--venv", &venv, "--python", &flow],
        dir.path(),
    )
    .await?;
    let c = TestClient::connect(&addr, None).await?;
    wait_until(LONG, "the worker to advertise py.rerank", || async {
        let flows = c.list_flows().await.ok()?;
        flows
            .iter()
            .any(|f| f.name == "py.rerank" && f.live_workers > 0)
            .then_some(())
    })
    .await?;
    let registered = std::process::Command::new(fstore_tests::process::fstore_binary()?)
        .args(["--addr", &addr, "register", &features])
        .output()?;
    anyhow::ensure!(
        registered.status.success(),
        "fstore register: {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    the_example_ranks(&c).await
}
