//! Configuration: defaults → TOML file → environment (`FSTORE_SECTION__KEY`), then
//! [`Config::validate`]. Durations are written like `250ms`, `30s`, `1h`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod flows;
mod options;
mod security;

pub use flows::{
    FlowConfig, FlowKind, Refused, SidecarConfig, read_flow_file, with_configured, with_sidecars,
};
pub use security::{AuthConfig, QuotaConfig, TenantQuota, TlsConfig};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub cache: CacheConfig,
    pub queue: QueueConfig,
    pub worker: WorkerConfig,
    pub nats: NatsConfig,
    pub tickets: TicketsConfig,
    pub log: LogConfig,
    pub backfill: BackfillConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub quotas: QuotaConfig,
    /// Flows declared without code (`[[flow]]` entries): see [`FlowConfig`].
    #[serde(rename = "flow")]
    pub flows: Vec<FlowConfig>,
    pub sidecar: SidecarConfig,
}

/// Backfills: how a replica runs them on the batch lane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackfillConfig {
    /// Entities per stored chunk: the unit a replica plans, follows and records
    /// progress of (at most `limits.max_entities`).
    pub chunk_entities: usize,
    /// Chunks a replica has in flight per backfill: bounds the batch lane's queue.
    pub window: usize,
    /// How long a replica's hold on a backfill lasts unless renewed; another replica
    /// takes a backfill over once it has run out.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often a replica looks for backfills to run or take over.
    #[serde(with = "humantime_serde")]
    pub scan_interval: Duration,
    /// How long a backfill's record stays readable.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Entities one backfill may name.
    pub max_entities: usize,
    /// Decided generations kept per snapshot-served feature (published, superseded,
    /// rejected), for `fstore rollback` and the gate's reports; the published one is
    /// always kept.
    pub keep_generations: usize,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            chunk_entities: 256,
            window: 2,
            lease: Duration::from_secs(10),
            scan_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_entities: 1_000_000,
            keep_generations: 5,
        }
    }
}

/// Jobs per second of a rate written `N/s`, `N/m` or `N/h` (N above zero).
pub fn parse_rate(s: &str) -> Option<f64> {
    let (n, unit) = s.trim().split_once('/')?;
    let n: f64 = n
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)?;
    let secs = match unit.trim() {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return None,
    };
    Some(n / secs)
}

/// Where `fstore dev` keeps its feature log when `log.dir` is not set.
pub const DEV_LOG_DIR: &str = ".fstore/log";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TicketsConfig {
    /// How long a ticket stays readable after it was issued (its results once final,
    /// or its pending request); then GetTicket says it expired.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig {
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// The feature log (and result-ready events).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// The embedded backend's log directory; none: in memory (`fstore dev` uses
    /// `.fstore/log` then). The NATS backend keeps the log in a stream.
    pub dir: Option<PathBuf>,
    /// Records older than this are dropped; `0s` keeps them regardless of age.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The log's size bound in bytes: the oldest records go first.
    pub max_bytes: u64,
    /// The embedded log's segment size: retention drops whole segments.
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: None,
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 10 * 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The JetStream backend; without `url` the embedded substrate is used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222`; a comma-separated list for a cluster.
    pub url: Option<String>,
    /// First token of subjects and prefix of stream and bucket names.
    pub prefix: String,
    /// Replicas of streams and buckets: 3 on a production cluster.
    pub replicas: usize,
    /// How long a job may run before it is redelivered (in-progress acks extend it).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries before JetStream stops redelivering a job.
    pub max_deliver: i64,
    /// Memory bound of the per-process L1 value cache in front of the KV bucket.
    pub l1_max_bytes: u64,
    /// How often workers renew their presence in the flow directory.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Connect with TLS (also implied by `ca_file` or `cert_file`).
    pub require_tls: bool,
    /// The CA that signed the NATS servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed), an nkey seed file, a user and
    /// password, or a token: how this process authenticates to NATS.
    pub creds_file: Option<PathBuf>,
    pub nkey_seed_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            prefix: "fstore".to_string(),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            l1_max_bytes: 64 * 1024 * 1024,
            heartbeat: Duration::from_secs(2),
            require_tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            token: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    /// Tenant of calls without the `x-fstore-tenant` metadata; none: such calls are refused.
    pub default_tenant: Option<String>,
    /// How often a waiting call re-checks the store even without a notification.
    #[serde(with = "humantime_serde")]
    pub recheck_interval: Duration,
    /// Where to serve Prometheus `/metrics` (serve, dev and worker processes); none: off.
    pub metrics_listen: Option<String>,
    /// How often a replica sweeps the values waiting on entities without inputs, to
    /// re-enrich those whose entities have arrived (0s: never).
    #[serde(with = "humantime_serde")]
    pub enrich_sweep: Duration,
    /// How often a replica reports what it served (DescribeFeature adds up the reports
    /// of every replica heard from within three intervals).
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:50051".to_string(),
            default_tenant: None,
            recheck_interval: Duration::from_millis(500),
            metrics_listen: None,
            enrich_sweep: Duration::from_secs(30),
            stats_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_entities: usize,
    pub max_features: usize,
    /// entities × features in one call.
    pub max_items: usize,
    /// Encoded request inputs of one entity.
    pub max_input_bytes: usize,
    /// An encoded request: larger ones are refused before they are decoded.
    pub max_request_bytes: usize,
    /// The longest SYNC wait or watch a caller may ask for.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// The SYNC wait when the caller gives none.
    #[serde(with = "humantime_serde")]
    pub default_wait: Duration,
    /// Entities one related input may reach (after the last hop); past it the value
    /// fails naming this limit, or reads the first ones if its binding says `truncate`.
    pub max_related: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entities: 1000,
            max_features: 500,
            max_items: 50_000,
            max_input_bytes: 1024 * 1024,
            max_request_bytes: 16 * 1024 * 1024,
            max_wait: Duration::from_secs(60),
            default_wait: Duration::from_secs(5),
            max_related: 1_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory bound of the value cache, in bytes.
    pub max_bytes: u64,
    /// How long a failure is answered before a request recomputes.
    #[serde(with = "humantime_serde")]
    pub failure_ttl: Duration,
    /// How long an in-flight claim holds before another planner may take over.
    #[serde(with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// How long a claim may go without its job being submitted before another planner
    /// takes it over (its planner died between claiming and submitting).
    #[serde(with = "humantime_serde")]
    pub claim_orphan_after: Duration,
    /// Refresh-ahead: a value read when less than this share of its TTL is left is
    /// recomputed on the batch lane before it expires, so a steady reader of a hot key
    /// never meets a miss (0 turns it off).
    pub refresh_ahead: f64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 * 1024 * 1024,
            failure_ttl: Duration::from_secs(60),
            claim_ttl: Duration::from_secs(600),
            claim_orphan_after: Duration::from_secs(5),
            refresh_ahead: 0.1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of one flow waiting or running, all tenants together, before GetFeatures
    /// answers RESOURCE_EXHAUSTED (the same on both backends; on NATS checked against a
    /// depth read at most 500 ms ago, so concurrent enqueues may overshoot it a little).
    pub max_queued_per_flow: u64,
    /// Jobs of one flow waiting or running for one tenant, likewise.
    pub max_queued_per_tenant: u64,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_queued_per_flow: 100_000,
            max_queued_per_tenant: 50_000,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Most concurrent pull-compute loops per flow (the autoscaler's ceiling).
    pub slots: usize,
    /// Fewest loops per flow; 0 lets an idle flow scale to zero and unload its model.
    pub min_slots: usize,
    /// Queue depth one slot is expected to absorb: desired slots = ceil(depth / this).
    pub jobs_per_slot: u64,
    /// How long the queue must stay shallow before slots are stopped.
    #[serde(with = "humantime_serde")]
    pub scale_down_after: Duration,
    /// How often the autoscaler reads the queue depth.
    #[serde(with = "humantime_serde")]
    pub scale_tick: Duration,
    /// Per-flow bounds, by `name` or `name@version`, e.g. `"text.minilm" = { min_slots = 0, max_slots = 1 }`.
    pub flows: std::collections::BTreeMap<String, FlowSlots>,
    /// Per-flow rate limits across every worker of the flow, by `name` or
    /// `name@version`, e.g. `"ext.fetch" = "50/s"` (also `/m`, `/h`): jobs above it wait.
    pub rates: std::collections::BTreeMap<String, String>,
    pub max_batch: usize,
    /// How long a slot waits for more jobs to fill a batch (0: take what is queued).
    /// Worth a few ms for model flows under load; costs that much on every lone job.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Slots take interactive jobs before batch ones (backfills, refreshes); one pull in
    /// this many takes the batch lane first, so a steady interactive load cannot starve
    /// a backfill (0: never first).
    pub batch_every: u32,
    /// Slots of a flow that may hold batch jobs at once; the others take interactive
    /// jobs only (0: all but one, at least one).
    pub batch_slots: usize,
}

/// Slot bounds of one flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSlots {
    pub min_slots: usize,
    pub max_slots: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            slots: 2,
            min_slots: 1,
            jobs_per_slot: 16,
            scale_down_after: Duration::from_secs(30),
            scale_tick: Duration::from_millis(250),
            flows: std::collections::BTreeMap::new(),
            rates: std::collections::BTreeMap::new(),
            max_batch: 16,
            max_wait: Duration::ZERO,
            max_attempts: 5,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            batch_every: 8,
            batch_slots: 0,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config file {} does not exist; pass an existing TOML file or none", .0.display())]
    MissingFile(PathBuf),
    /// A value of the wrong type, an unknown key, a malformed duration.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// Values that parse but break a rule.
    #[error("invalid configuration: {0}")]
    Rule(String),
}

/// Command-line flags: the last layer of the configuration, validated with the rest.
/// Each names the key it overrides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flags {
    /// `server.listen`
    pub listen: Option<String>,
    /// `nats.url`
    pub nats_url: Option<String>,
    /// `server.default_tenant`
    pub default_tenant: Option<String>,
}

impl Flags {
    /// The flags as a figment provider of dotted keys.
    fn provider(&self) -> Figment {
        let mut fig = Figment::new();
        let pairs = [
            ("server.listen", &self.listen),
            ("nats.url", &self.nats_url),
            ("server.default_tenant", &self.default_tenant),
        ];
        for (key, value) in pairs {
            if let Some(v) = value {
                fig = fig.merge(Serialized::default(key, v));
            }
        }
        fig
    }
}

impl Config {
    /// Defaults (this file's `Default` impls: the only place defaults are defined), then
    /// the TOML file if given, then `FSTORE_SECTION__KEY` variables, then `flags`; then
    /// [`Config::validate`].
    pub fn load(file: Option<&Path>, flags: &Flags) -> Result<Config, Error> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::MissingFile(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file(path));
        }
        let mut config: Config = fig
            .merge(
                Env::prefixed("FSTORE_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .merge(flags.provider())
            .extract()
            .map_err(|e| Error::Invalid(Box::new(e)))?;
        // A flow's relative `path` is the config file's neighbour, as in a flow file.
        if let Some(base) = file.and_then(Path::parent) {
            for flow in &mut config.flows {
                if flow.path.is_relative() {
                    flow.path = base.join(&flow.path);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), Error> {
        let rule = |text: &str| Err(Error::Rule(text.to_string()));
        if self.server.stats_interval < Duration::from_millis(100) {
            return rule("server.stats_interval must be at least 100ms");
        }
        let l = &self.limits;
        if l.max_entities == 0 || l.max_features == 0 || l.max_items == 0 {
            return rule("limits.max_entities, max_features and max_items must be above zero");
        }
        if l.max_input_bytes > l.max_request_bytes {
            return rule("limits.max_input_bytes must not exceed limits.max_request_bytes");
        }
        if self.worker.slots == 0 || self.worker.max_batch == 0 || self.worker.max_attempts == 0 {
            return rule("worker.slots, max_batch and max_attempts must be above zero");
        }
        if l.default_wait > l.max_wait {
            return rule("limits.default_wait must not exceed limits.max_wait");
        }
        if self.queue.max_queued_per_tenant > self.queue.max_queued_per_flow {
            return rule("queue.max_queued_per_tenant must not exceed queue.max_queued_per_flow");
        }
        let b = &self.backfill;
        if b.chunk_entities == 0 || b.chunk_entities > l.max_entities || b.window == 0 {
            return rule(
                "backfill.chunk_entities must be 1 to limits.max_entities, and backfill.window above zero",
            );
        }
        if b.lease < 3 * b.scan_interval || b.lease.is_zero() {
            return rule("backfill.lease must be at least three backfill.scan_interval");
        }
        for (flow, rate) in &self.worker.rates {
            if parse_rate(rate).is_none() {
                return Err(Error::Rule(format!(
                    "worker.rates.\"{flow}\" is `{rate}`: give jobs per unit of time, like \"50/s\", \"600/m\" or \"1000/h\""
                )));
            }
        }
        if b.keep_generations == 0 {
            return rule("backfill.keep_generations must be at least 1");
        }
        let r = self.cache.refresh_ahead;
        if !(0.0..1.0).contains(&r) {
            return rule("cache.refresh_ahead must be from 0 (off) to below 1, a share of the TTL");
        }
        self.tls.validate()?;
        self.quotas.validate()?;
        let n = &self.nats;
        if n.cert_file.is_some() != n.key_file.is_some() {
            return rule("nats.cert_file and nats.key_file go together");
        }
        if n.user.is_some() != n.password.is_some() {
            return rule("nats.user and nats.password go together");
        }
        if let Some(t) = &self.server.default_tenant {
            crate::names::check_tenant(t)
                .map_err(|e| Error::Rule(format!("server.default_tenant: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_per_second_minute_or_hour() {
        assert_eq!(parse_rate("50/s"), Some(50.0));
        assert_eq!(parse_rate(" 600 / m "), Some(10.0));
        assert_eq!(parse_rate("3600/h"), Some(1.0));
        for bad in ["50", "0/s", "-1/s", "x/s", "5/day", "NaN/s"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        let mut c = Config::default();
        c.worker.rates.insert("ext.fetch".into(), "fast".into());
        let e = c.validate().expect_err("a rate that does not parse");
        assert!(e.to_string().contains("\"50/s\""), "{e}");
    }

    #[test]
    fn file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("fstore-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[cache]\nfailure_ttl = \"3s\"\n[worker]\nslots = 7\n",
        )
        .expect("write");
        let c = Config::load(Some(&path), &Flags::default()).expect("valid");
        assert_eq!(c.cache.failure_ttl, Duration::from_secs(3));
        assert_eq!(c.worker.slots, 7);
        assert_eq!(c.limits.max_entities, 1000);
        std::fs::write(&path, "[worker]\nslotz = 7\n").expect("write");
        assert!(
            Config::load(Some(&path), &Flags::default()).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn flags_are_the_last_layer_and_validated() {
        let flags = Flags {
            listen: Some("127.0.0.1:1".into()),
            default_tenant: Some("team-a".into()),
            ..Flags::default()
        };
        let c = Config::load(None, &flags).expect("valid");
        assert_eq!(c.server.listen, "127.0.0.1:1");
        assert_eq!(c.server.default_tenant.as_deref(), Some("team-a"));
        assert_eq!(c.nats.url, None);
        let bad = Flags {
            default_tenant: Some("no spaces".into()),
            ..Flags::default()
        };
        let e = Config::load(None, &bad).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("server.default_tenant")));
    }
}
