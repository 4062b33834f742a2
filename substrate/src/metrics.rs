//! Process-wide Prometheus metrics: one registry, filled where each figure arises (the
//! service, the planner, the result tiers, the dispatcher, the worker and its
//! autoscaler), and encoded in the text format for `/metrics`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabel {
    pub flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// `l1` (this process), `shared` (the result store), or `store` for a planner
    /// decision over both.
    pub tier: String,
    /// `hit` or `miss`.
    pub result: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 100 µs .. ~1.6 min
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Every metric of fstore.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<ModeLabel, Counter>,
    pub request_seconds: Hist<ModeLabel>,
    pub sync_timeouts: Counter,
    pub cache: Family<CacheLabel, Counter>,
    pub coalesced: Counter,
    pub refreshes: Counter,
    pub rate_waiting: Family<FlowLabel, Gauge>,
    pub jobs_enqueued: Family<FlowLabel, Counter>,
    pub jobs_completed: Family<FlowLabel, Counter>,
    pub jobs_failed: Family<FlowLabel, Counter>,
    pub jobs_retried: Family<FlowLabel, Counter>,
    pub dead_letters: Family<FlowLabel, Counter>,
    pub queue_depth: Family<FlowLabel, Gauge>,
    pub slots: Family<FlowLabel, Gauge>,
    pub compute_seconds: Hist<FlowLabel>,
    pub model_load_seconds: Family<FlowLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub cold_start_seconds: Hist<FlowLabel>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            sync_timeouts: Counter::default(),
            cache: Family::default(),
            coalesced: Counter::default(),
            refreshes: Counter::default(),
            rate_waiting: Family::default(),
            jobs_enqueued: Family::default(),
            jobs_completed: Family::default(),
            jobs_failed: Family::default(),
            jobs_retried: Family::default(),
            dead_letters: Family::default(),
            queue_depth: Family::default(),
            slots: Family::default(),
            compute_seconds: Family::new_with_constructor(latency),
            model_load_seconds: Family::default(),
            cold_start_seconds: Family::new_with_constructor(latency),
            registry: Registry::with_prefix("fstore"),
        };
        let mut r = Registry::with_prefix("fstore");
        r.register("requests", "GetFeatures calls by mode", m.requests.clone());
        r.register(
            "request_seconds",
            "GetFeatures latency by mode",
            m.request_seconds.clone(),
        );
        r.register(
            "sync_timeouts",
            "SYNC calls that returned with features still pending",
            m.sync_timeouts.clone(),
        );
        r.register(
            "cache",
            "value look-ups by tier and result",
            m.cache.clone(),
        );
        r.register(
            "coalesced",
            "missing values joined to a compute already in flight",
            m.coalesced.clone(),
        );
        r.register(
            "refreshes",
            "values read close to expiry and sent to be recomputed ahead of it (batch lane)",
            m.refreshes.clone(),
        );
        r.register(
            "rate_waiting",
            "jobs a worker holds until its flow's shared rate limit admits them, per flow",
            m.rate_waiting.clone(),
        );
        r.register(
            "jobs_enqueued",
            "compute jobs enqueued per flow",
            m.jobs_enqueued.clone(),
        );
        r.register(
            "jobs_completed",
            "compute jobs that stored a value, per flow",
            m.jobs_completed.clone(),
        );
        r.register(
            "jobs_failed",
            "compute jobs that ended FAILED, per flow",
            m.jobs_failed.clone(),
        );
        r.register(
            "jobs_retried",
            "transient failures retried, per flow",
            m.jobs_retried.clone(),
        );
        r.register(
            "dead_letters",
            "jobs dead-lettered after their last attempt, per flow",
            m.dead_letters.clone(),
        );
        r.register(
            "queue_depth",
            "jobs waiting or in progress, per flow",
            m.queue_depth.clone(),
        );
        r.register(
            "slots",
            "running pull-compute loops, per flow",
            m.slots.clone(),
        );
        r.register(
            "compute_seconds",
            "time of one batched flow run, per flow",
            m.compute_seconds.clone(),
        );
        r.register(
            "model_load_seconds",
            "time the flow's model took to load",
            m.model_load_seconds.clone(),
        );
        r.register(
            "cold_start_seconds",
            "from waking a flow at zero slots to its first batch done",
            m.cold_start_seconds.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The metrics of this process.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

pub fn flow(name: &str) -> FlowLabel {
    FlowLabel {
        flow: name.to_string(),
    }
}

pub fn cache(tier: &str, hit: bool) -> CacheLabel {
    CacheLabel {
        tier: tier.to_string(),
        result: if hit { "hit" } else { "miss" }.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_was_counted() {
        let m = global();
        m.jobs_completed.get_or_create(&flow("f@1")).inc();
        let text = m.encode();
        assert!(
            text.contains("fstore_jobs_completed_total{flow=\"f@1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "# HELP fstore_jobs_completed compute jobs that stored a value, per flow."
            ),
            "{text}"
        );
    }
}
