//! The JetStream backend: every piece of shared state lives in one NATS server or
//! cluster, so any number of `fstore serve` replicas and `fstore worker` processes on
//! any machines cooperate through it.
//!
//! Every name below is built by `Layout` (`layout.rs`), whose test pins them.
//! `<prefix>` is the configured prefix as a token, `<PREFIX>` the same in capitals,
//! `<flow>` a flow's `name@version`; user names (flows, tenants, features, workers) go
//! through [`crate::token`] before they reach a subject or key.
//!
//! | what | where |
//! |---|---|
//! | jobs | work-queue stream `<PREFIX>_JOBS` on `<prefix>.jobs.>` (the interactive lane) and `<prefix>.batch.>` (the batch lane), file storage, discard new past `max_queued_per_tenant` per subject (jobs waiting or running for one tenant of one flow in one lane), and enqueue refuses once a lane of a flow holds `max_queued_per_flow` (pending + unacked); subjects `<prefix>.jobs.<flow>.<tenant>` and `<prefix>.batch.<flow>.<tenant>`; message id `key.generation` (de-duplicated within `duplicate_window`); one durable pull consumer per (flow, lane, tenant), named `c__<flow>__<tenant>` (interactive) or `b__<flow>__<tenant>` (batch), shared by every worker serving the flow |
//! | wake-ups | core subject `<prefix>.wake.<flow>`: one per enqueue and per nak'ed job when its delay ends; idle pullers wait for it |
//! | values | KV `<prefix>_values`, keyed by value key, per-key TTL (`Nats-TTL`) from the feature's TTL; `expires_at` checked on every read; an L1 moka in front |
//! | tickets | KV `<prefix>_tickets`, keyed by ticket id, bucket TTL `ticket_ttl` |
//! | in-flight claims | KV `<prefix>_claims`, keyed by value key, created with an expected last sequence and a per-key TTL (the revision is the generation); bucket TTL `claim_ttl` (`nats/claims.rs`) |
//! | waiting jobs | KV `<prefix>_waiters`, one job list per input value key, updated by compare-and-set; bucket TTL `claim_ttl` |
//! | invalidation watermarks | KV `<prefix>_watermarks`, keys `<tenant>.<feature>` and `<tenant>.<feature>.<entity hash>` (per-key TTL), watched into memory by every replica |
//! | registry | KV `<prefix>_registry`, one key `<tenant>.<feature>.<version>` per definition (each tenant its own namespace), created once; watched by every replica |
//! | flows and workers | KV `<prefix>_flows`, key `<flow>` (specs ever advertised); `<prefix>_workers`, key `<flow>.<worker>` (heartbeats with a TTL of three beats, carrying the model state) |
//! | served figures | KV `<prefix>_served`, key `<tenant>.<replica>` (each serve replica's `ServedReport`, with a TTL of three reports) |
//! | dead letters | limits stream `<PREFIX>_DLQ` on `<prefix>.dlq.>`, file storage, direct get; subjects `<prefix>.dlq.<tenant>.<flow>`; id = sequence |
//! | ready notifications | core subject `<prefix>.ready.<value key>` |
//! | feature log, result-ready events | limits stream `<PREFIX>_LOG` on `<prefix>.log.>`, file storage, retention by `log.max_age` and `log.max_bytes`; subjects `<prefix>.log.<tenant>.<feature>.<version>` and `<prefix>.log.<tenant>.inputs`; one `featurestore.v1.LogRecord` per message, message id `log.<key>.<generation>`; the stream sequence is the event's cursor |
//! | joined, submitted and abandoned computes | in the claims bucket: `joined.<key>.<generation>.<request id>` (one entry per request waiting on a compute another claimed; listed by subject), `submitted.<key>.<generation>` (its job enqueued or parked; a claim older than `claim_orphan_after` without it is taken over), `abandoned.<key>.<generation>` (given up by a cancelled ticket; watched into memory) |
//! | stored inputs | KV `<prefix>_inputs`, keyed `<tenant>.<entity hash>` (PutInputs) |
//! | API keys | KV `<prefix>_keys`, key `<key id>`: a key's tenant, roles, label, creation and revocation and the SHA-256 of the whole key (never the key); no TTL |
//! | rate limits | KV `<prefix>_rates`, key `<flow>`: the flow's theoretical arrival time (µs), moved on by compare-and-set by every worker before it runs a batch |
//! | enrichment index | KV `<prefix>_partials`, keyed `<tenant>.<entity hash>`: the values computed without that entity (no inputs yet), planned again when its inputs arrive; compare-and-set |
//! | schedules | KV `<prefix>_schedules`: `rec.<tenant>.<name>` (a repeating backfill: spec, next run, lease, last runs; compare-and-set), `chunk.<entities id>.<index>` (its entities, written before the record names them); no TTL |
//! | published generations | KV `<prefix>_publish`: `pub.<tenant>.<feature>.<version>` (which generation is published, the kept ones and their gate reports; replaced by compare-and-set, watched by every replica); KV `<prefix>_generations`: `gen.<tenant>.<feature>.<version>.<generation>.<index>` (a generation's values, one chunk per backfill chunk); no TTL |
//! | backfills | KV `<prefix>_backfills`: `rec.<id>` (spec, progress and lease, replaced by compare-and-set on the revision); KV `<prefix>_backfill_chunks`: `chunk.<id>.<index>` (the entities, written before the record); bucket TTL `backfill_retention` |
//!
//! Every bucket keeps one revision per key, file storage, `replicas` copies.

mod backfills;
mod claims;
mod dead_letters;
mod directory;
mod keys;
mod kv;
mod layout;
mod log;
mod partials;
mod publish;
mod queue;
mod rate;
mod served;
mod tiered;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv as jskv, stream::StorageType};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tracing::{info, warn};

use crate::embedded::EmbeddedResults;
use crate::task::Background;
use crate::{Error, Notifier, Substrate};

pub(crate) use layout::Layout;
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
    /// The feature log stream's retention (its `dir` is not used).
    pub log: crate::LogOptions,
    /// How long a backfill's record and entities are kept.
    pub backfill_retention: Duration,
    /// How long a claim may go unsubmitted before another claimer takes it over.
    pub claim_orphan_after: Duration,
    /// TLS and credentials of the connection.
    pub security: Security,
}

/// How the connection to NATS is secured: TLS (a CA to trust, a client certificate)
/// and one way to authenticate (a `.creds` file, an nkey seed file, a user and
/// password, or a token).
#[derive(Clone, Default)]
pub struct Security {
    /// Connect with TLS and refuse a server that does not offer it.
    pub require_tls: bool,
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and its key, for a server that verifies clients.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub creds_file: Option<std::path::PathBuf>,
    pub nkey_seed_file: Option<std::path::PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("Security")
            .field("require_tls", &self.require_tls)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("creds_file", &self.creds_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Security {
    /// `options` with this TLS and these credentials.
    async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, Error> {
        let refused = |what: &std::path::Path, e: std::io::Error| {
            Error::Unavailable(format!(
                "cannot read {} for the NATS connection: {e}; fix the nats.* setting that names it",
                what.display()
            ))
        };
        if self.require_tls || self.ca_file.is_some() || self.cert_file.is_some() {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(creds) = &self.creds_file {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| refused(creds, e))?;
        }
        if let Some(seed) = &self.nkey_seed_file {
            let text = std::fs::read_to_string(seed).map_err(|e| refused(seed, e))?;
            options = options.nkey(text.trim().to_string());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        Ok(options)
    }
}

/// Lowest nats-server with per-key TTL and `sync_interval: always`.
const MIN_SERVER: (u64, u64) = (2, 11);

/// Room a message's subject and headers take beside its payload.
const HEADROOM: usize = 1024;

/// Refuses a payload of `bytes` that, with its subject and headers, would not fit in one
/// message of `client`'s server; NATS would answer such a publish only with an error
/// that reads like an outage.
pub(crate) fn fits(
    client: &async_nats::Client,
    what: crate::error::Message,
    bytes: usize,
) -> Result<(), Error> {
    let limit = client.max_payload();
    if bytes + HEADROOM > limit {
        return Err(Error::TooLarge { what, bytes, limit });
    }
    Ok(())
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!(
        "NATS did not answer ({e}); nothing was lost, retry once the connection is back"
    ))
}

/// The JetStream API error code behind `e`, found down its `source()` chain; None when
/// the failure is not an answer from the server (a timeout, a broken connection).
pub(crate) fn jetstream_code(
    e: &(dyn std::error::Error + 'static),
) -> Option<jetstream::ErrorCode> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(js) = err.downcast_ref::<jetstream::Error>() {
            return Some(js.error_code());
        }
        next = err.source();
    }
    None
}

/// Connects, checks the server version, and creates (or opens) the streams and buckets.
pub async fn connect(options: &Options) -> Result<Substrate, Error> {
    let connect = options
        .security
        .apply(async_nats::ConnectOptions::new())
        .await?;
    let client = connect
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
    // A cluster electing leaders (just started, or a node restarting) answers stream
    // and bucket requests with timeouts for a few seconds: opening them is retried for
    // a while. A server that cannot be reached at all has failed above, at once.
    let open = || async {
        let background = Background::default();
        // Boxed: the whole construction is a large future, kept off the caller's stack.
        match Box::pin(open(client.clone(), options, background.clone())).await {
            Ok(substrate) => Ok(substrate),
            Err(e) => {
                background.shutdown().await;
                Err(e)
            }
        }
    };
    crate::startup::retry("opening the NATS streams and buckets", open, |e| {
        matches!(e, Error::Unavailable(_))
    })
    .await
}

/// Creates (or opens) the streams and buckets and starts the watches on `background`
/// (which the caller stops if this fails).
async fn open(
    client: async_nats::Client,
    options: &Options,
    background: Background,
) -> Result<Substrate, Error> {
    let js = jetstream::new(client.clone());
    let layout = Layout::new(&options.prefix);
    let queue = NatsQueue::open(js.clone(), &layout, options, background.clone()).await?;
    let bucket = |name: String, max_age: Duration| jskv::Config {
        bucket: name,
        history: 1,
        max_age,
        storage: StorageType::File,
        num_replicas: options.replicas,
        limit_markers: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let values = kv::open(&js, bucket(layout.values_bucket(), Duration::ZERO)).await?;
    let tickets = kv::open(&js, bucket(layout.tickets_bucket(), options.ticket_ttl)).await?;
    let claims = kv::open(&js, bucket(layout.claims_bucket(), options.claim_ttl)).await?;
    let waiters = kv::open(&js, bucket(layout.waiters_bucket(), options.claim_ttl)).await?;
    let watermarks = kv::open(&js, bucket(layout.watermarks_bucket(), Duration::ZERO)).await?;
    let registry = kv::open(&js, bucket(layout.registry_bucket(), Duration::ZERO)).await?;
    let flows = kv::open(&js, bucket(layout.flows_bucket(), Duration::ZERO)).await?;
    let workers = kv::open(&js, bucket(layout.workers_bucket(), Duration::ZERO)).await?;
    let served = kv::open(&js, bucket(layout.served_bucket(), Duration::ZERO)).await?;
    let inputs = kv::open(&js, bucket(layout.inputs_bucket(), Duration::ZERO)).await?;
    let backfills = kv::open(
        &js,
        bucket(layout.backfills_bucket(), options.backfill_retention),
    )
    .await?;
    let backfill_chunks = kv::open(
        &js,
        bucket(layout.backfill_chunks_bucket(), options.backfill_retention),
    )
    .await?;
    let schedules = kv::open(&js, bucket(layout.schedules_bucket(), Duration::ZERO)).await?;
    let partials = kv::open(&js, bucket(layout.partials_bucket(), Duration::ZERO)).await?;
    let rates = kv::open(&js, bucket(layout.rates_bucket(), Duration::ZERO)).await?;
    let keys = kv::open(&js, bucket(layout.keys_bucket(), Duration::ZERO)).await?;
    let publish = kv::open(&js, bucket(layout.publish_bucket(), Duration::ZERO)).await?;
    let generations = kv::open(&js, bucket(layout.generations_bucket(), Duration::ZERO)).await?;
    let log = log::NatsLog::open(
        js.clone(),
        &layout,
        &options.log,
        options.replicas,
        options.duplicate_window,
    )
    .await?;

    let dead_letters = dead_letters::NatsDeadLetters::open(js.clone(), &layout, options).await?;
    // Last, as they start background tasks (stopped by the caller if one fails).
    let watermarks =
        kv::NatsWatermarks::start(js.clone(), layout.clone(), watermarks, &background).await?;
    let directory = directory::NatsDirectory::start(
        js.clone(),
        layout.clone(),
        flows,
        workers,
        options.heartbeat,
        &background,
    )
    .await?;
    let claims = claims::NatsClaims::start(
        js.clone(),
        layout.clone(),
        claims,
        options.claim_ttl,
        options.claim_orphan_after,
        &background,
    )
    .await?;

    let shared = Arc::new(kv::NatsValues::new(js.clone(), layout.clone(), values));
    Ok(Substrate {
        queue: Arc::new(queue),
        results: Arc::new(tiered::Tiered::new(
            EmbeddedResults::new(options.l1_max_bytes),
            shared,
        )),
        tickets: Arc::new(kv::NatsTickets::new(client.clone(), tickets)),
        claims: Arc::new(claims),
        waiters: Arc::new(kv::NatsWaiters::new(waiters)),
        notifier: Arc::new(NatsNotifier {
            client: client.clone(),
            layout: layout.clone(),
        }),
        watermarks: Arc::new(watermarks),
        directory: Arc::new(directory),
        served: Arc::new(served::NatsServed::new(js.clone(), layout.clone(), served)),
        definitions: Arc::new(kv::NatsDefinitions::new(layout.clone(), registry)),
        dead_letters: Arc::new(dead_letters),
        log: Arc::new(log),
        inputs: Arc::new(kv::NatsInputs::new(client.clone(), layout.clone(), inputs)),
        backfills: Arc::new(backfills::NatsBackfills::new(
            client.clone(),
            layout.clone(),
            backfills,
            backfill_chunks,
            schedules,
        )),
        partials: Arc::new(partials::NatsPartials::new(layout.clone(), partials)),
        rates: Arc::new(rate::NatsRates::new(rates)),
        keys: Arc::new(keys::NatsKeys::new(keys)),
        publish: Arc::new(publish::NatsPublish::new(
            client.clone(),
            layout.clone(),
            publish,
            generations,
        )),
        connection: Arc::new(NatsConnection { client, background }),
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

/// The connection, and the backend's background tasks (watchers, wake-up timers).
struct NatsConnection {
    client: async_nats::Client,
    background: Background,
}

#[async_trait]
impl crate::Connection for NatsConnection {
    fn is_up(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Stops and joins the background tasks, then drains the connection.
    async fn close(&self) {
        self.background.shutdown().await;
        if let Err(e) = self.client.drain().await {
            warn!(error = %e, "draining the NATS connection failed");
        }
    }
}

struct NatsNotifier {
    client: async_nats::Client,
    layout: Layout,
}

#[async_trait]
impl Notifier for NatsNotifier {
    async fn publish(&self, key: &str) -> Result<(), Error> {
        self.client
            .publish(self.layout.ready_subject(key), bytes::Bytes::new())
            .await
            .map_err(unavailable)
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, String>, Error> {
        let sub = self
            .client
            .subscribe(self.layout.ready_filter())
            .await
            .map_err(unavailable)?;
        let layout = self.layout.clone();
        Ok(sub
            .filter_map(move |m| {
                let key = layout.ready_key(m.subject.as_str());
                async move { key }
            })
            .boxed())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An error answer of the JetStream API, as the server sends it.
    pub(crate) fn api_error(err_code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 503,
            "err_code": err_code,
            "description": "a description nothing may depend on",
        }))
        .expect("a JetStream API error")
    }

    #[test]
    fn error_codes_are_found_down_the_source_chain() {
        use jetstream::context::{PublishError, PublishErrorKind};
        let code = jetstream::ErrorCode::STREAM_STORE_FAILED;
        let e = PublishError::with_source(PublishErrorKind::Other, api_error(code.0));
        assert_eq!(jetstream_code(&e), Some(code));
        let outer = jskv::UpdateError::from(e);
        assert_eq!(jetstream_code(&outer), Some(code));
        assert_eq!(
            jetstream_code(&PublishError::new(PublishErrorKind::TimedOut)),
            None
        );
    }

    #[test]
    fn versions() {
        assert!(version_at_least("2.15.1", (2, 11)));
        assert!(version_at_least("v2.11.0-beta", (2, 11)));
        assert!(!version_at_least("2.9.10", (2, 11)));
        assert!(!version_at_least("garbage", (2, 11)));
    }
}
