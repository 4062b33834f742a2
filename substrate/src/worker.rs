//! The worker: for each flow it serves, `slots` loops pull up to `max_batch` jobs
//! (waiting at most `max_wait`), read the inputs, run one batched call of the flow on
//! the blocking pool, then settle each job on its own: store the value (or the failure),
//! release the claim, notify, continue dependents, and only then ack. A transient error
//! is nak'ed with exponential backoff and jitter until `max_attempts`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fstore_flows::{Catalog, Flow, FlowId, FlowInput, Params};
use fstore_proto::wire_v1::job_input::Source;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::convert::{to_flow, to_wire, wire_type};
use crate::dispatch::Dispatcher;
use crate::time::now_ms;
use crate::{Advert, Delivery, Error, Substrate, ValueEnvelope};

/// Bounds of one flow's slots (concurrent pull-compute loops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotBounds {
    /// 0 lets the flow scale to zero when idle, unloading its model.
    pub min: usize,
    pub max: usize,
}

/// How a worker follows the queue: desired slots = ceil(depth / jobs_per_slot),
/// within the flow's bounds; up at once, down after `scale_down_after`.
#[derive(Debug, Clone)]
pub struct ScalingOptions {
    pub jobs_per_slot: u64,
    pub scale_down_after: Duration,
    /// How often the queue depth is read.
    pub tick: Duration,
    /// Per flow (`name` or `name@version`), overriding the worker's bounds.
    pub flows: Vec<(String, SlotBounds)>,
}

impl Default for ScalingOptions {
    fn default() -> Self {
        ScalingOptions {
            jobs_per_slot: 16,
            scale_down_after: Duration::from_secs(30),
            tick: Duration::from_millis(250),
            flows: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub worker_id: String,
    /// Most concurrent pull-compute loops per flow.
    pub slots: usize,
    /// Fewest loops per flow; 0 allows scale to zero.
    pub min_slots: usize,
    pub scaling: ScalingOptions,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Tries before a transient failure becomes final.
    pub max_attempts: u32,
    /// Deliveries after which a job that never finishes (crashes, lease timeouts, a
    /// backend that cannot store its result) is dead-lettered without running; at most
    /// the queue's own delivery limit.
    pub max_deliveries: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a failure is remembered (and answered) before a request recomputes.
    pub failure_ttl: Duration,
    /// How often the worker renews its presence in the flow directory.
    pub heartbeat: Duration,
    /// How often a running batch extends its jobs' leases (in-progress acks); keep it
    /// well under the queue's ack wait.
    pub progress_interval: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            worker_id: format!("worker-{}", std::process::id()),
            slots: 2,
            min_slots: 1,
            scaling: ScalingOptions::default(),
            max_batch: 16,
            max_wait: Duration::ZERO,
            max_attempts: 5,
            max_deliveries: 20,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            failure_ttl: Duration::from_secs(60),
            heartbeat: Duration::from_secs(2),
            progress_interval: Duration::from_secs(10),
        }
    }
}

/// Slots and cold starts of one flow.
#[derive(Debug, Default)]
pub struct FlowStats {
    pub slots: AtomicU64,
    pub cold_starts: AtomicU64,
    /// Milliseconds from the last wake (0 -> 1 slot) to its first finished batch.
    pub last_cold_start_ms: AtomicU64,
    woke_at: Mutex<Option<std::time::Instant>>,
}

/// What a worker has done, for tests and metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    computes: Mutex<HashMap<String, u64>>,
    flows: Mutex<HashMap<String, Arc<FlowStats>>>,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl WorkerStats {
    /// How many items were computed for a feature (`name@version`), failures included.
    pub fn computes_of(&self, feature: &str) -> u64 {
        self.computes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(feature)
            .copied()
            .unwrap_or(0)
    }

    /// Slots and cold starts of a flow (`name@version`).
    pub fn flow(&self, flow: &str) -> Arc<FlowStats> {
        self.flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(flow.to_string())
            .or_default()
            .clone()
    }

    fn count(&self, feature: String) {
        *self
            .computes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(feature)
            .or_default() += 1;
    }
}

pub struct Worker {
    dispatcher: Dispatcher,
    catalog: Catalog,
    options: WorkerOptions,
    stats: Arc<WorkerStats>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("flows", &self.catalog)
            .field("options", &self.options)
            .finish()
    }
}

impl Worker {
    pub fn new(substrate: Substrate, catalog: Catalog, options: WorkerOptions) -> Self {
        Worker {
            dispatcher: Dispatcher::new(substrate, options.failure_ttl),
            catalog,
            options,
            stats: Arc::new(WorkerStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Advertises the flows, then serves them until `shutdown`; batches in progress finish.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let substrate = self.dispatcher.substrate().clone();
        substrate
            .directory
            .advertise(&self.options.worker_id, &adverts(&self.catalog))
            .await?;
        info!(worker = %self.options.worker_id, flows = ?self.catalog.ids().map(ToString::to_string).collect::<Vec<_>>(), "worker serving");
        let this = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        {
            let directory = substrate.directory.clone();
            let id = this.options.worker_id.clone();
            let catalog = this.catalog.clone();
            let every = this.options.heartbeat;
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = directory.advertise(&id, &adverts(&catalog)).await {
                        warn!(error = %e, "heartbeat failed; retrying");
                    }
                }
            });
        }
        for id in this.catalog.ids().cloned().collect::<Vec<_>>() {
            let this = this.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { this.scale(id, shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
        substrate
            .directory
            .withdraw(&this.options.worker_id)
            .await?;
        info!(worker = %this.options.worker_id, "worker stopped");
        Ok(())
    }

    fn bounds(&self, id: &FlowId) -> SlotBounds {
        let default = SlotBounds {
            min: self.options.min_slots,
            max: self.options.slots.max(1),
        };
        let mut b = self
            .options
            .scaling
            .flows
            .iter()
            .find(|(name, _)| *name == id.name || *name == id.to_string())
            .map_or(default, |(_, b)| *b);
        b.max = b.max.max(1);
        b.min = b.min.min(b.max);
        b
    }

    /// The autoscaler of one flow: reads the queue depth every tick and starts or
    /// stops slots; at zero slots the flow's model is unloaded, and the first job to
    /// arrive wakes it (a cold start).
    async fn scale(self: Arc<Self>, id: FlowId, shutdown: CancellationToken) {
        let Some(flow) = self.catalog.get(&id).cloned() else {
            return;
        };
        let bounds = self.bounds(&id);
        let scaling = self.options.scaling.clone();
        let stats = self.stats.flow(&id.to_string());
        let queue = self.dispatcher.substrate().queue.clone();
        let mut slots: Vec<(CancellationToken, tokio::task::JoinHandle<()>)> = Vec::new();
        let mut below_since: Option<std::time::Instant> = None;
        let spawn =
            |this: &Arc<Self>,
             slots: &mut Vec<(CancellationToken, tokio::task::JoinHandle<()>)>| {
                let token = shutdown.child_token();
                let this = this.clone();
                let id = id.clone();
                let t = token.clone();
                slots.push((token, tokio::spawn(async move { this.serve(id, t).await })));
            };
        for _ in 0..bounds.min {
            spawn(&self, &mut slots);
        }
        stats.slots.store(slots.len() as u64, Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(scaling.tick) => {}
            }
            slots.retain(|(_, h)| !h.is_finished());
            let depth = match queue.depth(&id).await {
                Ok(d) => d,
                Err(e) => {
                    debug!(flow = %id, error = %e, "cannot read the queue depth; keeping the slots");
                    continue;
                }
            };
            let current = slots.len();
            let mut desired =
                usize::try_from(depth.div_ceil(scaling.jobs_per_slot.max(1))).unwrap_or(usize::MAX);
            desired = desired.clamp(bounds.min, bounds.max);
            if depth > 0 {
                desired = desired.max(1);
            }
            if desired > current {
                if current == 0 {
                    stats.cold_starts.fetch_add(1, Ordering::Relaxed);
                    *stats.woke_at.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(std::time::Instant::now());
                }
                info!(flow = %id, depth, from = current, to = desired, max = bounds.max, "scaling up");
                for _ in current..desired {
                    spawn(&self, &mut slots);
                }
                below_since = None;
            } else if desired < current {
                let since = *below_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= scaling.scale_down_after {
                    info!(flow = %id, depth, from = current, to = desired, idle_for = ?since.elapsed(), "scaling down");
                    for (token, _) in slots.drain(desired..) {
                        // The slot finishes the batch it holds, then stops.
                        token.cancel();
                    }
                    if desired == 0 && flow.model().is_some_and(|m| m.loaded) {
                        flow.unload();
                        info!(flow = %id, "scaled to zero: model unloaded");
                    }
                    below_since = None;
                }
            } else {
                below_since = None;
            }
            stats.slots.store(slots.len() as u64, Ordering::Relaxed);
            let m = crate::metrics::global();
            let label = crate::metrics::flow(&id.to_string());
            m.slots.get_or_create(&label).set(slots.len() as i64);
            m.queue_depth
                .get_or_create(&label)
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
            if let Some(model) = flow.model().filter(|m| m.loaded) {
                m.model_load_seconds
                    .get_or_create(&label)
                    .set(model.load_ms as f64 / 1000.0);
            }
        }
        for (token, _) in &slots {
            token.cancel();
        }
        for (_, handle) in slots {
            let _ = handle.await;
        }
        stats.slots.store(0, Ordering::Relaxed);
    }

    async fn serve(&self, id: FlowId, shutdown: CancellationToken) {
        let Some(flow) = self.catalog.get(&id).cloned() else {
            return;
        };
        let queue = self.dispatcher.substrate().queue.clone();
        loop {
            let pulled = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = queue.pull(&id, self.options.max_batch, Duration::from_secs(1)) => r,
            };
            match pulled {
                Ok(batch) if batch.is_empty() => {}
                Ok(mut batch) => {
                    // Dynamic batching: keep filling until the batch is full or max_wait
                    // has passed since the first job arrived.
                    if flow.spec().batchable && !self.options.max_wait.is_zero() {
                        let until = tokio::time::Instant::now() + self.options.max_wait;
                        while batch.len() < self.options.max_batch {
                            let left = until.saturating_duration_since(tokio::time::Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            let room = self.options.max_batch - batch.len();
                            match queue.pull(&id, room, left).await {
                                Ok(more) if !more.is_empty() => batch.extend(more),
                                _ => break,
                            }
                        }
                    }
                    self.process(&flow, batch).await
                }
                Err(e) => {
                    warn!(flow = %id, error = %e, "pull failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn process(&self, flow: &Arc<dyn Flow>, deliveries: Vec<Delivery>) {
        // One span for the batch, a child of the trace of its first job; queue wait is
        // recorded from the job's planning time.
        let span = tracing::info_span!(
            "compute",
            flow = %flow.spec().id,
            batch = deliveries.len(),
            queue_wait_ms = tracing::field::Empty
        );
        if let Some(first) = deliveries.first() {
            crate::trace::adopt(&span, &first.headers);
            span.record("queue_wait_ms", (now_ms() - first.job.planned_at_ms).max(0));
        }
        use tracing::Instrument;
        self.process_batch(flow, deliveries).instrument(span).await
    }

    async fn process_batch(&self, flow: &Arc<dyn Flow>, deliveries: Vec<Delivery>) {
        let mut runnable = Vec::with_capacity(deliveries.len());
        let mut inputs = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            // Delivered more often than it may be tried: it crashed or outlived its lease
            // every time. Do not run it again.
            if d.attempt
                >= self
                    .options
                    .max_deliveries
                    .max(self.options.max_attempts + 1)
            {
                let message = format!(
                    "delivered {} times without finishing (worker crashes or lease timeouts)",
                    d.attempt
                );
                self.dead_letter(d, &message).await;
                continue;
            }
            match self.flow_input(&d).await {
                Ok(input) => {
                    inputs.push(input);
                    runnable.push(d);
                }
                Err(message) => self.settle_failed(d, &message).await,
            }
        }
        if runnable.is_empty() {
            return;
        }
        let f = flow.clone();
        let n = inputs.len();
        let started = std::time::Instant::now();
        let mut compute = tokio::task::spawn_blocking(move || f.run(&inputs));
        // Long computations extend their leases so they are not redelivered meanwhile.
        let joined = loop {
            tokio::select! {
                r = &mut compute => break r,
                _ = tokio::time::sleep(self.options.progress_interval) => {
                    for d in &runnable {
                        if let Err(e) = d.in_progress().await {
                            debug!(error = %e, "in-progress ack failed");
                        }
                    }
                }
            }
        };
        crate::metrics::global()
            .compute_seconds
            .get_or_create(&crate::metrics::flow(&flow.spec().id.to_string()))
            .observe(started.elapsed().as_secs_f64());
        let outputs = match joined {
            Ok(out) if out.len() == n => out,
            Ok(out) => {
                let msg = format!("flow returned {} results for {n} inputs", out.len());
                (0..n)
                    .map(|_| Err(fstore_flows::Error::Permanent(msg.clone())))
                    .collect()
            }
            Err(e) => {
                let msg = format!("flow panicked: {e}");
                (0..n)
                    .map(|_| Err(fstore_flows::Error::Permanent(msg.clone())))
                    .collect()
            }
        };
        let declared = flow.spec().output;
        let flow_stats = self.stats.flow(&flow.spec().id.to_string());
        if let Some(woke) = flow_stats
            .woke_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let ms = woke.elapsed().as_millis() as u64;
            flow_stats.last_cold_start_ms.store(ms, Ordering::Relaxed);
            crate::metrics::global()
                .cold_start_seconds
                .get_or_create(&crate::metrics::flow(&flow.spec().id.to_string()))
                .observe(woke.elapsed().as_secs_f64());
            info!(flow = %flow.spec().id, cold_start_ms = ms, "woke from zero");
        }
        for (d, out) in runnable.into_iter().zip(outputs) {
            self.stats
                .count(format!("{}@{}", d.job.feature, d.job.feature_version));
            let out = out.and_then(|v| {
                let w = to_wire(&v)?;
                match wire_type(&w) {
                    Some(t) if t == declared => Ok(w),
                    t => Err(fstore_flows::Error::Permanent(format!(
                        "flow {} returned a {t:?} value but declares {declared}",
                        flow.spec().id
                    ))),
                }
            });
            match out {
                Ok(value) => self.settle_ok(d, value).await,
                Err(e) if e.is_transient() && d.attempt < self.options.max_attempts => {
                    let delay = backoff(&self.options, &d.job.value_key, d.attempt);
                    debug!(key = %d.job.value_key, attempt = d.attempt, ?delay, error = %e, "transient failure; retrying");
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::global()
                        .jobs_retried
                        .get_or_create(&job_flow(&d.job))
                        .inc();
                    if let Err(e) = d.nak(delay).await {
                        warn!(error = %e, "nak failed; the job will be redelivered");
                    }
                }
                Err(e) if e.is_transient() => {
                    let message = format!("{} (gave up after {} tries)", e.message(), d.attempt);
                    self.dead_letter(d, &message).await;
                }
                Err(e) => self.settle_failed(d, e.message()).await,
            }
        }
    }

    /// The flow input of a job, reading dependency values from the result store.
    async fn flow_input(&self, d: &Delivery) -> Result<FlowInput, String> {
        let job = &d.job;
        let mut values = BTreeMap::new();
        let now = now_ms();
        for input in &job.inputs {
            let wire = match &input.source {
                Some(Source::Value(v)) => v.clone(),
                Some(Source::ValueKey(key)) => {
                    let env = self
                        .dispatcher
                        .substrate()
                        .results
                        .get(key, 0)
                        .await
                        .map_err(|e| e.to_string())?;
                    match env {
                        Some(env) if env.expires_at_ms > now && env.error.is_empty() => {
                            env.value.clone().unwrap_or_default()
                        }
                        _ => {
                            return Err(format!(
                                "input `{}` expired before the compute ran; request the feature again",
                                input.name
                            ));
                        }
                    }
                }
                None => return Err(format!("input `{}` has no source", input.name)),
            };
            let v = to_flow(&wire).map_err(|e| format!("input `{}`: {e}", input.name))?;
            values.insert(input.name.clone(), v);
        }
        Ok(FlowInput {
            entity_id: job.entity_id.clone(),
            params: job.params.clone().into_iter().collect::<Params>(),
            values,
            attempt: d.attempt,
        })
    }

    #[tracing::instrument(name = "store", skip_all, fields(key = %d.job.value_key))]
    async fn settle_ok(&self, d: Delivery, value: fstore_proto::api::Value) {
        let job = &d.job;
        let now = now_ms();
        let envelope = ValueEnvelope {
            value: Some(value),
            computed_at_ms: now,
            expires_at_ms: now + job.ttl_ms as i64,
            planned_at_ms: job.planned_at_ms,
            feature: job.feature.clone(),
            feature_version: job.feature_version,
            lineage_hash: job.lineage_hash.clone(),
            attempts: d.attempt,
            error: String::new(),
            generation: job.generation,
        };
        match self.dispatcher.succeed(job, envelope).await {
            Ok(()) => {
                self.stats.completed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::global()
                    .jobs_completed
                    .get_or_create(&job_flow(&d.job))
                    .inc();
                if let Err(e) = d.ack().await {
                    warn!(error = %e, "ack failed; the job may run again");
                }
            }
            Err(e) => {
                warn!(key = %job.value_key, error = %e, "storing the value failed; retrying the job");
                let _ = d.nak(BACKEND_RETRY).await;
            }
        }
    }

    /// The job used up its attempts: keep it as a dead letter, fail its value and every
    /// job waiting on it, then ack (which deletes it from the work queue).
    async fn dead_letter(&self, d: Delivery, message: &str) {
        let s = self.dispatcher.substrate();
        let letter = crate::DeadLetter {
            id: String::new(),
            job: Some(d.job.clone()),
            error: message.to_string(),
            attempts: d.attempt,
            planned_at_ms: d.job.planned_at_ms,
            failed_at_ms: now_ms(),
        };
        if let Err(e) = s.dead_letters.put(letter).await {
            warn!(key = %d.job.value_key, error = %e, "storing the dead letter failed; retrying the job");
            let _ = d.nak(BACKEND_RETRY).await;
            return;
        }
        warn!(key = %d.job.value_key, feature = %d.job.feature, attempts = d.attempt, error = %message, "job dead-lettered");
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        crate::metrics::global()
            .dead_letters
            .get_or_create(&job_flow(&d.job))
            .inc();
        self.fail_and_settle(d, message, true).await;
    }

    async fn settle_failed(&self, d: Delivery, message: &str) {
        warn!(key = %d.job.value_key, feature = %d.job.feature, attempts = d.attempt, error = %message, "job failed");
        self.fail_and_settle(d, message, false).await;
    }

    /// Stores the failure of `d` and of every job waiting on it, then acks a dead-lettered
    /// job (deleting it from the work queue) or terminates a failed one. If the failure
    /// cannot be stored, the job is delivered again.
    async fn fail_and_settle(&self, d: Delivery, message: &str, dead_lettered: bool) {
        match self.dispatcher.fail(&d.job, message, d.attempt).await {
            Ok(()) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::global()
                    .jobs_failed
                    .get_or_create(&job_flow(&d.job))
                    .inc();
                let settled = if dead_lettered {
                    d.ack().await
                } else {
                    d.term().await
                };
                if let Err(e) = settled {
                    warn!(error = %e, "settling a failed job failed; it may be delivered again");
                }
            }
            Err(e) => {
                warn!(key = %d.job.value_key, error = %e, "storing the failure failed; retrying the job");
                let _ = d.nak(BACKEND_RETRY).await;
            }
        }
    }
}

fn job_flow(job: &crate::ComputeJob) -> crate::metrics::FlowLabel {
    crate::metrics::flow(&format!("{}@{}", job.flow, job.flow_version))
}

/// How long a job waits before it is delivered again when the backend could not store
/// its result: long enough to ride out a leader election, so that outage does not use
/// up the job's deliveries.
const BACKEND_RETRY: Duration = Duration::from_secs(1);

/// What a worker advertises for each flow of its catalog: spec and model state.
pub fn adverts(catalog: &Catalog) -> Vec<Advert> {
    catalog
        .ids()
        .filter_map(|id| catalog.get(id))
        .map(|f| Advert {
            spec: f.spec().clone(),
            model: f.model(),
        })
        .collect()
}

/// `base * 2^(attempt-1)`, capped, with ±50% jitter derived from the key and attempt
/// (so retries of many jobs spread out without a random source).
pub fn backoff(options: &WorkerOptions, key: &str, attempt: u32) -> Duration {
    let exp = options
        .retry_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(options.retry_max);
    let h = blake3::hash(format!("{key}/{attempt}").as_bytes());
    let r = f64::from(h.as_bytes()[0]) / 255.0; // 0..=1
    capped.mul_f64(0.5 + r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = WorkerOptions {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..WorkerOptions::default()
        };
        let d1 = backoff(&o, "k", 1);
        let d4 = backoff(&o, "k", 4);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(150));
        assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(1200));
        assert!(backoff(&o, "k", 30) <= Duration::from_millis(1500));
    }
}
