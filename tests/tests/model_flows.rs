//! Model flows without code, end to end over gRPC: a flow file declares a
//! sentence-transformers folder (`kind = "sentence-transformer"`, here the MiniLM one
//! from scripts/fetch-model) as a flow of its own, served by `fstore dev` and by a
//! `worker --nats` behind `serve --nats`. Its embeddings equal the built-in
//! `text.minilm`'s; an entry the process cannot serve is refused at start with what to
//! fix, and everything else is served.

use std::path::PathBuf;
use std::time::Duration;

use fstore_proto::api::{self, Status, value::Kind};
use fstore_tests::build::{self, entity, feature, text};
use fstore_tests::nats::NatsServer;
use fstore_tests::process::{dev, open_worker_and_serve};
use fstore_tests::{TestClient, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// The MiniLM folder the test command fetched (`scripts/fetch-model`).
fn minilm_folder() -> PathBuf {
    let models = std::env::var_os("FSTORE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
            manifest.join("../.data/models")
        });
    models.join("all-minilm-l6-v2")
}

/// A flow file with a servable entry and one whose folder does not exist.
fn flow_file(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let folder = minilm_folder();
    anyhow::ensure!(
        folder.join("model.safetensors").is_file(),
        "{} has no model: run scripts/fetch-model",
        folder.display()
    );
    let path = dir.join("flows.toml");
    std::fs::write(
        &path,
        format!(
            "[[flow]]\nname = \"text.configured\"\nkind = \"sentence-transformer\"\n\
             path = {:?}\nmodel = \"configured MiniLM\"\n\n\
             [[flow]]\nname = \"text.broken\"\nkind = \"sentence-transformer\"\n\
             path = \"no-such-folder\"\n",
            folder.display().to_string()
        ),
    )?;
    Ok(path)
}

fn tensor(r: &api::FeatureResult) -> anyhow::Result<Vec<f32>> {
    match r.value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(Kind::Tensor(t)) => Ok(t.data.clone()),
        other => anyhow::bail!("{}: not a tensor: {other:?} ({r:?})", r.feature),
    }
}

/// The configured flow is listed with its model, the broken one is not, and the two
/// flows embed a text alike.
async fn serves_the_configured_flow(c: &TestClient) -> anyhow::Result<()> {
    let flows = wait_until(LONG, "the configured flow to be advertised", || async {
        let flows = c.list_flows().await.ok()?;
        flows
            .iter()
            .any(|f| f.name == "text.configured" && f.live_workers > 0)
            .then_some(flows)
    })
    .await?;
    let configured = flows
        .iter()
        .find(|f| f.name == "text.configured")
        .ok_or_else(|| anyhow::anyhow!("not listed"))?;
    assert!(
        configured
            .description
            .contains("[384], mean pooling, L2-normalised"),
        "{configured:?}"
    );
    assert_eq!(
        configured.models.first().map(|m| m.name.as_str()),
        Some("configured MiniLM")
    );
    assert!(!flows.iter().any(|f| f.name == "text.broken"), "{flows:?}");
    for (name, flow) in [
        ("doc.configured", "text.configured@1"),
        ("doc.builtin", "text.minilm@1"),
    ] {
        c.register(feature(
            name,
            flow,
            &[],
            &[("text", "request:text")],
            600_000,
        ))
        .await?;
    }
    let mut req = build::sync(&[], &["doc.configured", "doc.builtin"], 30_000);
    req.entities = vec![entity(
        "d1",
        &[("text", text("a model flow needs no code at all"))],
    )];
    let r = c.get(req).await?;
    for result in &r.results {
        assert_eq!(result.status(), Status::Ready, "{result:?}");
    }
    let (configured, builtin) = (tensor(&r.results[0])?, tensor(&r.results[1])?);
    assert_eq!(configured.len(), 384);
    let diff = configured
        .iter()
        .zip(&builtin)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-6, "max |diff| {diff:e}");
    Ok(())
}

fn refused_in(log: &str) -> bool {
    log.contains("flow text.broken@1 refused") && log.contains("no-such-folder")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_serves_a_flow_declared_in_a_flow_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = flow_file(dir.path())?;
    let file = file.display().to_string();
    let (dev, url) = dev(&["--flow-file", &file], &[], dir.path()).await?;
    assert!(refused_in(&dev.log_text()), "{}", dev.log_text());
    let c = TestClient::connect(&url, None).await?;
    serves_the_configured_flow(&c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_serves_a_flow_declared_in_a_flow_file_over_nats() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let file = flow_file(dir.path())?;
    let file = file.display().to_string();
    let (worker, _serve, addr) = open_worker_and_serve(
        &nats.url(),
        &[
            "--flows",
            "text.configured,text.minilm",
            "--flow-file",
            &file,
        ],
        dir.path(),
    )
    .await?;
    wait_until(LONG, "the worker to refuse the broken entry", || async {
        refused_in(&worker.log_text()).then_some(())
    })
    .await?;
    let c = TestClient::connect(&addr, None).await?;
    serves_the_configured_flow(&c).await
}
