//! The soak's settings: the `SOAK_*` environment variables, with their defaults and bounds.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use fstore_benches::env;

/// The soak's bound on each process's L1 value cache (see the module comment).
pub(crate) const DEFAULT_L1_MAX_BYTES: u64 = 256 * 1024;

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) secs: f64,
    pub(crate) warmup_secs: f64,
    pub(crate) clients: usize,
    pub(crate) warm_entities: usize,
    pub(crate) sync_wait_ms: u64,
    pub(crate) follow_up: Duration,
    pub(crate) max_requests: u64,
    pub(crate) rss_tolerance: f64,
    pub(crate) log_dir: Option<PathBuf>,
    /// `FSTORE_NATS__L1_MAX_BYTES` for every fstore process; None: their own default.
    pub(crate) l1_max_bytes: Option<u64>,
}

impl Settings {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
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
