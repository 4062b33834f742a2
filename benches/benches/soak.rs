//! Soak: a bounded mixed run over real processes — one nats-server, two `fstore worker`
//! and two `fstore serve` replicas — that must end with zero lost requests and bounded
//! memory (the RSS of every fstore process at the end of the load within 20% of its RSS
//! after warm-up).
//!
//! `cargo bench -p fstore-benches --bench soak`, or `benches/soak.sh` (installs
//! nats-server, builds the `fstore` binary and runs the full 5 minutes). Needs a
//! nats-server >= 2.11 (`NATS_SERVER_BIN`, or `scripts/install-nats`) and the `fstore`
//! binary next to the bench's target directory (`cargo build --release -p fstore --bin
//! fstore`) or at `FSTORE_BIN`.
//!
//! The load: `SOAK_CLIENTS` tasks, each sending one call at a time, alternating between
//! the replicas (ticket polls go to the other replica first):
//! - 60% hits: 1–4 entities of the warm set × a random subset of a probe root, a
//!   dependent of it, a 3-deep chain with a 2 s TTL (so it expires during the run) and
//!   a text statistic over a request input;
//! - 25% misses: 1–4 entities never asked for before, same features;
//! - 5% failures: an entity the failing probe refuses and a warm one, × the failing
//!   probe, a dependent of it and the root (FAILED is expected only for the refused
//!   entity's failing features; failures are kept for 2 s, then recomputed);
//! - 5% invalidations of the root for one warm entity;
//! - 5% SYNC calls with a short wait over a warm and a new entity, which may come back
//!   PENDING with a ticket.
//!
//! Every call is followed until final: a pending answer's ticket is polled (GetTicket)
//! until nothing is pending, for at most `SOAK_FOLLOW_UP_SECS`. A call is *refused*
//! when it gets a gRPC error, *lost* when it is sent and never reaches READY/FAILED in
//! that bound, its ticket vanishes (NOT_FOUND), or it is answered PENDING without a
//! ticket. Values are checked; a FAILED where none is expected is counted apart.
//!
//! Memory: every process keeps an L1 cache of values in front of the shared KV bucket,
//! bounded by `nats.l1_max_bytes` of weighed envelopes (key + encoded envelope; 64 MiB by
//! default, which takes a few times that in RSS). Misses on ever-new entities fill it,
//! and at this load it would take far longer than 5 minutes to reach a 64 MiB bound: the
//! RSS grows by ~0.1 MiB/s per process until then, which is bounded but not what this
//! check is after. So the soak runs the processes with a 256 KiB L1
//! (`SOAK_L1_MAX_BYTES`), which fills in the first seconds: growth after that is growth
//! the L1 bound does not explain. `SOAK_L1_MAX_BYTES=default` runs with the processes'
//! own setting.
//!
//! The bench exits non-zero when anything is lost, a value is wrong or FAILED where it
//! should not be, or an RSS check fails. Environment overrides:
//! - `SOAK_SECS` (300): seconds of load
//! - `SOAK_WARMUP_SECS` (20% of the run, at most 30 s, at least 15 s or half the run):
//!   when the warm-up RSS is read
//! - `SOAK_L1_MAX_BYTES` (262144): `nats.l1_max_bytes` of the fstore processes, or
//!   `default`
//! - `SOAK_CLIENTS` (16): concurrent client tasks
//! - `SOAK_WARM_ENTITIES` (200): size of the warm entity set
//! - `SOAK_SYNC_WAIT_MS` (200): wait of the SYNC calls
//! - `SOAK_FOLLOW_UP_SECS` (30): bound on following one call to a final state
//! - `SOAK_MAX_REQUESTS` (5000000): bound on calls sent
//! - `SOAK_RSS_TOLERANCE` (0.2): allowed growth of RSS from warm-up to the end
//! - `SOAK_LOG_DIR` (a temporary directory): where the processes' logs go, kept

use fstore_benches::env;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, f64_of, feature};
use fstore_tests::nats::NatsServer;
use fstore_tests::process::{Proc, free_port};
use fstore_tests::{TestClient, wait_until};
use hdrhistogram::Histogram;

const TENANT: &str = "soak";
const LONG: Duration = Duration::from_secs(60);
/// Bound on one RPC; a call with no answer in this time is lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

const ROOT: &str = "soak.root";
const DEP: &str = "soak.dep";
const C1: &str = "soak.c1";
const C2: &str = "soak.c2";
const C3: &str = "soak.c3";
const TEXT: &str = "soak.text";
const FAIL: &str = "soak.fail";
const FAIL_DEP: &str = "soak.fail_dep";
/// Features of hits, misses and SYNC calls.
const GOOD: [&str; 4] = [ROOT, DEP, C3, TEXT];
/// Entities the failing probe refuses.
const BAD_ENTITIES: usize = 8;
/// Short TTL of the chain: values expire many times during the run.
const SHORT_TTL_MS: u64 = 2_000;
const LONG_TTL_MS: u64 = 600_000;
/// The soak's bound on each process's L1 value cache (see the module comment).
const DEFAULT_L1_MAX_BYTES: u64 = 256 * 1024;

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Settings {
    secs: f64,
    warmup_secs: f64,
    clients: usize,
    warm_entities: usize,
    sync_wait_ms: u64,
    follow_up: Duration,
    max_requests: u64,
    rss_tolerance: f64,
    log_dir: Option<PathBuf>,
    /// `FSTORE_NATS__L1_MAX_BYTES` for every fstore process; None: their own default.
    l1_max_bytes: Option<u64>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let secs: f64 = env("SOAK_SECS", 300.0)?;
        ensure!(
            secs > 0.0 && secs <= 86_400.0,
            "SOAK_SECS must be in (0, 86400]"
        );
        // 20% of the run, at most 30 s, but at least 15 s (or half a run shorter than
        // 30 s): the first seconds of load are the processes' own warm-up.
        let warmup_secs: f64 = env(
            "SOAK_WARMUP_SECS",
            (secs * 0.2).min(30.0).max((secs / 2.0).min(15.0)),
        )?;
        ensure!(
            warmup_secs >= 0.0 && warmup_secs < secs,
            "SOAK_WARMUP_SECS must be below SOAK_SECS"
        );
        let s = Settings {
            secs,
            warmup_secs,
            clients: env("SOAK_CLIENTS", 16)?,
            warm_entities: env("SOAK_WARM_ENTITIES", 200)?,
            sync_wait_ms: env("SOAK_SYNC_WAIT_MS", 200)?,
            follow_up: Duration::from_secs_f64(env("SOAK_FOLLOW_UP_SECS", 30.0)?),
            max_requests: env("SOAK_MAX_REQUESTS", 5_000_000)?,
            rss_tolerance: env("SOAK_RSS_TOLERANCE", 0.2)?,
            log_dir: std::env::var_os("SOAK_LOG_DIR").map(PathBuf::from),
            l1_max_bytes: match std::env::var("SOAK_L1_MAX_BYTES") {
                Ok(v) if v.trim() == "default" => None,
                _ => Some(env("SOAK_L1_MAX_BYTES", DEFAULT_L1_MAX_BYTES)?),
            },
        };
        ensure!(
            (1..=1024).contains(&s.clients),
            "SOAK_CLIENTS must be 1 to 1024"
        );
        ensure!(
            (1..=100_000).contains(&s.warm_entities),
            "SOAK_WARM_ENTITIES must be 1 to 100000"
        );
        ensure!(
            s.follow_up > Duration::ZERO,
            "SOAK_FOLLOW_UP_SECS must be positive"
        );
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------

struct Cluster {
    nats: NatsServer,
    /// Logs of the fstore processes.
    dir: PathBuf,
    replicas: Vec<(Proc, String)>,
    workers: Vec<Proc>,
}

fn proc_env(l1_max_bytes: Option<u64>) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&str, String)> = [
        ("FSTORE_SERVER__DEFAULT_TENANT", TENANT),
        ("FSTORE_SERVER__RECHECK_INTERVAL", "100ms"),
        ("FSTORE_NATS__HEARTBEAT", "500ms"),
        ("FSTORE_CACHE__FAILURE_TTL", "2s"),
        ("FSTORE_WORKER__RETRY_BASE", "20ms"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    if let Some(b) = l1_max_bytes {
        env.push(("FSTORE_NATS__L1_MAX_BYTES", b.to_string()));
    }
    env
}

impl Cluster {
    fn start(log_dir: Option<&Path>, l1_max_bytes: Option<u64>) -> anyhow::Result<Cluster> {
        let nats = NatsServer::start()?;
        let dir = match log_dir {
            Some(d) => d.to_path_buf(),
            None => std::env::temp_dir().join(format!(
                "fstore-soak-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            )),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
        let url = nats.url();
        let owned = proc_env(l1_max_bytes);
        let env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut workers = Vec::new();
        for i in 0..2 {
            workers.push(Proc::fstore(
                &format!("worker{i}"),
                &["worker", "--nats", &url],
                &env,
                &dir,
            )?);
        }
        let mut replicas = Vec::new();
        for i in 0..2 {
            let listen = format!("127.0.0.1:{}", free_port()?);
            let p = Proc::fstore(
                &format!("serve{i}"),
                &["serve", "--nats", &url, "--listen", &listen],
                &env,
                &dir,
            )?;
            replicas.push((p, format!("http://{listen}")));
        }
        Ok(Cluster {
            nats,
            dir,
            replicas,
            workers,
        })
    }

    async fn client(&self, i: usize) -> anyhow::Result<TestClient> {
        let (p, url) = &self.replicas[i];
        wait_until(
            LONG,
            &format!("replica {i} to accept calls (log: {})", p.log.display()),
            || async { TestClient::connect(url, None).await.ok() },
        )
        .await
    }

    /// The fstore processes, replicas first: (name, pid).
    fn processes(&self) -> Vec<(String, Option<u32>)> {
        self.replicas
            .iter()
            .map(|(p, _)| p)
            .chain(self.workers.iter())
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }

    /// SIGTERM to the replicas, then the workers; the processes that did not exit.
    fn shutdown(&mut self) -> Vec<String> {
        let mut stuck = Vec::new();
        for p in self
            .replicas
            .iter_mut()
            .map(|(p, _)| p)
            .chain(self.workers.iter_mut())
        {
            if let Err(e) = p.terminate(Duration::from_secs(10)) {
                stuck.push(e.to_string());
            }
        }
        self.nats.stop();
        stuck
    }
}

/// VmRSS of a live process, in KiB; None once it has exited (or is a zombie).
fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut rss = None;
    for line in text.lines() {
        if let Some(state) = line.strip_prefix("State:")
            && state.trim_start().starts_with('Z')
        {
            return None;
        }
        if let Some(v) = line.strip_prefix("VmRSS:") {
            rss = v.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    rss
}

/// The pid of the nats-server whose command line names `store` (ours, not another).
fn nats_pid(store: &Path) -> Option<u32> {
    let needle = store.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
}

// ---------------------------------------------------------------------------------------
// Features and expected values
// ---------------------------------------------------------------------------------------

fn bad_entity(i: usize) -> String {
    format!("bad-{i}")
}

fn warm_entity(i: usize) -> String {
    format!("w-{i}")
}

fn text_of(entity: &str) -> String {
    format!("soak text of {entity}")
}

/// Dependencies before dependents.
fn definitions() -> Vec<api::FeatureDefinition> {
    let bad = (0..BAD_ENTITIES)
        .map(bad_entity)
        .collect::<Vec<_>>()
        .join(",");
    vec![
        feature(
            ROOT,
            "test.probe@1",
            &[("delay_ms", "5"), ("value", "10")],
            &[],
            LONG_TTL_MS,
        ),
        feature(
            DEP,
            "num.affine@1",
            &[("scale", "2"), ("offset", "1")],
            &[("x", ROOT)],
            LONG_TTL_MS,
        ),
        feature(
            C1,
            "test.probe@1",
            &[("delay_ms", "5"), ("value", "3")],
            &[],
            SHORT_TTL_MS,
        ),
        feature(
            C2,
            "num.affine@1",
            &[("scale", "2")],
            &[("x", C1)],
            SHORT_TTL_MS,
        ),
        feature(
            C3,
            "num.affine@1",
            &[("offset", "1")],
            &[("x", C2)],
            SHORT_TTL_MS,
        ),
        feature(
            TEXT,
            "text.stats@1",
            &[("stat", "chars")],
            &[("text", "request:text")],
            LONG_TTL_MS,
        ),
        feature(
            FAIL,
            "test.probe@1",
            &[
                ("delay_ms", "5"),
                ("value", "5"),
                ("fail", "permanent"),
                ("fail_entities", &bad),
            ],
            &[],
            LONG_TTL_MS,
        ),
        feature(
            FAIL_DEP,
            "num.affine@1",
            &[("scale", "3")],
            &[("x", FAIL)],
            LONG_TTL_MS,
        ),
    ]
}

/// What a READY value must be; None for a pair that must be FAILED.
fn expected(entity: &str, feature: &str) -> Option<f64> {
    let refused = entity.starts_with("bad-");
    match feature {
        ROOT => Some(10.0),
        DEP => Some(21.0),
        C1 => Some(3.0),
        C2 => Some(6.0),
        C3 => Some(7.0),
        TEXT => Some(text_of(entity).chars().count() as f64),
        FAIL if !refused => Some(5.0),
        FAIL_DEP if !refused => Some(15.0),
        _ => None,
    }
}

fn request(entities: &[String], features: &[&str]) -> api::GetFeaturesRequest {
    let text: Vec<String> = entities.iter().map(|e| text_of(e)).collect();
    let mut req = build::get(&[], features);
    req.entities = entities
        .iter()
        .zip(&text)
        .map(|(e, t)| build::entity(e, &[("text", build::text(t))]))
        .collect();
    req
}

// ---------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------

/// splitmix64: enough randomness for choosing calls, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A non-empty random subset of `items`, in order.
    fn subset<'a>(&mut self, items: &[&'a str]) -> Vec<&'a str> {
        let mask = 1 + self.below((1 << items.len()) - 1);
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, f)| *f)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Hit,
    Miss,
    Failing,
    Invalidate,
    Sync,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Hit,
        Kind::Miss,
        Kind::Failing,
        Kind::Invalidate,
        Kind::Sync,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Hit => "hit (warm set)",
            Kind::Miss => "miss (new entities)",
            Kind::Failing => "failing entities",
            Kind::Invalidate => "invalidate",
            Kind::Sync => "SYNC short wait",
        }
    }
}

/// First few descriptions of one kind of problem.
#[derive(Debug, Default)]
struct Examples(Vec<String>);

impl Examples {
    fn add(&mut self, s: String) {
        if self.0.len() < 3 {
            self.0.push(s);
        }
    }

    fn merge(&mut self, other: Examples) {
        for s in other.0 {
            self.add(s);
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug)]
struct Stats {
    sent: BTreeMap<Kind, u64>,
    /// Calls that reached a final state (READY/FAILED everywhere, or an answered Invalidate).
    done: u64,
    /// Calls answered pending and followed by polling their ticket.
    followed: u64,
    polls: u64,
    refused: BTreeMap<String, u64>,
    lost: u64,
    ready: u64,
    from_cache: u64,
    failed_expected: u64,
    failed_unexpected: u64,
    wrong: u64,
    /// First answer of every call, µs.
    call_us: Histogram<u64>,
    /// First answer of hits, µs.
    hit_us: Histogram<u64>,
    /// From sending to final, for calls that went pending, µs.
    final_us: Histogram<u64>,
    lost_examples: Examples,
    wrong_examples: Examples,
    refused_examples: Examples,
}

impl Stats {
    fn new() -> Self {
        Stats {
            sent: BTreeMap::new(),
            done: 0,
            followed: 0,
            polls: 0,
            refused: BTreeMap::new(),
            lost: 0,
            ready: 0,
            from_cache: 0,
            failed_expected: 0,
            failed_unexpected: 0,
            wrong: 0,
            call_us: histogram(),
            hit_us: histogram(),
            final_us: histogram(),
            lost_examples: Examples::default(),
            wrong_examples: Examples::default(),
            refused_examples: Examples::default(),
        }
    }

    fn merge(&mut self, o: Stats) {
        for (k, v) in o.sent {
            *self.sent.entry(k).or_default() += v;
        }
        for (k, v) in o.refused {
            *self.refused.entry(k).or_default() += v;
        }
        self.done += o.done;
        self.followed += o.followed;
        self.polls += o.polls;
        self.lost += o.lost;
        self.ready += o.ready;
        self.from_cache += o.from_cache;
        self.failed_expected += o.failed_expected;
        self.failed_unexpected += o.failed_unexpected;
        self.wrong += o.wrong;
        let _ = self.call_us.add(&o.call_us);
        let _ = self.hit_us.add(&o.hit_us);
        let _ = self.final_us.add(&o.final_us);
        self.lost_examples.merge(o.lost_examples);
        self.wrong_examples.merge(o.wrong_examples);
        self.refused_examples.merge(o.refused_examples);
    }

    fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    fn refuse(&mut self, what: &str, s: &tonic::Status) {
        *self.refused.entry(format!("{:?}", s.code())).or_default() += 1;
        self.refused_examples
            .add(format!("{what}: {:?}: {}", s.code(), s.message()));
    }

    fn lose(&mut self, why: String) {
        self.lost += 1;
        self.lost_examples.add(why);
    }

    /// Counts the results of a final answer; false if any result is still pending.
    fn settle(&mut self, wanted: &HashSet<(String, String)>, r: &api::GetFeaturesResponse) {
        let mut seen = HashSet::new();
        for x in &r.results {
            seen.insert((x.entity_id.clone(), x.feature.clone()));
            let want = expected(&x.entity_id, &x.feature);
            match (x.status(), want) {
                (Status::Ready, Some(v)) if f64_of(x).is_some_and(|g| (g - v).abs() < 1e-3) => {
                    self.ready += 1;
                    if x.from_cache {
                        self.from_cache += 1;
                    }
                }
                (Status::Failed, None) => self.failed_expected += 1,
                (Status::Failed, Some(_)) => {
                    self.failed_unexpected += 1;
                    self.wrong_examples.add(format!(
                        "{} of {} FAILED: {}",
                        x.feature, x.entity_id, x.error
                    ));
                }
                (s, want) => {
                    self.wrong += 1;
                    self.wrong_examples.add(format!(
                        "{} of {}: {} {:?}, expected {want:?}",
                        x.feature,
                        x.entity_id,
                        s.as_str_name(),
                        f64_of(x)
                    ));
                }
            }
        }
        if seen != *wanted {
            self.wrong += 1;
            self.wrong_examples.add(format!(
                "answered {} distinct results, asked for {}",
                seen.len(),
                wanted.len()
            ));
        }
        self.done += 1;
    }
}

fn pending(r: &api::GetFeaturesResponse) -> bool {
    r.results
        .iter()
        .any(|x| !matches!(x.status(), Status::Ready | Status::Failed))
}

fn us_since(t: Instant) -> u64 {
    t.elapsed().as_micros().max(1) as u64
}

struct Client {
    id: usize,
    replicas: [TestClient; 2],
    rng: Rng,
    seq: u64,
    settings: Arc<Settings>,
    stats: Stats,
    /// Start of the load, to place lost calls in the processes' logs.
    start: Instant,
}

impl Client {
    /// One call of `kind`, followed until final or lost.
    async fn one(&mut self, kind: Kind) {
        *self.stats.sent.entry(kind).or_default() += 1;
        self.seq += 1;
        let first = (self.id + self.seq as usize) % 2;
        let warm = self.settings.warm_entities;
        let w = |rng: &mut Rng| warm_entity(rng.below(warm));
        let (req, wanted_features): (api::GetFeaturesRequest, Vec<&str>) = match kind {
            Kind::Invalidate => {
                let e = w(&mut self.rng);
                let c = &self.replicas[first];
                let t = Instant::now();
                match tokio::time::timeout(CALL_TIMEOUT, c.invalidate(ROOT, &e)).await {
                    Ok(Ok(_)) => {
                        self.stats.call_us.saturating_record(us_since(t));
                        self.stats.done += 1;
                    }
                    Ok(Err(s)) => self.stats.refuse("Invalidate", &s),
                    Err(_) => self.stats.lose(format!(
                        "Invalidate {ROOT} {e}: no answer in {CALL_TIMEOUT:?}"
                    )),
                }
                return;
            }
            Kind::Hit => {
                let n = 1 + self.rng.below(4);
                let entities: Vec<String> = (0..n).map(|_| w(&mut self.rng)).collect();
                let f = self.rng.subset(&GOOD);
                (request(&entities, &f), f)
            }
            Kind::Miss => {
                let n = 1 + self.rng.below(4);
                let entities: Vec<String> = (0..n)
                    .map(|i| format!("m-{}-{}-{i}", self.id, self.seq))
                    .collect();
                let f = self.rng.subset(&GOOD);
                (request(&entities, &f), f)
            }
            Kind::Failing => {
                let entities = vec![bad_entity(self.rng.below(BAD_ENTITIES)), w(&mut self.rng)];
                let f = vec![FAIL, FAIL_DEP, ROOT];
                (request(&entities, &f), f)
            }
            Kind::Sync => {
                let entities = vec![w(&mut self.rng), format!("s-{}-{}", self.id, self.seq)];
                let f = vec![DEP, C3];
                let mut req = request(&entities, &f);
                req.mode = api::Mode::Sync as i32;
                req.wait_ms = self.settings.sync_wait_ms;
                (req, f)
            }
        };
        let wanted: HashSet<(String, String)> = req
            .entities
            .iter()
            .flat_map(|e| {
                wanted_features
                    .iter()
                    .map(|f| (e.entity_id.clone(), f.to_string()))
            })
            .collect();
        let what = format!(
            "{} {:?} × {:?}",
            kind.name(),
            req.entities
                .iter()
                .map(|e| e.entity_id.as_str())
                .collect::<Vec<_>>(),
            wanted_features
        );
        let sent_at = Instant::now();
        let answer = match tokio::time::timeout(CALL_TIMEOUT, self.replicas[first].get(req)).await {
            Ok(Ok(a)) => a,
            Ok(Err(s)) => return self.stats.refuse("GetFeatures", &s),
            Err(_) => {
                return self
                    .stats
                    .lose(format!("{what}: no answer in {CALL_TIMEOUT:?}"));
            }
        };
        let us = us_since(sent_at);
        self.stats.call_us.saturating_record(us);
        if kind == Kind::Hit {
            self.stats.hit_us.saturating_record(us);
        }
        if !pending(&answer) {
            return self.stats.settle(&wanted, &answer);
        }
        if answer.ticket.is_empty() {
            return self
                .stats
                .lose(format!("{what}: answered PENDING without a ticket"));
        }
        self.stats.followed += 1;
        self.follow(&what, &answer.ticket, first, sent_at, &wanted)
            .await;
    }

    /// Polls `ticket` (the other replica first, then alternating) until nothing is
    /// pending, within the follow-up bound.
    async fn follow(
        &mut self,
        what: &str,
        ticket: &str,
        first: usize,
        sent_at: Instant,
        wanted: &HashSet<(String, String)>,
    ) {
        let deadline = sent_at + self.settings.follow_up;
        let mut pause = Duration::from_millis(10);
        let mut replica = 1 - first;
        let mut last_error = None;
        let mut last_answer: Option<api::GetFeaturesResponse> = None;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
            self.stats.polls += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(
                left.max(Duration::from_secs(1)).min(CALL_TIMEOUT),
                self.replicas[replica].ticket(ticket),
            )
            .await
            {
                Ok(Ok(r)) if !pending(&r) => {
                    self.stats.final_us.saturating_record(us_since(sent_at));
                    return self.stats.settle(wanted, &r);
                }
                Ok(Ok(r)) => last_answer = Some(r),
                Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
                    return self
                        .stats
                        .lose(format!("{what}: ticket {ticket} vanished: {}", s.message()));
                }
                Ok(Err(s)) => last_error = Some(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => last_error = Some("GetTicket timed out".to_string()),
            }
            if Instant::now() >= deadline {
                // What was still pending at the last answer, with its attempts.
                let stuck = last_answer.as_ref().map_or("no answer".to_string(), |r| {
                    r.results
                        .iter()
                        .filter(|x| !matches!(x.status(), Status::Ready | Status::Failed))
                        .map(|x| {
                            format!(
                                "{} of {} {} (attempts {})",
                                x.feature,
                                x.entity_id,
                                x.status().as_str_name(),
                                x.attempts
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                return self.stats.lose(format!(
                    "{what}, sent at {:.1} s of the load: ticket {ticket} still pending after {:?}: {stuck} (last error: {})",
                    sent_at.saturating_duration_since(self.start).as_secs_f64(),
                    self.settings.follow_up,
                    last_error.as_deref().unwrap_or("none")
                ));
            }
            replica = 1 - replica;
        }
    }

    fn pick(&mut self) -> Kind {
        match self.rng.below(100) {
            0..60 => Kind::Hit,
            60..85 => Kind::Miss,
            85..90 => Kind::Failing,
            90..95 => Kind::Invalidate,
            _ => Kind::Sync,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Rss {
    /// (seconds into the load, RSS in KiB per process; None once exited).
    samples: Vec<(f64, Vec<Option<u64>>)>,
    warmup: Option<Vec<Option<u64>>>,
    end: Option<Vec<Option<u64>>>,
}

fn read_all(pids: &[Option<u32>]) -> Vec<Option<u64>> {
    pids.iter().map(|p| p.and_then(rss_kib)).collect()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("gone".to_string(), |k| format!("{:.1}", k as f64 / 1024.0))
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

async fn wait_for_workers(c: &TestClient) -> anyhow::Result<()> {
    let flows = ["test.probe", "num.affine", "text.stats"];
    wait_until(LONG, "two live workers for every flow used", || async {
        let listed = c
            .raw
            .clone()
            .list_flows(c.req(api::ListFlowsRequest {}))
            .await
            .ok()?
            .into_inner();
        flows
            .iter()
            .all(|name| {
                listed
                    .flows
                    .iter()
                    .any(|f| f.name == *name && f.live_workers == 2)
            })
            .then_some(())
    })
    .await
}

/// Computes every GOOD feature of the warm set, and checks it is READY.
async fn warm_up(c: &TestClient, warm: usize) -> anyhow::Result<()> {
    let all: Vec<String> = (0..warm).map(warm_entity).collect();
    for chunk in all.chunks(100) {
        let r = c.get(request(chunk, &GOOD)).await?;
        let r = if r.ticket.is_empty() {
            r
        } else {
            c.until_done(&r.ticket, LONG).await?
        };
        for x in &r.results {
            ensure!(
                x.status() == Status::Ready && f64_of(x) == expected(&x.entity_id, &x.feature),
                "warm-up: {x:?}"
            );
        }
    }
    Ok(())
}

struct Outcome {
    stats: Stats,
    rss: Rss,
    load_secs: f64,
}

/// Runs the load; `pids` are the processes whose RSS is sampled.
async fn run(
    settings: Arc<Settings>,
    cluster: &Cluster,
    pids: Vec<Option<u32>>,
) -> anyhow::Result<Outcome> {
    let r0 = cluster.client(0).await?;
    let r1 = cluster.client(1).await?;
    wait_for_workers(&r0).await?;
    wait_for_workers(&r1).await?;
    for d in definitions() {
        r0.register(d.clone())
            .await
            .with_context(|| format!("registering {}", d.name))?;
    }
    wait_until(
        Duration::from_secs(10),
        "replica 1 to see every feature",
        || async {
            for d in definitions() {
                r1.raw
                    .clone()
                    .describe_feature(r1.req(api::DescribeFeatureRequest {
                        feature: d.name.clone(),
                    }))
                    .await
                    .ok()?;
            }
            Some(())
        },
    )
    .await?;
    let t = Instant::now();
    warm_up(&r0, settings.warm_entities).await?;
    println!(
        "warm set of {} entities × {} features computed in {:.1?}",
        settings.warm_entities,
        GOOD.len(),
        t.elapsed()
    );

    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(settings.secs);

    // RSS sampler: every second (bounded by the run), the warm-up snapshot and the end.
    let sampler = {
        let pids = pids.clone();
        let settings = settings.clone();
        let stop = stop.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut rss = Rss::default();
            let warmup_at = start + Duration::from_secs_f64(settings.warmup_secs);
            let every = Duration::from_secs_f64((settings.secs / 30.0).clamp(1.0, 10.0));
            let mut next = start;
            loop {
                let now = Instant::now();
                if stop.load(Ordering::Relaxed) {
                    rss.end = Some(read_all(&pids));
                    break;
                }
                if rss.warmup.is_none() && now >= warmup_at {
                    rss.warmup = Some(read_all(&pids));
                    println!(
                        "  warm-up RSS at {:.0} s: {} MiB ({} calls sent)",
                        settings.warmup_secs,
                        rss.warmup
                            .iter()
                            .flatten()
                            .map(|r| mib(*r))
                            .collect::<Vec<_>>()
                            .join(" / "),
                        sent.load(Ordering::Relaxed)
                    );
                }
                if now >= next {
                    let at = now.duration_since(start).as_secs_f64();
                    rss.samples.push((at, read_all(&pids)));
                    next += every;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rss
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..settings.clients {
        let mut client = Client {
            id,
            replicas: [r0.clone(), r1.clone()],
            rng: Rng(0x50a4_0000 + id as u64 * 7919),
            seq: 0,
            settings: settings.clone(),
            stats: Stats::new(),
            start,
        };
        let sent = sent.clone();
        let max = settings.max_requests;
        tasks.spawn(async move {
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                let kind = client.pick();
                client.one(kind).await;
            }
            client.stats
        });
    }
    // Progress, and the end of the load: the RSS at the end is read as soon as no new
    // call is sent (the stragglers are still followed).
    let mut last = 0;
    while Instant::now() < deadline {
        let step = Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(step).await;
        let n = sent.load(Ordering::Relaxed);
        println!(
            "  {:>5.0} s: {n} calls sent ({:.0}/s)",
            start.elapsed().as_secs_f64(),
            (n - last) as f64 / step.as_secs_f64().max(1e-3)
        );
        last = n;
    }
    let load_secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let rss = sampler.await.context("the RSS sampler ended abnormally")?;
    let mut stats = Stats::new();
    while let Some(joined) = tasks.join_next().await {
        stats.merge(joined.context("a client task ended abnormally")?);
    }
    Ok(Outcome {
        stats,
        rss,
        load_secs,
    })
}

fn l1_label(l1: Option<u64>) -> String {
    match l1 {
        Some(b) => format!(
            "{:.2} MiB of weighed envelopes (SOAK_L1_MAX_BYTES; `default` keeps the processes' own)",
            b as f64 / (1024.0 * 1024.0)
        ),
        None => "the processes' own nats.l1_max_bytes (64 MiB unless configured)".to_string(),
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".to_string()
    } else {
        format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Prints the tables; the list of failed checks.
fn report(settings: &Settings, o: &Outcome, names: &[String], checked: usize) -> Vec<String> {
    let s = &o.stats;
    let mut failed = Vec::new();
    println!();
    println!(
        "soak: {:.0} s of load, {} clients, 2 replicas + 2 workers on one nats-server; L1: {}",
        o.load_secs,
        settings.clients,
        l1_label(settings.l1_max_bytes)
    );
    println!();
    println!("| calls | count |");
    println!("|---|---:|");
    for k in Kind::ALL {
        println!(
            "| sent: {} | {} |",
            k.name(),
            s.sent.get(&k).copied().unwrap_or(0)
        );
    }
    println!("| **sent** | **{}** |", s.sent_total());
    println!(
        "| final (READY/FAILED, or Invalidate answered) | {} |",
        s.done
    );
    println!(
        "| of those: answered PENDING, ticket polled | {} ({} polls) |",
        s.followed, s.polls
    );
    let refused = s
        .refused
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "| refused (gRPC error) | {}{} |",
        s.refused_total(),
        if refused.is_empty() {
            String::new()
        } else {
            format!(" ({refused})")
        }
    );
    println!("| **lost** | **{}** |", s.lost);
    println!();
    println!("| results | count |");
    println!("|---|---:|");
    println!("| READY (value checked) | {} |", s.ready);
    println!("| of those from the cache | {} |", s.from_cache);
    println!(
        "| FAILED, expected (refused entity) | {} |",
        s.failed_expected
    );
    println!("| FAILED, unexpected | {} |", s.failed_unexpected);
    println!("| wrong (value, status or result set) | {} |", s.wrong);
    println!();
    println!("| latency | n | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in [
        ("first answer, every call", &s.call_us),
        ("first answer, hits", &s.hit_us),
        ("send → final, calls that went pending", &s.final_us),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            h.len(),
            quantile_ms(h, 0.5),
            quantile_ms(h, 0.99),
            if h.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", h.max() as f64 / 1000.0)
            }
        );
    }
    println!();
    println!(
        "| RSS MiB | after warm-up ({:.0} s) | peak | end ({:.0} s) | end / warm-up | check (≤ {:.2}×) |",
        settings.warmup_secs,
        o.load_secs,
        1.0 + settings.rss_tolerance
    );
    println!("|---|---:|---:|---:|---:|---|");
    for (i, name) in names.iter().enumerate() {
        let warm = o.rss.warmup.as_ref().and_then(|v| v[i]);
        let end = o.rss.end.as_ref().and_then(|v| v[i]);
        let peak = o.rss.samples.iter().filter_map(|(_, v)| v[i]).max();
        let (ratio, verdict) = match (warm, end) {
            (Some(w), Some(e)) => {
                let r = e as f64 / w as f64;
                (
                    format!("{r:.3}"),
                    if r <= 1.0 + settings.rss_tolerance {
                        "PASS"
                    } else {
                        "FAIL"
                    },
                )
            }
            _ => ("-".to_string(), "FAIL (process gone or never read)"),
        };
        let verdict = if i < checked { verdict } else { "-" };
        if i < checked && verdict != "PASS" {
            failed.push(format!("RSS of {name}: {verdict}"));
        }
        println!(
            "| {name} | {} | {} | {} | {ratio} | {verdict} |",
            mib(warm),
            mib(peak),
            mib(end)
        );
    }
    println!();
    println!("RSS over the run (MiB, {}):", names.join(" / "));
    let n = o.rss.samples.len();
    let step = n.div_ceil(12).max(1);
    for (i, (at, v)) in o.rss.samples.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            println!(
                "  {at:>6.0} s  {}",
                v.iter().map(|r| mib(*r)).collect::<Vec<_>>().join(" / ")
            );
        }
    }
    for (label, ex) in [
        ("lost", &s.lost_examples),
        ("wrong", &s.wrong_examples),
        ("refused", &s.refused_examples),
    ] {
        for e in &ex.0 {
            println!("{label}: {e}");
        }
    }
    if s.lost > 0 {
        failed.push(format!("{} calls lost", s.lost));
    }
    if s.failed_unexpected + s.wrong > 0 {
        failed.push(format!(
            "{} unexpected FAILED and {} wrong results",
            s.failed_unexpected, s.wrong
        ));
    }
    if s.sent_total() != s.done + s.refused_total() + s.lost {
        failed.push(format!(
            "calls unaccounted for: {} sent, {} final + {} refused + {} lost",
            s.sent_total(),
            s.done,
            s.refused_total(),
            s.lost
        ));
    }
    failed
}

async fn soak() -> anyhow::Result<()> {
    let settings = Arc::new(Settings::from_env()?);
    println!(
        "soak: {} s (warm-up RSS at {} s), {} clients, {} warm entities, SYNC wait {} ms, follow-up bound {:?}",
        settings.secs,
        settings.warmup_secs,
        settings.clients,
        settings.warm_entities,
        settings.sync_wait_ms,
        settings.follow_up
    );
    println!(
        "L1 value cache of every fstore process: {}",
        l1_label(settings.l1_max_bytes)
    );
    let mut cluster = Cluster::start(settings.log_dir.as_deref(), settings.l1_max_bytes)?;
    println!(
        "nats-server at {}; fstore logs in {}",
        cluster.nats.url(),
        cluster.dir.display()
    );
    // The fstore processes are checked; nats-server, when found, is only shown.
    let (mut names, mut pids): (Vec<String>, Vec<Option<u32>>) =
        cluster.processes().into_iter().unzip();
    let checked = names.len();
    if let Some(pid) = nats_pid(&cluster.nats.store_dir()) {
        names.push("nats-server (not checked)".to_string());
        pids.push(Some(pid));
    }
    let outcome = run(settings.clone(), &cluster, pids).await;
    let stuck = cluster.shutdown();
    let outcome = outcome?;
    let mut failed = report(&settings, &outcome, &names, checked);
    for s in stuck {
        println!("shutdown: {s}");
        failed.push(s);
    }
    if failed.is_empty() {
        println!("\nPASS: nothing lost, every RSS within the bound");
        Ok(())
    } else {
        bail!("soak FAILED: {}", failed.join("; "))
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs bench targets without `--bench`: a 5-minute soak is not a
    // test, so it only runs under `cargo bench` (or `SOAK_FORCE=1`).
    if !std::env::args().any(|a| a == "--bench") && std::env::var_os("SOAK_FORCE").is_none() {
        println!("soak: skipped (run it with `cargo bench -p fstore-benches --bench soak`)");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(soak())
}
