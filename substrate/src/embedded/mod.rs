//! The in-process backend: everything in memory, for dev mode and tests. It keeps the
//! same contracts as JetStream where they matter to callers — message-id de-duplication,
//! redelivery with a delay, round-robin between tenants, bounded queues — and is honest
//! about what it cannot do: nothing but the feature log (segment files in a directory)
//! survives the process.

mod backfills;
mod claims;
mod keys;
mod log;
mod partials;
mod publish;
mod queue;
mod rate;
mod store;

use std::sync::Arc;
use std::time::Duration;

pub use backfills::EmbeddedBackfills;
pub use claims::EmbeddedClaims;
pub use keys::EmbeddedKeys;
pub use log::EmbeddedLog;
pub use partials::EmbeddedPartials;
pub use publish::EmbeddedPublish;
pub use queue::EmbeddedQueue;
pub use rate::EmbeddedRates;
pub use store::{
    EmbeddedDeadLetters, EmbeddedDefinitions, EmbeddedDirectory, EmbeddedInputs, EmbeddedNotifier,
    EmbeddedResults, EmbeddedServed, EmbeddedTickets, EmbeddedWaiters, EmbeddedWatermarks,
};

use crate::{Error, LogOptions, Substrate};

/// Sizes and windows of the embedded backend.
#[derive(Debug, Clone)]
pub struct Options {
    /// Memory bound of the result cache, in bytes of encoded envelopes.
    pub cache_max_bytes: u64,
    pub ticket_ttl: Duration,
    /// Jobs waiting per flow before enqueue refuses.
    pub max_queued_per_flow: u64,
    /// Jobs waiting per (flow, tenant) before enqueue refuses.
    pub max_queued_per_tenant: u64,
    /// How long a message id is remembered for de-duplication.
    pub duplicate_window: Duration,
    /// The feature log: its directory (None: in memory) and retention.
    pub log: LogOptions,
    /// How long a claim may go unsubmitted before another claimer takes it over.
    pub claim_orphan_after: Duration,
}

#[cfg(test)]
impl Options {
    /// Options for tests: small, explicit numbers. The defaults users get live in the
    /// feature store's configuration, the only place defaults are defined.
    pub(crate) fn for_tests() -> Self {
        Options {
            cache_max_bytes: 16 * 1024 * 1024,
            ticket_ttl: Duration::from_secs(3600),
            max_queued_per_flow: 10_000,
            max_queued_per_tenant: 5_000,
            duplicate_window: Duration::from_secs(120),
            log: LogOptions {
                dir: None,
                max_age: Duration::ZERO,
                max_bytes: 64 * 1024 * 1024,
                segment_bytes: 1024 * 1024,
            },
            claim_orphan_after: Duration::from_secs(5),
        }
    }
}

/// A complete in-process substrate; fails only if the log's directory cannot be opened.
pub fn substrate(options: &Options) -> Result<Substrate, Error> {
    let log = EmbeddedLog::open(options.log.clone(), options.duplicate_window)?;
    let queue = EmbeddedQueue::new(options);
    Ok(Substrate {
        queue: Arc::new(queue.clone()),
        results: Arc::new(EmbeddedResults::new(options.cache_max_bytes)),
        tickets: Arc::new(EmbeddedTickets::new(options.ticket_ttl)),
        claims: Arc::new(EmbeddedClaims::new(options.claim_orphan_after)),
        waiters: Arc::new(EmbeddedWaiters::default()),
        notifier: Arc::new(EmbeddedNotifier::default()),
        watermarks: Arc::new(EmbeddedWatermarks::default()),
        directory: Arc::new(EmbeddedDirectory::default()),
        served: Arc::new(EmbeddedServed::default()),
        definitions: Arc::new(EmbeddedDefinitions::default()),
        dead_letters: Arc::new(EmbeddedDeadLetters::default()),
        log: Arc::new(log),
        inputs: Arc::new(EmbeddedInputs::default()),
        backfills: Arc::new(EmbeddedBackfills::default()),
        publish: Arc::new(EmbeddedPublish::default()),
        partials: Arc::new(EmbeddedPartials::default()),
        rates: Arc::new(EmbeddedRates::default()),
        keys: Arc::new(EmbeddedKeys::default()),
        connection: Arc::new(InProcess { queue }),
    })
}

/// The embedded backend lives in this process: always up; closing it stops the
/// queue's timers.
struct InProcess {
    queue: EmbeddedQueue,
}

#[async_trait::async_trait]
impl crate::Connection for InProcess {
    fn is_up(&self) -> bool {
        true
    }

    async fn close(&self) {
        self.queue.shutdown().await;
    }
}
