//! Training exports at scale: a feature log of N records (an f64 feature and a tensor
//! feature over many entities, spread over the last day) is written into an embedded
//! log directory by a child process, then one process serves it (`fstore::server`, the
//! embedded substrate on that directory) and exports it through the real gRPC `ReadLog`
//! with `fstore::export`: a range export to Parquet and to CSV, and a point-in-time join
//! of a labels file onto both features. Each log size is measured in a process of its
//! own. Printed per export: rows, seconds, log records
//! read per second, the output's size, and the process's peak RSS during that export
//! (server and exporter together; the high-water mark is reset before each export).
//! Run at two log sizes, the peak RSS shows whether memory follows the log's size.
//!
//! `cargo bench -p fstore-benches --bench export`. Environment overrides:
//! - `EXPORT_SIZES` (100000,1000000): log sizes, in records
//! - `EXPORT_ENTITIES` (10000): entities the records are spread over
//! - `EXPORT_LABELS` (100000): label rows of the point-in-time join
//! - `EXPORT_DIM` (32): the tensor feature's width

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fstore::client::Client;
use fstore::export::{self, Destination, Format, JoinExport, RangeExport};
use fstore_benches::env;
use fstore_proto::api::{self, log_record::Kind};

/// Set in the child that writes the log: the directory to write it to.
const GENERATE: &str = "EXPORT_BENCH_GENERATE";
/// Set in the child that measures one log size (a fresh process per size, so no size
/// inherits another's heap): the size.
const MEASURE: &str = "EXPORT_BENCH_MEASURE";
const SCORE: &str = "bench.score";
const EMBEDDING: &str = "bench.embedding";
const DAY_MS: i64 = 24 * 3600 * 1000;

struct Settings {
    sizes: Vec<u64>,
    entities: u64,
    labels: u64,
    dim: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let sizes = env("EXPORT_SIZES", "100000,1000000".to_string())?
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .context("EXPORT_SIZES: a list of counts")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let s = Settings {
            sizes,
            entities: env("EXPORT_ENTITIES", 10_000)?,
            labels: env("EXPORT_LABELS", 100_000)?,
            dim: env("EXPORT_DIM", 32)?,
        };
        ensure!(
            !s.sizes.is_empty() && s.entities > 0 && s.labels > 0 && s.dim > 0,
            "EXPORT_SIZES, EXPORT_ENTITIES, EXPORT_LABELS and EXPORT_DIM must be positive"
        );
        Ok(s)
    }
}

/// A cheap deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn record(i: u64, n: u64, rng: &mut Rng, s: &Settings, start_ms: i64) -> api::LogRecord {
    let entity = rng.below(s.entities);
    let at = start_ms + (i as i64 * DAY_MS) / n.max(1) as i64;
    let tensor = i % 2 == 1;
    let value = if tensor {
        let data: Vec<f32> = (0..s.dim)
            .map(|_| (rng.below(1_000) as f32) / 1_000.0)
            .collect();
        api::value::Kind::Tensor(api::Tensor {
            shape: vec![s.dim as u64],
            data,
        })
    } else {
        api::value::Kind::F64(rng.below(10_000) as f64 / 100.0)
    };
    let mut r = api::LogRecord {
        tenant: "default".into(),
        entity_id: format!("u{entity}"),
        feature: if tensor { EMBEDDING } else { SCORE }.into(),
        version: 1,
        lineage_hash: "0".repeat(32),
        value_key: format!("{:032x}", u128::from(rng.next()) << 64 | u128::from(i)),
        value: Some(api::Value { kind: Some(value) }),
        attempts: 1,
        computed_at_ms: at,
        planned_at_ms: at - 2,
        tickets: vec![format!("{i:032x}")],
        ..Default::default()
    };
    r.set_kind(Kind::Value);
    r.set_status(api::Status::Ready);
    r
}

fn config(dir: &Path) -> fstore::Config {
    let mut c = fstore::Config::default();
    c.server.default_tenant = Some("default".into());
    c.auth.enabled = Some(false);
    c.log.dir = Some(dir.to_path_buf());
    c
}

/// The child: appends `n` records to the log in `dir` and exits.
fn generate(dir: &Path, n: u64, s: &Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let substrate = fstore::server::substrate(&config(dir)).await?;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let start = fstore_substrate::time::now_ms() - DAY_MS - 60_000;
        for i in 0..n {
            let r = record(i, n, &mut rng, s, start);
            substrate.log.append(&format!("bench.{i}"), r).await?;
        }
        anyhow::Ok(())
    })
}

/// (VmRSS, VmHWM) of this process, in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets this process's peak RSS to its current RSS (Linux `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Row {
    records: u64,
    export: &'static str,
    rows: u64,
    read: u64,
    secs: f64,
    file_bytes: u64,
    base_kib: u64,
    peak_kib: u64,
}

async fn measure<F, Fut>(
    records: u64,
    export: &'static str,
    path: &Path,
    run: F,
) -> anyhow::Result<Row>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<export::Summary, export::Error>>,
{
    reset_peak();
    let (base_kib, _) = memory();
    let started = Instant::now();
    let summary = run()
        .await
        .with_context(|| format!("the {export} export"))?;
    let secs = started.elapsed().as_secs_f64();
    let (_, peak_kib) = memory();
    Ok(Row {
        records,
        export,
        rows: summary.rows,
        read: summary.records,
        secs,
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        base_kib,
        peak_kib,
    })
}

async fn run_size(s: &Settings, n: u64, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let log = dir.join("log");
    let started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .env(GENERATE, &log)
        .env("EXPORT_SIZES", n.to_string())
        .status()
        .context("starting the log writer")?;
    ensure!(status.success(), "the log writer failed: {status}");
    eprintln!(
        "export: {n} records written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running =
        fstore::server::start_embedded(config(&log), fstore_flows::Catalog::builtins(), listener)
            .await?;
    let mut client = Client::connect(&running.url(), None).await?;
    let definitions = format!(
        "[[feature]]\nname = \"{SCORE}\"\nentity_type = \"u\"\nflow = \"test.probe@1\"\nttl = \"1h\"\n\n\
         [[feature]]\nname = \"{EMBEDDING}\"\nentity_type = \"u\"\nflow = \"text.hash_embed@1\"\nttl = \"1h\"\n\
         params = {{ dim = {} }}\ninputs = {{ text = {{ request = \"text\" }} }}\n",
        s.dim
    );
    client.register_file(&definitions).await?;
    let features = vec![SCORE.to_string(), EMBEDDING.to_string()];
    let mut rows = Vec::new();
    let mut quiet = |_: export::Progress| {};

    for (name, format, file) in [
        ("range → Parquet", Format::Parquet, "range.parquet"),
        ("range → CSV", Format::Csv, "range.csv"),
    ] {
        let out = Destination {
            path: dir.join(file),
            format,
        };
        let spec = RangeExport {
            features: features.clone(),
            ..Default::default()
        };
        let row = measure(n, name, &out.path, || {
            export::range(&client, &spec, &out, &mut quiet)
        })
        .await?;
        ensure!(row.rows == n, "{name}: {} rows of {n} records", row.rows);
        rows.push(row);
        std::fs::remove_file(&out.path)?;
    }

    // Labels: random entities at random times of the day the log covers.
    let labels = dir.join("labels.csv");
    let mut text = String::from("entity_id,timestamp,label\n");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let now = fstore_substrate::time::now_ms();
    for _ in 0..s.labels {
        let at = now - rng.below(DAY_MS as u64) as i64;
        text.push_str(&format!(
            "u{},{at},{}\n",
            rng.below(s.entities),
            rng.below(2)
        ));
    }
    std::fs::write(&labels, text)?;
    let out = Destination {
        path: dir.join("train.parquet"),
        format: Format::Parquet,
    };
    let spec = JoinExport {
        features,
        labels,
        labels_format: Format::Csv,
        columns: Default::default(),
    };
    let row = measure(n, "point-in-time join → Parquet", &out.path, || {
        export::point_in_time(&client, &spec, &out, &mut quiet)
    })
    .await?;
    ensure!(row.rows == s.labels, "the join wrote {} rows", row.rows);
    rows.push(row);
    running.shutdown().await;
    Ok(rows)
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// This process measuring one log size: prints its table rows.
fn measure_one(s: &Settings, n: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let rows = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1_800), run_size(s, n, dir.path())).await
    });
    for r in rows.context("an export size took over 30 minutes")?? {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.1} | {} | {} |",
            r.records,
            r.export,
            r.rows,
            r.secs,
            r.read as f64 / r.secs.max(1e-9),
            r.file_bytes as f64 / (1024.0 * 1024.0),
            mib(r.base_kib),
            mib(r.peak_kib),
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    if let Some(dir) = std::env::var_os(GENERATE) {
        return generate(&PathBuf::from(dir), s.sizes[0], &s);
    }
    if let Ok(n) = std::env::var(MEASURE) {
        return measure_one(&s, n.parse().context("the size to measure")?);
    }
    if !Path::new("/proc/self/clear_refs").exists() {
        bail!("this bench reads peak RSS from /proc (Linux only)");
    }
    let mut table = Vec::new();
    for &n in &s.sizes {
        let out = std::process::Command::new(std::env::current_exe()?)
            .env(MEASURE, n.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("starting a measuring process")?;
        ensure!(
            out.status.success(),
            "measuring {n} records failed: {}",
            out.status
        );
        table.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    println!();
    println!(
        "exports of a feature log through gRPC ReadLog (an f64 and a {}-float tensor feature over {} entities; the join: {} labels); {} CPUs",
        s.dim,
        s.entities,
        s.labels,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| log records | export | rows | seconds | records/s | file MiB | RSS before MiB | peak RSS MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for rows in table {
        print!("{rows}");
    }
    Ok(())
}
