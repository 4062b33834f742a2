//! The JetStream backend: every piece of shared state lives in one NATS server or
//! cluster, so any number of `fstore serve` replicas and `fstore worker` processes on
//! any machines cooperate through it.
//!
//! | what | where |
//! |---|---|
//! | jobs | work-queue stream `<PREFIX>_JOBS`, subjects `<prefix>.jobs.<flow>.<tenant>`, one durable pull consumer per flow shared by its workers; message id `key.generation` |
//! | values | KV `<prefix>_values`, per-key TTL (`Nats-TTL`) from the feature's TTL; `expires_at` checked on every read; an L1 moka in front |
//! | tickets | KV `<prefix>_tickets`, bucket TTL |
//! | in-flight claims | KV `<prefix>_claims`, created with an expected last sequence and a TTL |
//! | waiting jobs | KV `<prefix>_waiters`, one list per input key, updated by compare-and-set |
//! | invalidation watermarks | KV `<prefix>_watermarks`, watched into memory by every replica |
//! | registry | KV `<prefix>_registry`, one key per (feature, version), watched by every replica |
//! | flows and workers | KV `<prefix>_flows` (specs ever advertised), `<prefix>_workers` (heartbeats with a TTL) |
//! | dead letters | limits stream `<PREFIX>_DLQ`, subjects `<prefix>.dlq.<tenant>.<flow>`; id = sequence |
//! | ready notifications | core subject `<prefix>.ready.<key>` |
//!
//! User names go through [`crate::token`] before they reach a subject or key.

mod dead_letters;
mod directory;
mod kv;
mod queue;
mod tiered;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv as jskv, stream::StorageType};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tracing::{info, warn};

use crate::embedded::EmbeddedResults;
use crate::{Error, Notifier, Substrate};

pub use queue::NatsQueue;

/// How to reach NATS and how to lay out the streams and buckets.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    /// First token of every subject, and the stream and bucket names' prefix.
    pub prefix: String,
    /// Replicas of every stream and bucket (3 in a production cluster).
    pub replicas: usize,
    /// How long a delivered job may run before it is redelivered (extended by
    /// in-progress acks).
    pub ack_wait: Duration,
    /// Deliveries before JetStream gives up on a job.
    pub max_deliver: i64,
    pub duplicate_window: Duration,
    /// Jobs waiting or running per flow, all tenants, before enqueue refuses.
    pub max_queued_per_flow: u64,
    /// Jobs waiting or running per (flow, tenant) subject before enqueue refuses.
    pub max_queued_per_tenant: u64,
    pub ticket_ttl: Duration,
    /// How long parked jobs and claims may live at most.
    pub claim_ttl: Duration,
    /// Memory bound of the per-process L1 value cache.
    pub l1_max_bytes: u64,
    /// How often workers renew their presence.
    pub heartbeat: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "nats://127.0.0.1:4222".to_string(),
            prefix: "fstore".to_string(),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            duplicate_window: Duration::from_secs(120),
            max_queued_per_flow: 100_000,
            max_queued_per_tenant: 50_000,
            ticket_ttl: Duration::from_secs(3600),
            claim_ttl: Duration::from_secs(600),
            l1_max_bytes: 64 * 1024 * 1024,
            heartbeat: Duration::from_secs(2),
        }
    }
}

/// Lowest nats-server with per-key TTL and `sync_interval: always`.
const MIN_SERVER: (u64, u64) = (2, 11);

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!(
        "NATS did not answer ({e}); nothing was lost, retry once the connection is back"
    ))
}

/// Connects, checks the server version, and creates (or opens) the streams and buckets.
pub async fn connect(options: &Options) -> Result<Substrate, Error> {
    let client = async_nats::ConnectOptions::new()
        .name("fstore")
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(3)))
        .max_reconnects(None::<usize>)
        // Retry quickly: an outage should end for callers soon after the server is back.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(6)).min(1000))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => warn!("lost the NATS connection; reconnecting"),
                async_nats::Event::Connected => info!("connected to NATS"),
                other => info!(event = %other, "nats event"),
            }
        })
        .connect(servers(&options.url)?)
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot connect to NATS at {}: {e}; start nats-server with JetStream (-js) or fix --nats",
                options.url
            ))
        })?;
    let version = client.server_info().version;
    if !version_at_least(&version, MIN_SERVER) {
        return Err(Error::Unavailable(format!(
            "nats-server {version} at {} is too old: fstore needs {}.{} or later (per-key TTL); install 2.15.1 with scripts/install-nats",
            options.url, MIN_SERVER.0, MIN_SERVER.1
        )));
    }
    let js = jetstream::new(client.clone());
    let layout = Layout::new(options);
    let queue = NatsQueue::open(js.clone(), &layout, options).await?;
    let bucket = |name: &str, max_age: Duration| jskv::Config {
        bucket: layout.bucket(name),
        history: 1,
        max_age,
        storage: StorageType::File,
        num_replicas: options.replicas,
        limit_markers: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let values = kv::open(&js, bucket("values", Duration::ZERO)).await?;
    let tickets = kv::open(&js, bucket("tickets", options.ticket_ttl)).await?;
    let claims = kv::open(&js, bucket("claims", options.claim_ttl)).await?;
    let waiters = kv::open(&js, bucket("waiters", options.claim_ttl)).await?;
    let watermarks = kv::open(&js, bucket("watermarks", Duration::ZERO)).await?;
    let registry = kv::open(&js, bucket("registry", Duration::ZERO)).await?;
    let flows = kv::open(&js, bucket("flows", Duration::ZERO)).await?;
    let workers = kv::open(&js, bucket("workers", Duration::ZERO)).await?;

    let shared = Arc::new(kv::NatsValues::new(js.clone(), values));
    Ok(Substrate {
        queue: Arc::new(queue),
        results: Arc::new(tiered::Tiered::new(
            EmbeddedResults::new(options.l1_max_bytes),
            shared,
        )),
        tickets: Arc::new(kv::NatsTickets::new(tickets)),
        claims: Arc::new(kv::NatsClaims::new(js.clone(), claims)),
        waiters: Arc::new(kv::NatsWaiters::new(waiters)),
        notifier: Arc::new(NatsNotifier {
            client: client.clone(),
            subject: format!("{}.ready", layout.prefix),
        }),
        watermarks: Arc::new(kv::NatsWatermarks::start(js.clone(), watermarks).await?),
        directory: Arc::new(directory::NatsDirectory::new(
            js.clone(),
            flows,
            workers,
            options.heartbeat,
        )),
        definitions: Arc::new(kv::NatsDefinitions::new(registry)),
        dead_letters: Arc::new(
            dead_letters::NatsDeadLetters::open(js.clone(), &layout, options).await?,
        ),
        connection: Arc::new(NatsConnection(client.clone())),
    })
}

/// `nats://a:4222,nats://b:4222` (a cluster's seed servers) as addresses.
fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, Error> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| Error::Unavailable(format!("`{u}` is not a NATS URL: {e}")))
        })
        .collect()
}

fn version_at_least(version: &str, min: (u64, u64)) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let major = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    let minor = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    (major, minor) >= min
}

/// Names of streams, buckets and subjects under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub prefix: String,
}

impl Layout {
    fn new(options: &Options) -> Self {
        Layout {
            prefix: crate::token::encode(&options.prefix),
        }
    }

    pub fn bucket(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.prefix.to_uppercase())
    }

    pub fn jobs_subject(&self, flow: &str, tenant: &str) -> String {
        format!(
            "{}.jobs.{}.{}",
            self.prefix,
            crate::token::encode(flow),
            crate::token::encode(tenant)
        )
    }
}

struct NatsConnection(async_nats::Client);

#[async_trait]
impl crate::Connection for NatsConnection {
    fn is_up(&self) -> bool {
        self.0.connection_state() == async_nats::connection::State::Connected
    }

    async fn close(&self) {
        if let Err(e) = self.0.drain().await {
            warn!(error = %e, "draining the NATS connection failed");
        }
    }
}

struct NatsNotifier {
    client: async_nats::Client,
    subject: String,
}

#[async_trait]
impl Notifier for NatsNotifier {
    async fn publish(&self, key: &str) -> Result<(), Error> {
        self.client
            .publish(format!("{}.{key}", self.subject), bytes::Bytes::new())
            .await
            .map_err(unavailable)
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, String>, Error> {
        let sub = self
            .client
            .subscribe(format!("{}.>", self.subject))
            .await
            .map_err(unavailable)?;
        let prefix = format!("{}.", self.subject);
        Ok(sub
            .filter_map(move |m| {
                let key = m.subject.as_str().strip_prefix(&prefix).map(str::to_string);
                async move { key }
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_at_least("2.15.1", (2, 11)));
        assert!(version_at_least("v2.11.0-beta", (2, 11)));
        assert!(!version_at_least("2.9.10", (2, 11)));
        assert!(!version_at_least("garbage", (2, 11)));
    }

    #[test]
    fn subjects_encode_user_names() {
        let l = Layout::new(&Options::default());
        assert_eq!(
            l.jobs_subject("text.stats@1", "a*b"),
            "fstore.jobs.text_2Estats_401.a_2Ab"
        );
        assert_eq!(l.jobs_stream(), "FSTORE_JOBS");
    }
}
