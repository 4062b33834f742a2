//! Shared state other than the queue: values, tickets, in-flight claims, continuations,
//! invalidation watermarks, the directory of flows that workers serve, and what each
//! serve replica reports it served.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fstore_flows::{FlowSpec, ModelInfo};
use fstore_proto::api::FeatureDefinition;
use futures::stream::BoxStream;

use fstore_proto::wire::{ServedReport, StoredInputs};

use crate::{ComputeJob, DeadLetter, Error, Ticket, ValueEnvelope};

/// Value envelopes by value key. A reader must still check `expires_at_ms`.
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// The envelope under `key`. A tiered store may answer from a local copy only if
    /// that copy was planned at or after `fresh_from_ms`; otherwise it asks the shared
    /// tier, which may hold a newer value.
    async fn get(&self, key: &str, fresh_from_ms: i64)
    -> Result<Option<Arc<ValueEnvelope>>, Error>;
    /// Stores an envelope until its `expires_at_ms`.
    async fn put(&self, key: &str, envelope: ValueEnvelope) -> Result<(), Error>;
    /// Drops this process's copy of `key`, if the store keeps one in front of a shared
    /// tier: the key was stored again elsewhere (a ready notification says so).
    fn forget(&self, _key: &str) {}
}

#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    async fn put(&self, ticket: Ticket) -> Result<(), Error>;
    async fn get(&self, id: &str) -> Result<Option<Arc<Ticket>>, Error>;
}

/// What a claim attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller computes the key, under this new generation.
    Won(u64),
    /// Another caller's compute of this generation is in flight.
    Held(u64),
}

/// In-flight markers: the first to claim a value key computes it; the others wait, and
/// say so (they *join* the claim), so that a cancelled request gives up only computes
/// nobody else waits on.
#[async_trait]
pub trait ClaimStore: Send + Sync + 'static {
    /// Claims `key` for `ttl`. A claim whose compute was never marked
    /// [`ClaimStore::submitted`] within the store's orphan bound (its planner died
    /// between claiming and submitting) is taken over: the caller wins a new generation.
    async fn claim(&self, key: &str, ttl: Duration) -> Result<Claim, Error>;
    /// Marks compute `generation` of `key` as submitted (its job enqueued or parked), so
    /// that its claim holds for its whole TTL.
    async fn submitted(&self, key: &str, generation: u64, ttl: Duration) -> Result<(), Error>;
    /// Ends the claim of that generation (a later generation's claim stays).
    async fn release(&self, key: &str, generation: u64) -> Result<(), Error>;
    /// Records that request `holder` waits on compute `generation` of `key`, which
    /// another request claimed.
    async fn join(
        &self,
        key: &str,
        generation: u64,
        holder: &str,
        ttl: Duration,
    ) -> Result<(), Error>;
    /// The requests that joined compute `generation` of `key`.
    async fn joiners(&self, key: &str, generation: u64) -> Result<Vec<String>, Error>;
    /// Takes `holder` out of the joiners of compute `generation` of `key`; returns
    /// those left.
    async fn withdraw(
        &self,
        key: &str,
        generation: u64,
        holder: &str,
    ) -> Result<Vec<String>, Error>;
    /// Gives compute `generation` of `key` up: its claim is released, and a worker
    /// that reaches its job drops it.
    async fn abandon(&self, key: &str, generation: u64, ttl: Duration) -> Result<(), Error>;
    /// Whether compute `generation` of `key` was given up. Answered from memory (NATS:
    /// a watched copy), as workers ask it for every job.
    fn is_abandoned(&self, key: &str, generation: u64) -> bool;
}

/// Merges newly stored inputs into an entity's: a name sent again replaces its value.
pub(crate) fn merge_inputs(stored: &mut StoredInputs, new: StoredInputs) {
    stored.inputs.extend(new.inputs);
    stored.updated_at_ms = new.updated_at_ms;
}

/// Adds `holder` to a list of request ids unless it is there; whether it was added.
pub(crate) fn add_once(holders: &mut Vec<String>, holder: &str) -> bool {
    let new = !holders.iter().any(|h| h == holder);
    if new {
        holders.push(holder.to_string());
    }
    new
}

/// Request-time inputs stored per (tenant, entity) by PutInputs.
#[async_trait]
pub trait InputStore: Send + Sync + 'static {
    /// Merges `inputs` into what is stored for the entity; returns the merged set.
    async fn put(
        &self,
        tenant: &str,
        entity_id: &str,
        inputs: StoredInputs,
    ) -> Result<StoredInputs, Error>;
    async fn get(&self, tenant: &str, entity_id: &str) -> Result<Option<StoredInputs>, Error>;
}

/// Jobs waiting for an input value: enqueued when their last missing input completes.
///
/// Settling a key is two steps, so that no step can lose a job: read the jobs waiting
/// on it ([`WaiterStore::waiting`]), continue each (enqueue or fail it; both are
/// idempotent), and only then remove them ([`WaiterStore::remove`]). A caller cut
/// short anywhere, or a removal whose acknowledgement was lost, leaves the jobs to the
/// redelivery that settles the key again. (Removing first and continuing after loses
/// the jobs whenever the removal lands but its answer does not.)
#[async_trait]
pub trait WaiterStore: Send + Sync + 'static {
    /// Parks `job` on `input_key`; parking the same job (key, generation and
    /// requeues) twice keeps one.
    async fn add(&self, input_key: &str, job: &ComputeJob) -> Result<(), Error>;
    /// The jobs waiting on a key, left in place.
    async fn waiting(&self, input_key: &str) -> Result<Vec<ComputeJob>, Error>;
    /// Removes `jobs` (matched by key, generation and requeues) from the waiters of
    /// `input_key`.
    /// Jobs parked since stay; removing jobs already gone is a no-op.
    async fn remove(&self, input_key: &str, jobs: &[ComputeJob]) -> Result<(), Error>;
}

/// Whether two waiting jobs are the same job: the same key at the same generation, put
/// back to wait as often (a job put back waits under a new message id: it is not the
/// one it replaces, which its settling removes).
pub(crate) fn same_job(a: &ComputeJob, b: &ComputeJob) -> bool {
    a.value_key == b.value_key && a.generation == b.generation && a.requeues == b.requeues
}

/// Invalidation watermarks: a value planned before its watermark is treated as missing.
#[async_trait]
pub trait Watermarks: Send + Sync + 'static {
    /// Sets the watermark of a feature version for a tenant, for one entity or all.
    /// An entity watermark may be forgotten after `ttl` (older values have expired).
    async fn set(
        &self,
        tenant: &str,
        feature: &str,
        entity: Option<&str>,
        at_ms: i64,
        ttl: Duration,
    ) -> Result<(), Error>;
    /// The latest watermark that applies to (tenant, feature, entity); 0 if none.
    async fn get(&self, tenant: &str, feature: &str, entity: &str) -> Result<i64, Error>;
}

/// Feature definitions shared by every replica: a version is taken by creating it, so
/// two replicas cannot both register version N of one feature.
#[async_trait]
pub trait Definitions: Send + Sync + 'static {
    /// Stores a definition under its (tenant, name, version); false if that version
    /// exists.
    async fn create(&self, def: &FeatureDefinition) -> Result<bool, Error>;
    /// Every tenant's definitions.
    async fn list(&self) -> Result<Vec<FeatureDefinition>, Error>;
    /// Takes back a definition this caller created (a registration batch that could not
    /// be stored whole); `false` if it was not there.
    async fn remove(&self, tenant: &str, name: &str, version: u32) -> Result<bool, Error>;
    /// Definitions created from now on, by any replica.
    async fn watch(&self) -> Result<BoxStream<'static, FeatureDefinition>, Error>;
}

/// Jobs that used up their attempts. Ids are assigned by the store.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Stores a dead letter durably; returns its id.
    async fn put(&self, letter: DeadLetter) -> Result<String, Error>;
    /// Up to `limit` dead letters of a tenant, oldest first, and how many it has in all.
    async fn list(&self, tenant: &str, limit: usize) -> Result<(Vec<DeadLetter>, u64), Error>;
    async fn get(&self, id: &str) -> Result<Option<DeadLetter>, Error>;
    /// Removes one; false if it was not there.
    async fn remove(&self, id: &str) -> Result<bool, Error>;
}

/// The backend's connection, for health and shutdown.
#[async_trait]
pub trait Connection: Send + Sync + 'static {
    /// Whether calls can reach the backend now.
    fn is_up(&self) -> bool;
    /// Flushes and closes (NATS: drain); the last step of a shutdown.
    async fn close(&self);
}

/// What a worker says about one flow it serves.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Advert {
    pub spec: FlowSpec,
    /// The flow's model in that worker, if it has one.
    pub model: Option<ModelInfo>,
    /// The flow's slots running in that worker (none before it serves).
    #[serde(default)]
    pub slots: u32,
}

/// A flow as the directory knows it: its spec and the workers serving it.
#[derive(Debug, Clone)]
pub struct FlowEntry {
    pub spec: FlowSpec,
    pub live_workers: u32,
    /// Slots running the flow, over its live workers (as of their last heartbeat).
    pub slots: u32,
    /// (worker id, model) for each live worker whose flow has a model.
    pub models: Vec<(String, ModelInfo)>,
}

/// Workers advertise the flows they serve; the feature store reads the directory.
#[async_trait]
pub trait FlowDirectory: Send + Sync + 'static {
    async fn advertise(&self, worker_id: &str, adverts: &[Advert]) -> Result<(), Error>;
    async fn withdraw(&self, worker_id: &str) -> Result<(), Error>;
    /// Every flow ever advertised, with its live workers.
    async fn list(&self) -> Result<Vec<FlowEntry>, Error>;
}

/// What each serve replica served, per tenant: its latest report, kept for a few of its
/// intervals, so a staleness view adds up every live replica's figures.
#[async_trait]
pub trait ServedReports: Send + Sync + 'static {
    /// Stores `replica`'s report of `tenant`, kept for `ttl`.
    async fn put(
        &self,
        tenant: &str,
        replica: &str,
        report: &ServedReport,
        ttl: Duration,
    ) -> Result<(), Error>;
    /// The live reports of `tenant`, with the replica of each.
    async fn list(&self, tenant: &str) -> Result<Vec<(String, ServedReport)>, Error>;
}
