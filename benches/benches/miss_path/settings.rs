//! The bench's settings: the durability profiles and the `MISS_PATH_*` environment
//! variables.

use std::time::Duration;

use anyhow::{bail, ensure};
use fstore_benches::env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    Default,
    Durable,
}

impl Profile {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "default" => Ok(Profile::Default),
            "durable" | "always" => Ok(Profile::Durable),
            other => bail!("MISS_PATH_PROFILES: unknown profile {other:?} (default, durable)"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Durable => "durable",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Profile::Default => "JetStream default: written to the OS, fsync every 2 min",
            Profile::Durable => "`jetstream { sync_interval: always }`: fsync before every ack",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) profiles: Vec<Profile>,
    pub(crate) seq: usize,
    pub(crate) seq_secs: f64,
    pub(crate) warmup: usize,
    pub(crate) secs: f64,
    pub(crate) warmup_secs: f64,
    pub(crate) concurrency: usize,
    pub(crate) channels: usize,
    pub(crate) max_requests: u64,
    pub(crate) slots: usize,
    pub(crate) raw_slots: usize,
    pub(crate) batch_wait: Duration,
    pub(crate) wait_ms: u64,
    /// Also measure the store with a feature log that keeps nothing.
    pub(crate) log_baseline: bool,
}

impl Settings {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let profiles = env("MISS_PATH_PROFILES", "default,durable".to_string())?
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Profile::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(!profiles.is_empty(), "MISS_PATH_PROFILES names no profile");
        let default_batch_wait = fstore::Config::default().worker.max_wait;
        let slots = env("MISS_PATH_SLOTS", 4)?;
        let s = Settings {
            profiles,
            seq: env("MISS_PATH_SEQ", 300)?,
            seq_secs: env("MISS_PATH_SEQ_SECS", 10.0)?,
            warmup: env("MISS_PATH_WARMUP", 20)?,
            secs: env("MISS_PATH_SECS", 5.0)?,
            warmup_secs: env("MISS_PATH_WARMUP_SECS", 0.5)?,
            concurrency: env("MISS_PATH_CONCURRENCY", 32)?,
            channels: env("MISS_PATH_CHANNELS", 4)?,
            max_requests: env("MISS_PATH_MAX_REQUESTS", 50_000)?,
            slots,
            raw_slots: env("MISS_PATH_RAW_SLOTS", slots)?,
            batch_wait: Duration::from_millis(env(
                "MISS_PATH_BATCH_WAIT_MS",
                default_batch_wait.as_millis() as u64,
            )?),
            wait_ms: env("MISS_PATH_WAIT_MS", 5000)?,
            log_baseline: env("MISS_PATH_LOG_BASELINE", 1u8)? != 0,
        };
        ensure!(
            s.seq > 0 && s.concurrency > 0 && s.slots > 0 && s.raw_slots > 0,
            "MISS_PATH_SEQ, MISS_PATH_CONCURRENCY, MISS_PATH_SLOTS and MISS_PATH_RAW_SLOTS must be above zero"
        );
        ensure!(
            s.secs > 0.0 && s.seq_secs > 0.0 && s.warmup_secs >= 0.0,
            "MISS_PATH_SECS and MISS_PATH_SEQ_SECS must be above zero"
        );
        Ok(s)
    }
}
