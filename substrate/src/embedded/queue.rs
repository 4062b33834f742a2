//! The embedded job queue: per flow and lane, one FIFO per tenant served round-robin.
//! The lanes of a flow share one wake-up, so a puller waiting on both lanes wakes for
//! a job in either.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fstore_flows::FlowId;
use tokio::sync::Notify;

use super::Options;
use crate::error::QueueLimit;
use crate::queue::{Depth, Enqueued, Lane, Settle, lane_scope};
use crate::task::Background;
use crate::{ComputeJob, Delivery, Error, Headers, JobQueue, message_id};

#[derive(Clone)]
struct Entry {
    job: ComputeJob,
    headers: Headers,
    attempt: u32,
}

#[derive(Default)]
struct FlowQueue {
    by_tenant: HashMap<String, VecDeque<Entry>>,
    /// Tenants with waiting jobs, in serving order.
    rotation: VecDeque<String>,
    queued: u64,
    in_flight: u64,
    /// Per tenant, jobs accepted and not yet settled (waiting, running or between tries).
    unsettled: HashMap<String, u64>,
    notify: Arc<Notify>,
}

impl FlowQueue {
    fn push(&mut self, entry: Entry) {
        let tenant = entry.job.tenant.clone();
        let q = self.by_tenant.entry(tenant.clone()).or_default();
        if q.is_empty() {
            self.rotation.push_back(tenant);
        }
        q.push_back(entry);
        self.queued += 1;
        self.notify.notify_one();
    }

    /// The next job, taking tenants in turn.
    fn pop(&mut self) -> Option<Entry> {
        let tenant = self.rotation.pop_front()?;
        let q = self.by_tenant.get_mut(&tenant)?;
        let entry = q.pop_front();
        if q.is_empty() {
            self.by_tenant.remove(&tenant);
        } else {
            self.rotation.push_back(tenant);
        }
        if entry.is_some() {
            self.queued -= 1;
        }
        entry
    }

    fn unsettled_of(&self, tenant: &str) -> u64 {
        self.unsettled.get(tenant).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct State {
    /// By [`lane_key`].
    flows: HashMap<String, FlowQueue>,
    /// Per flow, the wake-up its lanes share.
    wake: HashMap<String, Arc<Notify>>,
    /// Message ids seen, with when; pruned past the duplicate window.
    seen: HashMap<String, Instant>,
    seen_order: VecDeque<(Instant, String)>,
}

struct Shared {
    state: Mutex<State>,
    options: Options,
    /// Timers of nak'ed jobs waiting out their delay.
    background: Background,
}

impl State {
    /// The queue of (`flow`, `lane`), made with the flow's shared wake-up.
    fn lane(&mut self, flow: &str, lane: Lane) -> &mut FlowQueue {
        let notify = self.wake.entry(flow.to_string()).or_default().clone();
        self.flows
            .entry(lane_key(flow, lane))
            .or_insert_with(|| FlowQueue {
                notify,
                ..FlowQueue::default()
            })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated in a way
        // that matters more than stopping service, so recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn requeue(&self, entry: Entry) {
        let mut state = self.lock();
        let fq = state.lane(&flow_key(&entry.job), entry.job.lane());
        fq.in_flight = fq.in_flight.saturating_sub(1);
        fq.push(entry);
    }

    fn finish(&self, job: &ComputeJob) {
        let mut state = self.lock();
        if let Some(fq) = state.flows.get_mut(&lane_key(&flow_key(job), job.lane())) {
            fq.in_flight = fq.in_flight.saturating_sub(1);
            if let Some(n) = fq.unsettled.get_mut(&job.tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    fq.unsettled.remove(&job.tenant);
                }
            }
        }
    }
}

fn flow_key(job: &ComputeJob) -> String {
    format!("{}@{}", job.flow, job.flow_version)
}

fn lane_key(flow: &str, lane: Lane) -> String {
    format!("{flow}#{}", lane.as_str_name())
}

/// The in-process queue. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedQueue {
    shared: Arc<Shared>,
}

impl EmbeddedQueue {
    pub fn new(options: &Options) -> Self {
        EmbeddedQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                options: options.clone(),
                background: Background::default(),
            }),
        }
    }

    /// Ends the delays of nak'ed jobs (each is queued again at once) and waits until
    /// every timer has ended.
    pub async fn shutdown(&self) {
        self.shared.background.shutdown().await;
    }
}

#[async_trait]
impl JobQueue for EmbeddedQueue {
    async fn enqueue(&self, job: &ComputeJob, headers: &Headers) -> Result<Enqueued, Error> {
        let id = message_id(job);
        let now = Instant::now();
        let window = self.shared.options.duplicate_window;
        let mut state = self.shared.lock();
        while let Some((at, _)) = state.seen_order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            if let Some((at, old)) = state.seen_order.pop_front()
                && state.seen.get(&old) == Some(&at)
            {
                state.seen.remove(&old);
            }
        }
        if state.seen.contains_key(&id) {
            return Ok(Enqueued::Duplicate);
        }
        let opts = &self.shared.options;
        let flow = flow_key(job);
        let fq = state.lane(&flow, job.lane());
        if fq.queued + fq.in_flight >= opts.max_queued_per_flow {
            return Err(Error::QueueFull {
                kind: QueueLimit::PerFlow,
                scope: format!("flow {flow}{}", lane_scope(job.lane())),
                limit: opts.max_queued_per_flow,
                retry_after_ms: 1000,
            });
        }
        if fq.unsettled_of(&job.tenant) >= opts.max_queued_per_tenant {
            return Err(Error::QueueFull {
                kind: QueueLimit::PerTenant,
                scope: format!(
                    "flow {flow}{} for tenant {}",
                    lane_scope(job.lane()),
                    job.tenant
                ),
                limit: opts.max_queued_per_tenant,
                retry_after_ms: 1000,
            });
        }
        *fq.unsettled.entry(job.tenant.clone()).or_default() += 1;
        fq.push(Entry {
            job: job.clone(),
            headers: headers.clone(),
            attempt: 1,
        });
        state.seen.insert(id.clone(), now);
        state.seen_order.push_back((now, id));
        Ok(Enqueued::Added)
    }

    async fn pull(
        &self,
        flow: &FlowId,
        lanes: &[Lane],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let key = flow.to_string();
        loop {
            let notify = {
                let mut state = self.shared.lock();
                let mut out = Vec::new();
                for &lane in lanes {
                    let fq = state.lane(&key, lane);
                    while out.len() < max.max(1) {
                        let Some(entry) = fq.pop() else { break };
                        fq.in_flight += 1;
                        out.push(entry);
                    }
                }
                if !out.is_empty() {
                    return Ok(out
                        .into_iter()
                        .map(|e| {
                            Delivery::new(
                                e.job.clone(),
                                e.headers.clone(),
                                e.attempt,
                                Box::new(EmbeddedSettle {
                                    shared: self.shared.clone(),
                                    entry: Mutex::new(Some(e)),
                                }),
                            )
                        })
                        .collect());
                }
                state.wake.entry(key.clone()).or_default().clone()
            };
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn depth(&self, flow: &FlowId) -> Result<Depth, Error> {
        let state = self.shared.lock();
        let flow = flow.to_string();
        let mut depth = Depth::default();
        for fq in [Lane::Interactive, Lane::Batch]
            .iter()
            .filter_map(|&lane| state.flows.get(&lane_key(&flow, lane)))
        {
            depth.total += fq.queued + fq.in_flight;
            for (tenant, n) in &fq.unsettled {
                *depth.tenants.entry(tenant.clone()).or_default() += n;
            }
        }
        Ok(depth)
    }
}

/// Settles one embedded delivery. Dropped unsettled (a worker task cancelled or
/// panicking), it hands the job back to the queue.
struct EmbeddedSettle {
    shared: Arc<Shared>,
    entry: Mutex<Option<Entry>>,
}

impl EmbeddedSettle {
    fn take(&self) -> Option<Entry> {
        self.entry.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(&self) -> Result<(), Error> {
        if let Some(e) = self.take() {
            self.shared.finish(&e.job);
        }
        Ok(())
    }

    async fn nak(&self, delay: Duration) -> Result<(), Error> {
        if let Some(mut e) = self.take() {
            e.attempt += 1;
            let shared = self.shared.clone();
            if delay.is_zero() {
                shared.requeue(e);
            } else {
                let stop = shared.background.token().clone();
                self.shared
                    .background
                    .spawn("embedded nak delay", async move {
                        // Shut down early, the job is queued at once rather than lost.
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::sleep(delay) => {}
                        }
                        shared.requeue(e);
                    });
            }
        }
        Ok(())
    }

    async fn term(&self) -> Result<(), Error> {
        self.ack().await
    }

    async fn in_progress(&self) -> Result<(), Error> {
        Ok(())
    }
}

impl Drop for EmbeddedSettle {
    fn drop(&mut self) {
        if let Some(mut e) = self.take() {
            e.attempt += 1;
            self.shared.requeue(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str, tenant: &str) -> ComputeJob {
        ComputeJob {
            value_key: key.to_string(),
            generation: 1,
            tenant: tenant.to_string(),
            flow: "f".to_string(),
            flow_version: 1,
            ..Default::default()
        }
    }

    fn flow() -> FlowId {
        FlowId::new("f", 1)
    }

    /// The one delivery a test expects to be waiting.
    async fn pull_one(q: &EmbeddedQueue) -> Delivery {
        pull_one_of(q, Lane::Interactive).await
    }

    async fn pull_one_of(q: &EmbeddedQueue, lane: Lane) -> Delivery {
        q.pull(&flow(), &[lane], 1, Duration::from_millis(10))
            .await
            .expect("pull")
            .remove(0)
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_tenants_take_turns() {
        let q = EmbeddedQueue::new(&Options::for_tests());
        let h = Headers::new();
        for i in 0..3 {
            assert_eq!(
                q.enqueue(&job(&format!("a{i}"), "a"), &h).await.ok(),
                Some(Enqueued::Added)
            );
        }
        assert_eq!(
            q.enqueue(&job("a0", "a"), &h).await.ok(),
            Some(Enqueued::Duplicate)
        );
        q.enqueue(&job("b0", "b"), &h).await.expect("enqueue");
        let got = q
            .pull(&flow(), &[Lane::Interactive], 3, Duration::from_millis(10))
            .await
            .expect("pull");
        let tenants: Vec<&str> = got.iter().map(|d| d.job.tenant.as_str()).collect();
        assert_eq!(tenants, vec!["a", "b", "a"]);
        assert_eq!(q.depth(&flow()).await.expect("depth").total, 4);
    }

    #[tokio::test]
    async fn nak_redelivers_with_attempt_count_and_drop_hands_back() {
        let q = EmbeddedQueue::new(&Options::for_tests());
        q.enqueue(&job("k", "t"), &Headers::new())
            .await
            .expect("enqueue");
        let d = pull_one(&q).await;
        assert_eq!(d.attempt, 1);
        d.nak(Duration::ZERO).await.expect("nak");
        let d = pull_one(&q).await;
        assert_eq!(d.attempt, 2);
        drop(d);
        let d = pull_one(&q).await;
        assert_eq!(d.attempt, 3);
        d.ack().await.expect("ack");
        assert_eq!(q.depth(&flow()).await.expect("depth").total, 0);
        assert!(
            q.pull(&flow(), &[Lane::Interactive], 1, Duration::from_millis(10))
                .await
                .expect("pull")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn shutdown_ends_nak_delays_and_keeps_the_job() {
        let q = EmbeddedQueue::new(&Options::for_tests());
        q.enqueue(&job("k", "t"), &Headers::new())
            .await
            .expect("enqueue");
        let d = pull_one(&q).await;
        d.nak(Duration::from_secs(3600)).await.expect("nak");
        tokio::time::timeout(Duration::from_secs(5), q.shutdown())
            .await
            .expect("shutdown joins the nak timer at once");
        let d = q
            .pull(&flow(), &[Lane::Interactive], 1, Duration::from_millis(10))
            .await
            .expect("pull");
        assert_eq!(d.len(), 1, "the nak'ed job is queued again, not lost");
        assert_eq!(d[0].attempt, 2);
    }

    #[tokio::test]
    async fn lanes_are_taken_in_the_order_asked_and_bounded_apart() {
        let q = EmbeddedQueue::new(&Options {
            max_queued_per_tenant: 2,
            ..Options::for_tests()
        });
        let h = Headers::new();
        let batch = |key: &str| ComputeJob {
            lane: Lane::Batch as i32,
            ..job(key, "t")
        };
        q.enqueue(&batch("b0"), &h).await.expect("enqueue");
        q.enqueue(&batch("b1"), &h).await.expect("enqueue");
        let full = q.enqueue(&batch("b2"), &h).await;
        assert!(matches!(full, Err(Error::QueueFull { .. })), "{full:?}");
        q.enqueue(&job("i0", "t"), &h)
            .await
            .expect("a full batch lane leaves the interactive lane open");
        let both = [Lane::Interactive, Lane::Batch];
        let first = q
            .pull(&flow(), &both, 2, Duration::from_millis(10))
            .await
            .expect("pull");
        let keys: Vec<&str> = first.iter().map(|d| d.job.value_key.as_str()).collect();
        assert_eq!(keys, vec!["i0", "b0"], "interactive first, then batch");
        assert_eq!(
            q.depth(&flow()).await.expect("depth").total,
            3,
            "both lanes"
        );
        for d in first {
            d.ack().await.expect("ack");
        }
        let got = q
            .pull(&flow(), &[Lane::Interactive], 2, Duration::from_millis(10))
            .await
            .expect("pull");
        assert!(got.is_empty(), "the batch lane was not asked for");
        pull_one_of(&q, Lane::Batch).await.ack().await.expect("ack");
        // A puller waiting on both lanes wakes for a batch job.
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move {
                let both = [Lane::Interactive, Lane::Batch];
                q.pull(&flow(), &both, 1, Duration::from_secs(5))
                    .await
                    .map(|d| d.len())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.enqueue(&batch("b3"), &h).await.expect("enqueue");
        let n = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined")
            .expect("pulled");
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn full_queue_refuses() {
        let q = EmbeddedQueue::new(&Options {
            max_queued_per_tenant: 1,
            ..Options::for_tests()
        });
        q.enqueue(&job("x", "t"), &Headers::new())
            .await
            .expect("enqueue");
        let err = q.enqueue(&job("y", "t"), &Headers::new()).await;
        assert!(matches!(err, Err(Error::QueueFull { limit: 1, .. })));
        assert!(q.enqueue(&job("z", "other"), &Headers::new()).await.is_ok());
    }
}
