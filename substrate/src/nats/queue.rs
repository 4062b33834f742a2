//! Jobs on a JetStream work-queue stream: one subject and one durable pull consumer per
//! (flow, lane, tenant), shared by every worker serving the flow. A worker takes the
//! lanes in the order it asks for, and in each lane a share from each tenant's consumer
//! in turn, so a tenant with thousands of queued jobs cannot hold back another's few.
//! Enqueue carries the message id `key.generation`, so the server drops duplicates
//! inside its window; bounds per (flow, lane, tenant) subject (stream limit, discard
//! new) and per (flow, lane) (admission check) refuse new work with QueueFull.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{Consumer, pull};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_trait::async_trait;
use fstore_flows::FlowId;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Layout, Options, unavailable};
use crate::error::QueueLimit;
use crate::queue::{Depth, Enqueued, Lane, Settle, lane_scope};
use crate::task::Background;
use crate::{ComputeJob, Delivery, Error, Headers, JobQueue, message_id};

mod consumers;

pub struct NatsQueue {
    js: jetstream::Context,
    client: async_nats::Client,
    layout: Layout,
    stream: stream::Stream,
    ack_wait: Duration,
    max_deliver: i64,
    max_queued_per_tenant: u64,
    max_queued_per_flow: u64,
    /// Consumers this process made sure exist, by name (the enqueue side).
    known: Mutex<HashMap<String, Consumer<pull::Config>>>,
    flows: Mutex<HashMap<FlowId, Arc<FlowState>>>,
    /// The wake-up forwarders and nak timers; stopped when the backend closes.
    background: Background,
}

/// What a process knows of one flow: per lane its tenants' consumers, the turn and a
/// cached depth; a wake-up signal both lanes share.
struct FlowState {
    lanes: [LaneState; 2],
    wake: watch::Receiver<u64>,
}

#[derive(Default)]
struct LaneState {
    consumers: Mutex<(Option<Instant>, Vec<Consumer<pull::Config>>)>,
    next: AtomicUsize,
    /// Per tenant, its jobs in the lane, and when they were read.
    depth: Mutex<Option<(Instant, BTreeMap<String, u64>)>>,
    /// When the lane's subjects were last checked for jobs without a consumer.
    reconciled: Mutex<Option<Instant>>,
}

impl FlowState {
    fn lane(&self, lane: Lane) -> &LaneState {
        match lane {
            Lane::Interactive => &self.lanes[0],
            Lane::Batch => &self.lanes[1],
        }
    }
}

const LANES: [Lane; 2] = [Lane::Interactive, Lane::Batch];

/// How long a tenant list or a depth is trusted before it is read again.
const REFRESH: Duration = Duration::from_millis(500);

/// How often a lane's subjects are checked for jobs whose consumer is gone (deleted by
/// hand, or lost): those get their consumer back, without a restart.
const RECONCILE: Duration = Duration::from_secs(5);

/// The longest a queue operation waits on the network before it reports unavailable.
const NETWORK_BOUND: Duration = Duration::from_secs(3);

impl NatsQueue {
    pub(crate) async fn open(
        js: jetstream::Context,
        layout: &Layout,
        options: &Options,
        background: Background,
    ) -> Result<Self, Error> {
        let config = stream::Config {
            name: layout.jobs_stream(),
            subjects: layout.jobs_filters(),
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: options.replicas,
            duplicate_window: options.duplicate_window,
            // Bounded per flow (admission) and per (flow, tenant) subject, not as a whole.
            max_messages: -1,
            max_messages_per_subject: i64::try_from(options.max_queued_per_tenant)
                .unwrap_or(i64::MAX),
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            ..Default::default()
        };
        let mut stream = js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| unavailable(format!("jobs stream: {e}")))?;
        // A stream made by an older configuration keeps its limits unless told: bring
        // the ones the queue's meaning depends on up to date.
        let had = &stream.cached_info().config;
        if had.max_messages != config.max_messages
            || had.max_messages_per_subject != config.max_messages_per_subject
            || had.duplicate_window != config.duplicate_window
            || had.subjects != config.subjects
        {
            js.update_stream(&config)
                .await
                .map_err(|e| unavailable(format!("updating the jobs stream's limits: {e}")))?;
            stream = js
                .get_stream(&config.name)
                .await
                .map_err(|e| unavailable(format!("jobs stream: {e}")))?;
        }
        Ok(NatsQueue {
            client: js.client(),
            js,
            layout: layout.clone(),
            stream,
            ack_wait: options.ack_wait,
            max_deliver: options.max_deliver,
            max_queued_per_tenant: options.max_queued_per_tenant,
            max_queued_per_flow: options.max_queued_per_flow,
            known: Mutex::new(HashMap::new()),
            flows: Mutex::new(HashMap::new()),
            background,
        })
    }

    async fn flow_state(&self, flow: &FlowId) -> Result<Arc<FlowState>, Error> {
        if let Some(s) = lock(&self.flows).get(flow) {
            return Ok(s.clone());
        }
        // Enqueuers publish an empty wake-up per job; an idle puller waits for one
        // instead of polling. A lost wake-up costs at most one REFRESH.
        let mut sub = self
            .client
            .subscribe(self.layout.wake_subject(&flow.to_string()))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = watch::channel(0u64);
        let stop = self.background.token().clone();
        self.background.spawn("nats wake-up forwarder", async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = sub.next() => if m.is_none() { break },
                }
                tx.send_modify(|n| *n += 1);
                if tx.is_closed() {
                    break;
                }
            }
        });
        let state = Arc::new(FlowState {
            lanes: Default::default(),
            wake: rx,
        });
        Ok(lock(&self.flows)
            .entry(flow.clone())
            .or_insert(state)
            .clone())
    }

    /// Takes up to `max` jobs into `out` without waiting, a share from each tenant in
    /// turn.
    async fn take_round(
        &self,
        consumers: &[Consumer<pull::Config>],
        state: &LaneState,
        max: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<(), Error> {
        let n = consumers.len();
        if n == 0 || out.len() >= max {
            return Ok(());
        }
        let start = state.next.fetch_add(1, Ordering::Relaxed);
        let share = (max - out.len()).div_ceil(n).max(1);
        let mut failed = None;
        for i in 0..n {
            let room = max - out.len();
            if room == 0 {
                break;
            }
            let consumer = &consumers[(start + i) % n];
            // One tenant's consumer failing (deleted by hand, say) does not hold back
            // the others; every one failing is the pull's error.
            let mut batch = match consumer
                .fetch()
                .max_messages(share.min(room))
                .messages()
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    debug!(error = %e, "fetching from a consumer failed; skipping it this round");
                    failed = Some(unavailable(e));
                    continue;
                }
            };
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => out.extend(self.delivery(m).await),
                    Err(_) => break,
                }
            }
        }
        match failed {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    /// Jobs of `flow` in `lane` waiting or in progress, read at most every REFRESH.
    /// Per tenant, its jobs of `flow` in `lane` (waiting, or delivered and not yet
    /// acknowledged): its consumer's figures, read at most once per [`REFRESH`].
    async fn lane_depth(&self, flow: &FlowId, lane: Lane) -> Result<BTreeMap<String, u64>, Error> {
        let state = self.flow_state(flow).await?;
        let state = state.lane(lane);
        if let Some((at, d)) = &*lock(&state.depth)
            && at.elapsed() < REFRESH
        {
            return Ok(d.clone());
        }
        let consumers = self.tenant_consumers(flow, lane, state, false).await?;
        let read = futures::future::try_join_all(consumers.into_iter().map(|mut c| async move {
            let info = c.info().await.map_err(unavailable)?;
            let tenant = info
                .config
                .filter_subject
                .rsplit('.')
                .next()
                .and_then(crate::token::decode)
                .unwrap_or_default();
            Ok::<_, Error>((tenant, info.num_pending + info.num_ack_pending as u64))
        }));
        let counts = tokio::time::timeout(NETWORK_BOUND, read)
            .await
            .map_err(|_| unavailable("reading the queue depth timed out"))??;
        let mut by_tenant = BTreeMap::new();
        for (tenant, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
            *by_tenant.entry(tenant).or_default() += n;
        }
        *lock(&state.depth) = Some((Instant::now(), by_tenant.clone()));
        Ok(by_tenant)
    }

    /// The delivery of a pulled message; an undecodable job is terminated instead.
    async fn delivery(&self, message: jetstream::Message) -> Option<Delivery> {
        let attempt = message
            .info()
            .map(|i| i.delivered.max(1) as u32)
            .unwrap_or(1);
        let job = match ComputeJob::decode(message.payload.as_ref()) {
            Ok(job) => job,
            Err(e) => {
                warn!(error = %e, subject = %message.subject, "undecodable job; terminating it");
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    debug!(error = %e, "terminating an undecodable job failed; it comes back");
                }
                return None;
            }
        };
        let headers = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.first()?.as_str().to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let wake = self
            .layout
            .wake_subject(&format!("{}@{}", job.flow, job.flow_version));
        let settle = NatsSettle {
            message,
            client: self.client.clone(),
            wake,
            background: self.background.clone(),
        };
        Some(Delivery::new(job, headers, attempt, Box::new(settle)))
    }

    fn queue_full(kind: QueueLimit, scope: &str, limit: u64) -> Error {
        Error::QueueFull {
            kind,
            scope: scope.to_string(),
            limit,
            retry_after_ms: 1000,
        }
    }
}

/// Whether JetStream refused a job because the stream is at a limit: with discard new,
/// a subject at `max_queued_per_tenant` jobs answers the
/// publish with STREAM_STORE_FAILED. Other store failures are not answered at all (the
/// publish times out), except a stream's store closing under it, which this also
/// reports as full: either way the caller should retry later.
fn refused_by_limits(e: &PublishError) -> bool {
    e.kind() == PublishErrorKind::Other
        && super::jetstream_code(e) == Some(jetstream::ErrorCode::STREAM_STORE_FAILED)
}

/// "duplicate message id is in process": another publish of the same id is in flight.
fn in_flight_duplicate(e: &PublishError) -> bool {
    super::jetstream_code(e) == Some(jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl JobQueue for NatsQueue {
    async fn enqueue(&self, job: &ComputeJob, headers: &Headers) -> Result<Enqueued, Error> {
        let flow = format!("{}@{}", job.flow, job.flow_version);
        let flow_id = FlowId::new(job.flow.clone(), job.flow_version);
        let lane = job.lane();
        let queued: u64 = self.lane_depth(&flow_id, lane).await?.values().sum();
        if queued >= self.max_queued_per_flow {
            return Err(Self::queue_full(
                QueueLimit::PerFlow,
                &format!("flow {flow}{}", lane_scope(lane)),
                self.max_queued_per_flow,
            ));
        }
        // The tenant's consumers exist before its first job, so pullers find them; both
        // lanes' at once, so that whatever scales workers on their lag (KEDA) can watch
        // the batch lane before the tenant's first backfill.
        for l in LANES {
            self.consumer(&flow, l, &job.tenant).await?;
        }
        let subject = self.layout.jobs_subject(&flow, lane, &job.tenant);
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id(job).as_str(),
        );
        for (k, v) in headers {
            h.insert(k.as_str(), v.as_str());
        }
        let bytes = job.encode_to_vec();
        super::fits(&self.client, crate::error::Message::Job, bytes.len())?;
        let ack = self
            .js
            .publish_with_headers(subject.clone(), h, bytes.into())
            .await
            .map_err(unavailable)?
            .await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) if refused_by_limits(&e) => {
                let scope = format!("flow {flow}{} for tenant {}", lane_scope(lane), job.tenant);
                return Err(Self::queue_full(
                    QueueLimit::PerTenant,
                    &scope,
                    self.max_queued_per_tenant,
                ));
            }
            // The same job (same message id) is being added by another enqueuer this
            // very moment (a cluster answers so while that publish is in its raft
            // proposal): a duplicate, as it would be a moment later.
            Err(e) if in_flight_duplicate(&e) => return Ok(Enqueued::Duplicate),
            Err(e) => return Err(unavailable(format!("enqueue on {subject}: {e}"))),
        };
        if ack.duplicate {
            return Ok(Enqueued::Duplicate);
        }
        if let Some(state) = lock(&self.flows).get(&flow_id)
            && let Some(d) = lock(&state.lane(lane).depth).as_mut()
        {
            *d.1.entry(job.tenant.clone()).or_default() += 1;
        }
        // Best effort: a lost wake-up costs an idle worker one REFRESH.
        let _ = self
            .client
            .publish(self.layout.wake_subject(&flow), bytes::Bytes::new())
            .await;
        Ok(Enqueued::Added)
    }

    async fn pull(
        &self,
        flow: &FlowId,
        lanes: &[Lane],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let state = self.flow_state(flow).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut wake = state.wake.clone();
        let mut force = false;
        loop {
            wake.borrow_and_update();
            let mut got = Vec::new();
            for &lane in lanes {
                let lane_state = state.lane(lane);
                let consumers = self.tenant_consumers(flow, lane, lane_state, force).await?;
                let round = tokio::time::timeout(
                    NETWORK_BOUND,
                    self.take_round(&consumers, lane_state, max.max(1), &mut got),
                )
                .await;
                match round {
                    Ok(taken) => taken?,
                    // Jobs taken before the time ran out are this pull's: dropping them
                    // would leave them to come back only after their lease.
                    Err(_) if !got.is_empty() => return Ok(got),
                    Err(_) => return Err(unavailable("pulling jobs timed out")),
                }
            }
            if !got.is_empty() {
                return Ok(got);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(got);
            }
            let nap = (deadline - now).min(REFRESH);
            tokio::select! {
                changed = wake.changed() => {
                    force = true;
                    if changed.is_err() {
                        tokio::time::sleep(nap).await;
                    }
                }
                _ = tokio::time::sleep(nap) => force = false,
            }
        }
    }

    async fn depth(&self, flow: &FlowId) -> Result<Depth, Error> {
        let mut depth = Depth::default();
        for lane in LANES {
            for (tenant, n) in self.lane_depth(flow, lane).await? {
                depth.total += n;
                *depth.tenants.entry(tenant).or_default() += n;
            }
        }
        Ok(depth)
    }
}

struct NatsSettle {
    message: jetstream::Message,
    client: async_nats::Client,
    /// Idle pullers wait for wake-ups; a nak'ed job sends one when its delay ends.
    wake: String,
    background: Background,
}

#[async_trait]
impl Settle for NatsSettle {
    async fn ack(&self) -> Result<(), Error> {
        // Wait for the server to confirm: the job is gone only once this returns.
        self.message.double_ack().await.map_err(unavailable)
    }

    async fn nak(&self, delay: Duration) -> Result<(), Error> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(unavailable)?;
        let client = self.client.clone();
        let wake = self.wake.clone();
        let stop = self.background.token().clone();
        self.background.spawn("nats nak wake-up", async move {
            tokio::select! {
                // Best effort: a lost wake-up costs an idle puller one REFRESH.
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(delay + Duration::from_millis(5)) => {
                    let _ = client.publish(wake, bytes::Bytes::new()).await;
                }
            }
        });
        Ok(())
    }

    async fn term(&self) -> Result<(), Error> {
        self.message
            .double_ack_with(AckKind::Term)
            .await
            .map_err(unavailable)
    }

    async fn in_progress(&self) -> Result<(), Error> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::tests::api_error;

    #[test]
    fn a_stream_at_its_limits_is_full_and_anything_else_unavailable() {
        let full = PublishError::with_source(
            PublishErrorKind::Other,
            api_error(jetstream::ErrorCode::STREAM_STORE_FAILED.0),
        );
        assert!(refused_by_limits(&full));
        let other = PublishError::with_source(
            PublishErrorKind::Other,
            api_error(jetstream::ErrorCode::STREAM_NOT_FOUND.0),
        );
        assert!(!refused_by_limits(&other));
        assert!(!refused_by_limits(&PublishError::new(
            PublishErrorKind::TimedOut
        )));
    }
}
