//! The job queue: per-flow queues of compute jobs with JetStream's delivery contract,
//! in two lanes per flow (interactive and batch, [`Lane`]); the puller says in which
//! order to take the lanes, the queue takes them in that order.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use fstore_flows::FlowId;

use crate::{ComputeJob, Error};

pub use fstore_proto::wire::Lane;

/// Message headers: tenant, trace context.
pub type Headers = BTreeMap<String, String>;

/// The de-duplication id of a job: its value key and generation (and how often it was
/// put back to wait for expired inputs). A second enqueue with the same id inside the
/// queue's duplicate window is dropped.
pub fn message_id(job: &ComputeJob) -> String {
    if job.requeues == 0 {
        format!("{}.{}", job.value_key, job.generation)
    } else {
        format!("{}.{}.r{}", job.value_key, job.generation, job.requeues)
    }
}

/// How a lane is named in a full queue's message: nothing for the interactive lane.
pub fn lane_scope(lane: Lane) -> &'static str {
    match lane {
        Lane::Interactive => "",
        Lane::Batch => " (batch lane)",
    }
}

/// Whether an enqueue added a job or was a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Added,
    Duplicate,
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Adds a job to its flow's queue in its lane, unless its [`message_id`] was seen
    /// recently. A full lane refuses with [`Error::QueueFull`]; each lane has its own
    /// bounds, so a backfill cannot fill the interactive lane.
    async fn enqueue(&self, job: &ComputeJob, headers: &Headers) -> Result<Enqueued, Error>;

    /// Up to `max` jobs of one flow, taken from `lanes` in order (the first lane's jobs,
    /// then the next's if room is left), waiting at most `wait` for the first job of any.
    async fn pull(
        &self,
        flow: &FlowId,
        lanes: &[Lane],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, Error>;

    /// Jobs of a flow waiting or in progress, in both lanes: in all and per tenant.
    async fn depth(&self, flow: &FlowId) -> Result<Depth, Error>;
}

/// A flow's jobs waiting or in progress. Per tenant, jobs waiting out a retry delay
/// count too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    pub total: u64,
    /// Tenants with jobs; a tenant without any is absent.
    pub tenants: BTreeMap<String, u64>,
}

impl Depth {
    /// The jobs of `tenant`.
    pub fn of(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).copied().unwrap_or(0)
    }
}

/// How a delivery is settled; each backend implements it.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Done: the value or the dead letter is written.
    async fn ack(&self) -> Result<(), Error>;
    /// Deliver again after `delay`.
    async fn nak(&self, delay: Duration) -> Result<(), Error>;
    /// Never deliver again.
    async fn term(&self) -> Result<(), Error>;
    /// Still working: extend the lease.
    async fn in_progress(&self) -> Result<(), Error>;
}

/// One delivered job. Settle it once; a delivery dropped unsettled is delivered again.
pub struct Delivery {
    pub job: ComputeJob,
    pub headers: Headers,
    /// 1 on the first delivery.
    pub attempt: u32,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("value_key", &self.job.value_key)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Delivery {
    pub fn new(job: ComputeJob, headers: Headers, attempt: u32, settle: Box<dyn Settle>) -> Self {
        Delivery {
            job,
            headers,
            attempt,
            settle,
        }
    }

    pub async fn ack(self) -> Result<(), Error> {
        self.settle.ack().await
    }

    pub async fn nak(self, delay: Duration) -> Result<(), Error> {
        self.settle.nak(delay).await
    }

    pub async fn term(self) -> Result<(), Error> {
        self.settle.term().await
    }

    pub async fn in_progress(&self) -> Result<(), Error> {
        self.settle.in_progress().await
    }
}
