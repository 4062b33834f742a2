//! A slot: one pull-compute loop of a flow. It pulls up to `max_batch` jobs —
//! interactive ones first, batch ones when no interactive job waits, and one pull in
//! `batch_every` the other way round, so neither lane starves — keeps filling the batch
//! for at most `max_wait` (dynamic batching), reads the jobs' key inputs, runs one
//! `Flow::run` on the blocking pool while extending the jobs' leases, and settles the
//! batch's jobs together, each on its own.
//!
//! When every slot a batchable flow may have here is busy, a slot's next batch forms
//! while its current one runs, as text-embeddings-inference forms its batches:
//! interactive jobs that arrive meanwhile are pulled (up to `max_batch`, their leases
//! kept) and run as soon as the slot is free, with no wait timer. Below capacity they
//! stay in the queue for a slot that can run them now. The turn that takes the batch
//! lane first pulls afresh, so backfills still get their share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fstore_flows::{Flow, FlowId, FlowInput, Params};
use fstore_proto::wire::job_input::Source;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use super::settle::BACKEND_RETRY;
use super::{FlowStats, Worker};
use crate::convert::{to_flow, to_wire, wire_type};
use crate::queue::Lane;
use crate::time::now_ms;
use crate::{Delivery, Failure, JobQueue};

/// The order a slot takes the lanes in on its `turn`-th pull: interactive first, and
/// batch first once every `batch_every` pulls (never when it is 0).
fn lane_order(turn: u32, batch_every: u32) -> [Lane; 2] {
    if batch_every > 0 && turn.is_multiple_of(batch_every) {
        [Lane::Batch, Lane::Interactive]
    } else {
        [Lane::Interactive, Lane::Batch]
    }
}

/// Extends the leases of `jobs` (in-progress acks), so waiting or long computations are
/// not redelivered.
async fn extend_leases(jobs: &[Delivery]) {
    for d in jobs {
        if let Err(e) = d.in_progress().await {
            debug!(error = %e, "in-progress ack failed");
        }
    }
}

/// Why a job's flow input could not be read.
enum Unready {
    /// Key inputs expired (or failed retryably) before the compute ran, by name: they
    /// are computed again and the job waits for them.
    Expired(Vec<String>),
    /// The result store could not be read: the job comes back.
    Backend(crate::Error),
    /// The job cannot run: an input failed for good, or is malformed.
    Invalid(Failure),
}

/// How long a slot waits before pulling again after a failed pull.
const PULL_RETRY: Duration = Duration::from_millis(500);

/// How long one pull waits for a first job before the slot checks for shutdown again.
const PULL_WAIT: Duration = Duration::from_secs(1);

/// How long one pull for the next batch waits for a job before checking whether the
/// current batch is done. A job that comes wakes the pull at once; this bounds only how
/// late an idle slot notices that its batch has ended.
const AHEAD_WAIT: Duration = Duration::from_millis(100);

/// A slot holding a batch, counted in its flow's stats while it lives.
struct Busy {
    stats: Arc<FlowStats>,
    jobs: u64,
}

impl Busy {
    fn new(stats: Arc<FlowStats>, jobs: usize) -> Self {
        let jobs = jobs as u64;
        stats.busy_slots.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(jobs, Ordering::Relaxed);
        Busy { stats, jobs }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_sub(self.jobs, Ordering::Relaxed);
    }
}

impl Worker {
    /// Pulls and computes batches of flow `id` until `shutdown`; a batch in progress
    /// is finished and settled first.
    ///
    /// `batch_slots` bounds the slots of the flow that hold batch jobs at once: a slot
    /// that gets no permit pulls interactive jobs only, so an interactive job finds a
    /// slot free of backfill work.
    pub(super) async fn serve(
        &self,
        id: FlowId,
        batch_slots: Arc<Semaphore>,
        shutdown: CancellationToken,
    ) {
        let Some(flow) = self.catalog.get(&id).cloned() else {
            return;
        };
        let queue = self.dispatcher.substrate().queue.clone();
        let stats = self.stats.flow(&id.to_string());
        let mut turn = 0u32;
        // The next batch, formed while the last one ran; computed even after a stop.
        let mut ahead: Vec<Delivery> = Vec::new();
        while !shutdown.is_cancelled() || !ahead.is_empty() {
            turn = turn.wrapping_add(1);
            let permit = batch_slots.clone().try_acquire_owned().ok();
            let both = lane_order(turn, self.options.batch_every);
            let lanes: &[Lane] = if permit.is_some() {
                &both
            } else {
                &[Lane::Interactive]
            };
            // A pull is never cut short, even by a stop (the autoscaler scaling down, a
            // shutdown): one dropped mid-way would drop the jobs it had taken with it,
            // which come back only when their lease runs out (`nats.ack_wait`), and a
            // call waiting on them looks lost meanwhile. It waits at most PULL_WAIT, and
            // what it brings is computed and settled before the slot stops.
            let pulled = if ahead.is_empty() {
                queue
                    .pull(&id, lanes, self.options.max_batch, PULL_WAIT)
                    .await
            } else {
                stats.ahead.fetch_sub(ahead.len() as u64, Ordering::Relaxed);
                Ok(std::mem::take(&mut ahead))
            };
            match pulled {
                Ok(batch) if batch.is_empty() => {}
                Ok(mut batch) => {
                    if flow.spec().batchable && !self.options.max_wait.is_zero() {
                        self.fill(queue.as_ref(), &id, lanes, &mut batch).await;
                    }
                    // The permit is held while the batch holds batch jobs.
                    let _held =
                        permit.filter(|_| batch.iter().any(|d| d.job.lane() == Lane::Batch));
                    let _busy = Busy::new(stats.clone(), batch.len());
                    // Not before a turn that takes the batch lane first: it pulls afresh.
                    let next_first = lane_order(turn.wrapping_add(1), self.options.batch_every)[0];
                    let form_ahead = flow.spec().batchable
                        && self.options.max_batch > 1
                        && next_first == Lane::Interactive
                        && !shutdown.is_cancelled();
                    if form_ahead {
                        let done = CancellationToken::new();
                        let run = async {
                            self.process(&flow, batch).await;
                            done.cancel();
                        };
                        let next = self.form_ahead(queue.as_ref(), &id, &stats, &done);
                        ahead = tokio::join!(run, next).1;
                    } else {
                        self.process(&flow, batch).await;
                    }
                }
                Err(e) => {
                    warn!(flow = %id, error = %e, "pull failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(PULL_RETRY) => {}
                    }
                }
            }
        }
    }

    /// Whether every slot the flow may have here runs a batch: only then is a job better
    /// off in this slot's next batch than in the queue, where another slot (a new one
    /// the autoscaler starts, one that frees up) would take it at once.
    fn at_capacity(&self, id: &FlowId, stats: &FlowStats) -> bool {
        let slots = stats.slots.load(Ordering::Relaxed);
        slots >= self.bounds(id).max as u64 && stats.busy_slots.load(Ordering::Relaxed) >= slots
    }

    /// The next batch, formed while the current one runs (until `done`), while the flow
    /// is at capacity: interactive jobs as they arrive, up to `max_batch`, their leases
    /// extended while they wait.
    async fn form_ahead(
        &self,
        queue: &dyn JobQueue,
        id: &FlowId,
        stats: &FlowStats,
        done: &CancellationToken,
    ) -> Vec<Delivery> {
        let mut ahead: Vec<Delivery> = Vec::new();
        let mut extended = tokio::time::Instant::now();
        while !done.is_cancelled()
            && ahead.len() < self.options.max_batch
            && self.at_capacity(id, stats)
        {
            let room = self.options.max_batch - ahead.len();
            match queue.pull(id, &[Lane::Interactive], room, AHEAD_WAIT).await {
                Ok(more) => {
                    stats.ahead.fetch_add(more.len() as u64, Ordering::Relaxed);
                    ahead.extend(more);
                }
                Err(e) => {
                    debug!(flow = %id, error = %e, "pulling the next batch failed; it forms after this one");
                    break;
                }
            }
            if extended.elapsed() >= self.options.progress_interval {
                extend_leases(&ahead).await;
                extended = tokio::time::Instant::now();
            }
        }
        // Full (or the pull failed) while the current batch runs: keep the leases.
        while !done.is_cancelled() {
            tokio::select! {
                _ = done.cancelled() => {}
                _ = tokio::time::sleep(self.options.progress_interval) => extend_leases(&ahead).await,
            }
        }
        ahead
    }

    /// Dynamic batching: keeps pulling until the batch is full or `max_wait` has passed
    /// since its first job arrived.
    async fn fill(
        &self,
        queue: &dyn JobQueue,
        id: &FlowId,
        lanes: &[Lane],
        batch: &mut Vec<Delivery>,
    ) {
        let until = tokio::time::Instant::now() + self.options.max_wait;
        while batch.len() < self.options.max_batch {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let room = self.options.max_batch - batch.len();
            match queue.pull(id, lanes, room, left).await {
                Ok(more) if !more.is_empty() => batch.extend(more),
                _ => break,
            }
        }
    }

    /// Computes and settles one batch, in a `compute` span that continues the trace of
    /// its first job and records how long that job waited in the queue.
    async fn process(&self, flow: &Arc<dyn Flow>, deliveries: Vec<Delivery>) {
        let span = tracing::info_span!(
            "compute",
            flow = %flow.spec().id,
            batch = deliveries.len(),
            queue_wait_ms = tracing::field::Empty
        );
        if let Some(first) = deliveries.first() {
            crate::trace::adopt(&span, &first.headers);
            span.record(
                "queue_wait_ms",
                now_ms().saturating_sub(first.job.planned_at_ms).max(0),
            );
        }
        self.process_batch(flow, deliveries).instrument(span).await
    }

    async fn process_batch(&self, flow: &Arc<dyn Flow>, deliveries: Vec<Delivery>) {
        let policy = self.retry_policy();
        let mut runnable = Vec::with_capacity(deliveries.len());
        let mut inputs = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let Some(d) = self.already_settled(d).await else {
                continue;
            };
            if let Some(message) = policy.crash_looped(d.attempt) {
                self.dead_letter(d, &message, false).await;
                continue;
            }
            match self.flow_input(&d).await {
                Ok(input) => {
                    inputs.push(input);
                    runnable.push(d);
                }
                Err(Unready::Expired(names)) => self.requeue(d, &names).await,
                Err(Unready::Backend(e)) => {
                    warn!(key = %d.job.value_key, error = %e, "reading the job's inputs failed; retrying");
                    let _ = d.nak(BACKEND_RETRY).await;
                }
                Err(Unready::Invalid(failure)) => self.settle_failed(d, &failure).await,
            }
        }
        if runnable.is_empty() {
            return;
        }
        self.admit(&flow.spec().id, &runnable).await;
        let outputs = self.compute(flow, inputs, &runnable).await;
        let spec = flow.spec();
        self.stats
            .flow(&spec.id.to_string())
            .batch_finished(&spec.id);
        // The jobs of a batch are settled together: each waits on a few round trips to
        // the backend (store, log, claim, ack), which would add up one after another.
        let settled = runnable.into_iter().zip(outputs).map(|(d, out)| {
            self.stats
                .count(format!("{}@{}", d.job.feature, d.job.feature_version));
            let out = out.and_then(|v| {
                let w = to_wire(&v)?;
                match wire_type(&w) {
                    Some(t) if t == spec.output => Ok(w),
                    t => Err(fstore_flows::Error::Permanent(format!(
                        "flow {} returned a {t:?} value but declares {}",
                        spec.id, spec.output
                    ))),
                }
            });
            self.settle(d, out, &policy)
        });
        futures::future::join_all(settled).await;
    }

    /// Waits until the flow's shared rate limit admits `running` (when it has one),
    /// extending their leases meanwhile: jobs above the rate wait, none is dropped.
    async fn admit(&self, flow: &FlowId, running: &[Delivery]) {
        let name = flow.to_string();
        let Some(per_sec) = self
            .options
            .rates
            .iter()
            .find(|(f, _)| *f == flow.name || *f == name)
            .map(|(_, r)| *r)
        else {
            return;
        };
        let n = u32::try_from(running.len()).unwrap_or(u32::MAX);
        let waiting = crate::metrics::global()
            .rate_waiting
            .get_or_create(&crate::metrics::flow(&name))
            .clone();
        waiting.inc_by(i64::from(n));
        let rates = &self.dispatcher.substrate().rates;
        let wait = loop {
            match rates.reserve(&name, n, per_sec).await {
                Ok(wait) => break wait,
                Err(e) => {
                    warn!(flow = %name, error = %e, "cannot reserve the flow's rate; trying again");
                    self.hold(running, PULL_RETRY).await;
                }
            }
        };
        self.hold(running, wait).await;
        waiting.dec_by(i64::from(n));
    }

    /// Sleeps `wait`, sending in-progress acks for `running` meanwhile.
    async fn hold(&self, running: &[Delivery], wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = tokio::time::sleep(self.options.progress_interval) => extend_leases(running).await,
            }
        }
    }

    /// Runs the flow on the blocking pool, sending in-progress acks for `running`
    /// meanwhile so long computations are not redelivered. One result per input: a
    /// panic or a wrong count fails every job of the batch permanently.
    async fn compute(
        &self,
        flow: &Arc<dyn Flow>,
        inputs: Vec<FlowInput>,
        running: &[Delivery],
    ) -> Vec<Result<fstore_flows::Value, fstore_flows::Error>> {
        let f = flow.clone();
        let n = inputs.len();
        let started = std::time::Instant::now();
        // Awaited below, so the blocking task never outlives the slot's batch.
        let mut compute = tokio::task::spawn_blocking(move || f.run(&inputs));
        let joined = loop {
            tokio::select! {
                r = &mut compute => break r,
                _ = tokio::time::sleep(self.options.progress_interval) => extend_leases(running).await,
            }
        };
        crate::metrics::global()
            .compute_seconds
            .get_or_create(&crate::metrics::flow(&flow.spec().id.to_string()))
            .observe(started.elapsed().as_secs_f64());
        let failed = |msg: String| {
            (0..n)
                .map(|_| Err(fstore_flows::Error::Permanent(msg.clone())))
                .collect()
        };
        match joined {
            Ok(out) if out.len() == n => out,
            Ok(out) => failed(format!(
                "flow returned {} results for {n} inputs",
                out.len()
            )),
            Err(e) => failed(format!("flow panicked: {e}")),
        }
    }

    /// The flow input of a job, reading dependency values from the result store.
    async fn flow_input(&self, d: &Delivery) -> Result<FlowInput, Unready> {
        let job = &d.job;
        let invalid = |error: String| Unready::Invalid(Failure::permanent(error, d.attempt));
        let mut values = BTreeMap::new();
        let mut expired = Vec::new();
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
                        .map_err(Unready::Backend)?;
                    match env {
                        Some(env) if env.expires_at_ms > now && env.error.is_empty() => {
                            env.value.clone().unwrap_or_default()
                        }
                        // Failed for good since the job was enqueued: so does the job.
                        Some(env)
                            if env.expires_at_ms > now
                                && !env.retryable
                                && env.computed_at_ms >= job.planned_at_ms =>
                        {
                            return Err(invalid(format!(
                                "input `{}` failed: {}",
                                input.name, env.error
                            )));
                        }
                        _ => {
                            expired.push(input.name.clone());
                            continue;
                        }
                    }
                }
                None => return Err(invalid(format!("input `{}` has no source", input.name))),
            };
            let v = to_flow(&wire).map_err(|e| invalid(format!("input `{}`: {e}", input.name)))?;
            values.insert(input.name.clone(), v);
        }
        if !expired.is_empty() {
            return Err(Unready::Expired(expired));
        }
        Ok(FlowInput {
            entity_id: job.entity_id.clone(),
            params: job.params.clone().into_iter().collect::<Params>(),
            values,
            attempt: d.attempt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_lane_goes_first_once_every_batch_every_pulls() {
        let firsts: Vec<Lane> = (1..=8).map(|t| lane_order(t, 4)[0]).collect();
        let batch_first = firsts.iter().filter(|l| **l == Lane::Batch).count();
        assert_eq!(batch_first, 2, "{firsts:?}");
        assert!((1..=100).all(|t| lane_order(t, 0)[0] == Lane::Interactive));
        assert_eq!(lane_order(4, 4), [Lane::Batch, Lane::Interactive]);
    }
}
