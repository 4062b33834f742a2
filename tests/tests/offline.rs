//! The offline half with real processes: `fstore dev` keeps its feature log across a
//! SIGKILL and a restart; `fstore export` writes Parquet and CSV that pyarrow reads (in
//! the venv `scripts/test` makes: `scripts/python-venv`), and a refused export says why
//! and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, entity, text};
use fstore_tests::process::{Proc, fstore_binary};
use fstore_tests::{TestClient, wait_until};
use serde_json::Value as Json;

/// The package's directory as the test runner gives it at run time (`cargo test` and
/// nextest set `CARGO_MANIFEST_DIR`), else as it was at build time: a test binary may be
/// reused from a build in another clone that shares the target directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

const LONG: Duration = Duration::from_secs(30);

fn demo_features() -> PathBuf {
    manifest_dir()
        .as_path()
        .join("../feature-store/examples/demo.toml")
}

/// `fstore dev` with its feature log in `log_dir`, registering the demo's features.
async fn dev(dir: &Path, log_dir: &Path, name: &str) -> anyhow::Result<(Proc, TestClient, String)> {
    let features = demo_features();
    let log_dir = log_dir.to_string_lossy().into_owned();
    let mut p = Proc::fstore(
        name,
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--features",
            &features.to_string_lossy(),
        ],
        &[("FSTORE_LOG__DIR", log_dir.as_str())],
        dir,
    )?;
    let url = p.listening(LONG).await?;
    let client = wait_until(LONG, "fstore dev to serve its features", || async {
        let c = TestClient::connect(&url, None).await.ok()?;
        c.describe("doc.words").await.ok().map(|_| c)
    })
    .await?;
    Ok((p, client, url))
}

/// SYNC `doc.words` and `doc.embedding` of `id` for `words`.
async fn compute(c: &TestClient, id: &str, words: &str) -> anyhow::Result<()> {
    let mut req = build::sync(&[], &["doc.words", "doc.embedding"], 10_000);
    req.entities = vec![entity(id, &[("text", text(words))])];
    let r = c.get(req).await?;
    for x in &r.results {
        anyhow::ensure!(x.status() == Status::Ready, "{x:?}");
    }
    Ok(())
}

fn sequences(log: &[api::LogEvent]) -> Vec<u64> {
    log.iter().map(|e| e.sequence).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_keeps_its_log_across_a_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    let (mut first, c, _) = dev(dir.path(), &log_dir, "dev-first").await?;
    for i in 0..3 {
        compute(&c, &format!("d{i}"), "one two three").await?;
    }
    let before = c.log(&["doc.words"], false).await?;
    assert_eq!(before.len(), 3);
    first.kill();

    let (_second, c, _) = dev(dir.path(), &log_dir, "dev-second").await?;
    let after = c.log(&["doc.words"], false).await?;
    assert_eq!(after, before, "every record kept, with its sequence");
    compute(&c, "d9", "four").await?;
    let more = c.log(&["doc.words"], false).await?;
    assert_eq!(more.len(), 4);
    let seqs = sequences(&more);
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "appends go on after the kept ones: {seqs:?}"
    );
    Ok(())
}

/// A python with pyarrow: `FSTORE_PYTHON`, which `scripts/test` sets.
fn python() -> anyhow::Result<PathBuf> {
    match std::env::var_os("FSTORE_PYTHON") {
        Some(p) => Ok(PathBuf::from(p)),
        None => bail!(
            "FSTORE_PYTHON is not set: run the tests with scripts/test, or set it to the \
             python that `scripts/python-venv` prints (a venv with pyarrow)"
        ),
    }
}

/// What pyarrow reads in an exported file (`tests/python/read_export.py`).
fn pyarrow_read(file: &Path) -> anyhow::Result<Json> {
    let script = manifest_dir().join("python/read_export.py");
    let out = Command::new(python()?).arg(script).arg(file).output()?;
    if !out.status.success() {
        bail!(
            "pyarrow could not read {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("read_export.py's output")
}

/// Runs `fstore --addr URL ARGS`: (exit code, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(fstore_binary()?)
        .arg("--addr")
        .arg(url)
        .args(args)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_are_files_pyarrow_reads() -> anyhow::Result<()> {
    python()?;
    let dir = tempfile::tempdir()?;
    let (_dev, c, url) = dev(dir.path(), &dir.path().join("log"), "dev").await?;
    for (id, words) in [("d1", "a"), ("d2", "a b"), ("d3", "a b c")] {
        compute(&c, id, words).await?;
    }
    let out = dir.path().join("range.parquet");
    let (code, stdout, stderr) = cli(
        &url,
        &[
            "export",
            "-f",
            "doc.words",
            "-f",
            "doc.embedding",
            "-o",
            &path(&out),
        ],
    )?;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote 6 rows"), "{stdout}");
    let t = pyarrow_read(&out)?;
    assert_eq!(t["rows"], 6);
    assert_eq!(t["types"]["doc.words"], "double");
    assert_eq!(
        t["types"]["doc.embedding"], "fixed_size_list<item: float not null>[64]",
        "a tensor is a fixed-size list of float32: {}",
        t["types"]
    );
    assert_eq!(t["types"]["computed_at"], "timestamp[ms, tz=UTC]");
    let words: Vec<Json> = t["values"]["doc.words"]
        .as_array()
        .context("words")?
        .iter()
        .filter(|v| !v.is_null())
        .cloned()
        .collect();
    assert_eq!(words, vec![1.0, 2.0, 3.0]);

    // A point-in-time join onto label events, as Parquet and as CSV.
    let now = fstore_substrate::time::now_ms();
    let labels = dir.path().join("labels.csv");
    std::fs::write(
        &labels,
        format!("entity_id,timestamp,clicked\nd1,{now},1\nd3,{now},0\nd7,{now},1\n"),
    )?;
    for name in ["train.parquet", "train.csv"] {
        let train = dir.path().join(name);
        let (code, stdout, stderr) = cli(
            &url,
            &[
                "export",
                "-f",
                "doc.words",
                "-f",
                "doc.embedding",
                "--labels",
                &path(&labels),
                "-o",
                &path(&train),
            ],
        )?;
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("wrote 3 rows"), "{stdout}");
        let t = pyarrow_read(&train)?;
        assert_eq!(t["rows"], 3, "{t}");
        assert_eq!(
            t["values"]["doc.words"],
            serde_json::json!([1.0, 3.0, null])
        );
        assert_eq!(t["values"]["clicked"], serde_json::json!([1, 0, 1]));
    }

    // Refusals: the status class and what to fix; nothing left at the destination.
    let never = dir.path().join("never.parquet");
    let (code, _, stderr) = cli(&url, &["export", "-f", "nope", "-o", &path(&never)])?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("error: NOT_FOUND: no feature named `nope`"),
        "{stderr}"
    );
    std::fs::write(&labels, "entity_id,timestamp\nd1,1000\nd2,\n")?;
    let (code, _, stderr) = cli(
        &url,
        &[
            "export",
            "-f",
            "doc.words",
            "--labels",
            &path(&labels),
            "-o",
            &path(&never),
        ],
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("INVALID_ARGUMENT") && stderr.contains("row 2, column `timestamp`"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(
        &url,
        &[
            "export",
            "-f",
            "doc.words",
            "--from",
            "2026-12-02T00:00:00Z",
            "--to",
            "2026-12-01T00:00:00Z",
            "-o",
            &path(&never),
        ],
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("backwards"), "{stderr}");
    let left: Vec<String> = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.starts_with("never"))
        .collect();
    assert!(left.is_empty(), "nothing half-written: {left:?}");
    Ok(())
}

/// The result-ready stream as the README documents it for other systems: any NATS client
/// reads `FSTORE_LOG` with a durable consumer of its own, filtered to
/// `fstore.log.<tenant>.<feature>.<version>` (names token-encoded: `.` is `_2E`), and
/// decodes each message as a `featurestore.v1.LogRecord` whose stream sequence is the
/// event's cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_nats_client_reads_the_event_stream_with_its_own_consumer() -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures::StreamExt;
    use prost::Message;

    let h = fstore_tests::harness::Harness::start(fstore_tests::harness::Backend::Nats).await?;
    h.register(build::feature(
        "doc.words",
        "text.stats@1",
        &[("stat", "words")],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    let mut req = build::sync(&[], &["doc.words"], 5_000);
    req.entities = vec![
        entity("d.1", &[("text", text("a b"))]),
        entity("d 2", &[("text", text("c"))]),
    ];
    h.client.get(req).await?;
    let nats_url = h.nats.as_ref().map(|n| n.url()).context("a NATS harness")?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats_url).await?);
    let stream = js.get_stream("FSTORE_LOG").await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("training-pipeline".into()),
            filter_subject: format!(
                "fstore.log.{}.doc_2Ewords.1",
                fstore_substrate::token::encode("default")
            ),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await?;
    let mut seen = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let record = api::LogRecord::decode(m.payload.clone())?;
        let sequence = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        seen.push((sequence, record.entity_id.clone(), record.status()));
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    seen.sort();
    let ids: Vec<&str> = seen.iter().map(|(_, e, _)| e.as_str()).collect();
    assert_eq!(ids.len(), 2, "{seen:?}");
    assert!(
        ids.contains(&"d.1") && ids.contains(&"d 2"),
        "names as sent: {seen:?}"
    );
    assert!(seen.iter().all(|(_, _, s)| *s == Status::Ready));
    let cursors: Vec<u64> = h
        .client
        .log(&["doc.words"], false)
        .await?
        .iter()
        .map(|e| e.sequence)
        .collect();
    let sequences: Vec<u64> = seen.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        sequences, cursors,
        "the stream sequence is the event's cursor"
    );
    h.stop().await;
    Ok(())
}

/// The offline cycle from the command line: a registration file with a snapshot-served
/// feature and a staged `[[schedule]]` over a CSV; `fstore register` starts it, the
/// gate publishes, `fstore publish status`, `schedule ls`, `rollback` and `schedule rm`
/// read and steer it; bad input is refused with its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_offline_cycle_runs_from_a_registration_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_dev, c, url) = dev(dir.path(), &dir.path().join("log"), "dev").await?;
    std::fs::write(
        dir.path().join("docs.csv"),
        "entity_id,x:f64\nd1,1.5\nd2,2.5\nd3,3.5\n",
    )?;
    let file = dir.path().join("scores.toml");
    std::fs::write(
        &file,
        r#"
[[feature]]
name = "doc.score"
entity_type = "doc"
flow = "num.affine@1"
ttl = "1h"
inputs = { x = { request = "x" } }
serving = "snapshot"
gate = { max_row_change = 0.1 }

[[schedule]]
name = "cycle"
features = ["doc.score"]
entities = "docs.csv"
every = "2s"
stage = true
"#,
    )?;
    let (code, _, stderr) = cli(&url, &["register", &path(&file)])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("schedule cycle: every 2s, first run"),
        "{stderr}"
    );

    let status = wait_until(LONG, "the first run to be published", || async {
        let (code, out, _) = cli(&url, &["--json", "publish", "status", "doc.score"]).ok()?;
        let j: Json = serde_json::from_str(&out).ok()?;
        (code == 0 && j[0]["published"].as_u64()? >= 1).then_some(j)
    })
    .await?;
    assert_eq!(status[0]["generations"][0]["rows"], 3, "{status}");
    // The other replica of this setup is the same process: it serves from memory.
    let mut req = build::get(&["d2"], &["doc.score"]);
    req.entities[0].inputs.insert("x".into(), build::f64(100.0));
    let r = c.get(req).await?;
    assert_eq!(build::f64_of(&r.results[0]), Some(2.5), "{r:?}");
    assert!(r.results[0].generation >= 1);

    let runs = wait_until(LONG, "a second run", || async {
        let (_, out, _) = cli(&url, &["--json", "schedule", "ls"]).ok()?;
        let j: Json = serde_json::from_str(&out).ok()?;
        (j[0]["runs"].as_array()?.len() >= 2).then_some(j)
    })
    .await?;
    assert_eq!(runs[0]["name"], "cycle", "{runs}");

    let (code, _, stderr) = cli(&url, &["rollback", "doc.score", "--to", "99"])?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("NOT_FOUND") && stderr.contains("kept:"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(
        &url,
        &[
            "backfill",
            "start",
            "-f",
            "doc.score",
            "-e",
            "d9",
            "--stage",
            "--every",
            "soon",
            "--schedule",
            "x",
        ],
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
    let (code, _, stderr) = cli(
        &url,
        &[
            "backfill",
            "start",
            "-f",
            "doc.words",
            "-e",
            "d9",
            "--stage",
            "-i",
            "text=a",
        ],
    )?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("INVALID_ARGUMENT") && stderr.contains("snapshot"),
        "{stderr}"
    );
    let (code, out, stderr) = cli(&url, &["schedule", "rm", "cycle"])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("schedule cycle"), "{out}");
    Ok(())
}

/// `fstore fetch --wait` follows a ticket until every result is final, printing plain
/// progress lines when stderr is not a terminal; a wait that runs out exits with the
/// code of DEADLINE_EXCEEDED and names how many results are pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_waits_for_a_ticket_to_be_final() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_dev, c, url) = dev(dir.path(), &dir.path().join("log"), "dev").await?;
    c.register(build::feature(
        "slow",
        "test.probe@1",
        &[("delay_ms", "600"), ("value", "5")],
        &[],
        600_000,
    ))
    .await?;
    let r = c.get(build::get(&["a", "b"], &["slow"])).await?;
    assert!(!r.ticket.is_empty(), "{r:?}");

    let (code, _, stderr) = cli(&url, &["fetch", &r.ticket, "--wait", "50ms"])?;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("DEADLINE_EXCEEDED") && stderr.contains("still has 2 pending"),
        "{stderr}"
    );

    let (code, out, stderr) = cli(&url, &["--json", "fetch", &r.ticket, "--wait", "20s"])?;
    assert_eq!(code, 0, "{stderr}");
    let j: Json = serde_json::from_str(&out)?;
    let statuses: Vec<&str> = j["results"]
        .as_array()
        .context("results")?
        .iter()
        .filter_map(|x| x["status"].as_str())
        .collect();
    assert_eq!(statuses, ["READY", "READY"], "{j}");
    assert!(
        stderr.contains(&format!("ticket {}: 2/2, final", r.ticket)),
        "{stderr}"
    );
    Ok(())
}
