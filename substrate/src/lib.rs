//! The compute substrate: a job queue, a result store, tickets, in-flight claims,
//! dependent-job continuations, ready notifications, invalidation watermarks and the
//! workers that run flows — each behind a trait so that two backends fit:
//!
//! - `embedded`: in-process, zero set-up; dev mode and tests.
//! - [`nats`]: JetStream streams and KV buckets, for many processes and machines.
//!
//! The traits are shaped for JetStream: deliveries are acked, nak'ed with a delay,
//! terminated or extended; enqueue carries a message id (value key + generation) that
//! the queue de-duplicates; jobs carry headers (tenant, trace context).
//!
//! Layout:
//! - [`queue`]: the job queue ([`JobQueue`], [`Delivery`])
//! - [`store`]: values, tickets, claims, continuations, watermarks and the flow
//!   directory ([`ResultStore`], [`TicketStore`], [`ClaimStore`], [`WaiterStore`],
//!   [`Watermarks`], [`FlowDirectory`])
//! - [`notify`]: ready notifications ([`Notifier`])
//! - [`log`]: the feature log and result-ready stream ([`FeatureLog`])
//! - [`backfills`]: backfill records and their entities ([`BackfillStore`])
//! - [`partials`]: the enrichment index of values missing a related entity ([`PartialIndex`])
//! - [`keys`]: API key records, hashed ([`KeyStore`])
//! - [`rate`]: rate limits shared by every worker of a flow ([`RateLimiter`])
//! - [`publish`]: published generations of snapshot-served features ([`PublishStore`])
//! - [`worker`]: pulls jobs, runs flows off the reactor, stores, notifies, continues
//!   dependents, acks (`worker/`: the autoscaler, slots, settlement, the retry policy)
//! - [`convert`]: wire values <-> flow values
//! - [`embedded`]: the in-process backend
//! - [`nats`]: the JetStream backend
//! - [`token`]: user names made safe for subjects and KV keys
//! - `task`: every spawned task, tracked and named

pub mod backfills;
pub mod claim;
pub mod convert;
pub mod dispatch;
pub mod embedded;
pub mod error;
pub mod fault;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod nats;
pub mod notify;
pub mod partials;
pub mod publish;
pub mod queue;
pub mod rate;
pub mod startup;
pub mod store;
pub mod task;
pub mod time;
pub mod token;
pub mod trace;
pub mod worker;

use std::sync::Arc;

pub use backfills::BackfillStore;
pub use claim::Claimed;
pub use dispatch::{Dispatcher, Failure, Submitted};
pub use error::Error;
pub use fstore_proto::wire::{ComputeJob, DeadLetter, JobInput, Ticket, ValueEnvelope};
pub use keys::KeyStore;
pub use log::{FeatureLog, LogOptions, LogQuery, Start};
pub use notify::Notifier;
pub use partials::PartialIndex;
pub use publish::PublishStore;
pub use queue::{Delivery, Depth, Headers, JobQueue, Lane, message_id};
pub use rate::RateLimiter;
pub use store::{
    Advert, Claim, ClaimStore, Connection, DeadLetters, Definitions, FlowDirectory, InputStore,
    ResultStore, ServedReports, TicketStore, WaiterStore, Watermarks,
};
pub use worker::{FlowStats, ScalingOptions, SlotBounds, Worker, WorkerOptions, WorkerStats};

/// Every part of a backend, cheap to clone. Feature-store replicas and workers hold one.
#[derive(Clone)]
pub struct Substrate {
    pub queue: Arc<dyn JobQueue>,
    pub results: Arc<dyn ResultStore>,
    pub tickets: Arc<dyn TicketStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub waiters: Arc<dyn WaiterStore>,
    pub notifier: Arc<dyn Notifier>,
    pub watermarks: Arc<dyn Watermarks>,
    pub directory: Arc<dyn FlowDirectory>,
    pub served: Arc<dyn ServedReports>,
    pub definitions: Arc<dyn Definitions>,
    pub dead_letters: Arc<dyn DeadLetters>,
    pub log: Arc<dyn FeatureLog>,
    pub inputs: Arc<dyn InputStore>,
    pub backfills: Arc<dyn BackfillStore>,
    pub publish: Arc<dyn PublishStore>,
    pub partials: Arc<dyn PartialIndex>,
    pub rates: Arc<dyn RateLimiter>,
    pub keys: Arc<dyn KeyStore>,
    pub connection: Arc<dyn Connection>,
}

impl std::fmt::Debug for Substrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substrate").finish_non_exhaustive()
    }
}
