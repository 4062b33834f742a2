//! The worker: serves the flows of a catalog until shutdown. Per flow an autoscaler
//! ([`autoscaler`]) keeps a number of slots that follows the queue depth; each slot
//! ([`slot`]) pulls a batch, runs the flow once on the blocking pool and settles every
//! job on its own ([`settle`]): store the value or the failure, release the claim,
//! notify, continue dependents, and only then ack. How a failed job is tried again is
//! the retry policy ([`retry`]).
//!
//! Shutdown joins every task the worker started, in this order: the slots stop pulling
//! and finish (or nak) the jobs they hold, then each autoscaler stops, then the worker
//! withdraws from the flow directory.

mod autoscaler;
mod retry;
mod settle;
pub mod sidecar;
mod slot;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fstore_flows::{Catalog, FlowId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::dispatch::Dispatcher;
use crate::task::spawn_named;
use crate::{Advert, Error, Substrate};

pub use retry::backoff;

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
    /// One pull in this many takes the batch lane before the interactive one (0: never).
    pub batch_every: u32,
    /// Slots of a flow that may hold batch jobs at once (0: all but one).
    pub batch_slots: usize,
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
    /// How long a claim the worker takes (recomputing an expired input) holds.
    pub claim_ttl: Duration,
    /// How often the worker renews its presence in the flow directory.
    pub heartbeat: Duration,
    /// How often a running batch extends its jobs' leases (in-progress acks); keep it
    /// well under the queue's ack wait.
    pub progress_interval: Duration,
    /// Per flow (`name` or `name@version`), jobs per second across every worker.
    pub rates: Vec<(String, f64)>,
}

/// Slots and cold starts of one flow.
#[derive(Debug, Default)]
pub struct FlowStats {
    pub slots: AtomicU64,
    /// Slots holding a batch now, and the jobs those batches hold: what the autoscaler
    /// weighs against the depth to see jobs waiting while every slot is busy.
    pub busy_slots: AtomicU64,
    pub in_flight: AtomicU64,
    /// Jobs pulled for the next batch while the current one runs.
    pub ahead: AtomicU64,
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
    /// Jobs put back to wait for inputs that expired before they ran.
    pub requeued: AtomicU64,
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
            dispatcher: Dispatcher::new(
                substrate,
                options.failure_ttl,
                options.claim_ttl,
                TaskTracker::new(),
            ),
            catalog,
            options,
            stats: Arc::new(WorkerStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Advertises the flows, then serves them until `shutdown`; batches in progress
    /// finish, and every task the worker started has ended when this returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let substrate = self.dispatcher.substrate().clone();
        let flows = adverts(&self.catalog);
        let advertise = || {
            substrate
                .directory
                .advertise(&self.options.worker_id, &flows)
        };
        crate::startup::retry("advertising the worker's flows", advertise, |e| {
            matches!(e, Error::Unavailable(_))
        })
        .await?;
        info!(worker = %self.options.worker_id, flows = ?self.catalog.ids().map(ToString::to_string).collect::<Vec<_>>(), "worker serving");
        let this = Arc::new(self);
        let tasks = TaskTracker::new();
        {
            let directory = substrate.directory.clone();
            let id = this.options.worker_id.clone();
            let catalog = this.catalog.clone();
            let stats = this.stats.clone();
            let every = this.options.heartbeat;
            let shutdown = shutdown.clone();
            spawn_named(&tasks, "worker heartbeat", async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    let flows = serving(&catalog, &stats);
                    if let Err(e) = directory.advertise(&id, &flows).await {
                        warn!(error = %e, "heartbeat failed; retrying");
                    }
                }
            });
        }
        for id in this.catalog.ids().cloned().collect::<Vec<_>>() {
            let this = this.clone();
            let shutdown = shutdown.clone();
            let name = format!("autoscaler {id}");
            spawn_named(&tasks, &name, async move { this.scale(id, shutdown).await });
        }
        // Each autoscaler returns only after its slots have settled what they held.
        tasks.close();
        tasks.wait().await;
        // Claims its recomputes of expired inputs gave back.
        let releases = this.dispatcher.tasks();
        releases.close();
        releases.wait().await;
        substrate
            .directory
            .withdraw(&this.options.worker_id)
            .await?;
        info!(worker = %this.options.worker_id, "worker stopped");
        Ok(())
    }

    /// The slot bounds of a flow: its own entry in the scaling options, else the
    /// worker's; at least one slot at most, and `min <= max`.
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
}

/// The metrics label of a job's flow (`name@version`).
fn job_flow(job: &crate::ComputeJob) -> crate::metrics::FlowLabel {
    crate::metrics::flow(&format!("{}@{}", job.flow, job.flow_version))
}

/// What a worker advertises for each flow of its catalog: spec and model state.
pub fn adverts(catalog: &Catalog) -> Vec<Advert> {
    catalog
        .ids()
        .filter_map(|id| catalog.get(id))
        .map(|f| Advert {
            spec: f.spec().clone(),
            model: f.model(),
            slots: 0,
        })
        .collect()
}

/// The adverts of a worker serving `catalog`: each flow with the slots it runs now.
fn serving(catalog: &Catalog, stats: &WorkerStats) -> Vec<Advert> {
    let mut flows = adverts(catalog);
    for advert in &mut flows {
        let slots = stats
            .flow(&advert.spec.id.to_string())
            .slots
            .load(std::sync::atomic::Ordering::Relaxed);
        advert.slots = u32::try_from(slots).unwrap_or(u32::MAX);
    }
    flows
}

/// Options for unit tests: small, explicit numbers. The defaults users get live in
/// the feature store's configuration, the only place defaults are defined.
#[cfg(test)]
pub(crate) fn test_options() -> WorkerOptions {
    WorkerOptions {
        worker_id: "test-worker".to_string(),
        slots: 2,
        min_slots: 1,
        scaling: ScalingOptions {
            jobs_per_slot: 16,
            scale_down_after: Duration::from_secs(30),
            tick: Duration::from_millis(250),
            flows: Vec::new(),
        },
        max_batch: 16,
        max_wait: Duration::ZERO,
        batch_every: 8,
        batch_slots: 0,
        max_attempts: 5,
        max_deliveries: 20,
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(30),
        failure_ttl: Duration::from_secs(60),
        claim_ttl: Duration::from_secs(600),
        heartbeat: Duration::from_secs(2),
        progress_interval: Duration::from_secs(10),
        rates: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    type Running = tokio::task::JoinHandle<Result<(), Error>>;

    /// Stops the worker and waits until every task of it has ended, cleanly.
    async fn stop(shutdown: CancellationToken, running: Running) {
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("run returns once every task has ended")
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly");
    }

    /// Waits (at most 5 s) until `done` holds; `what` says what did not happen.
    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }

    #[tokio::test]
    async fn shutdown_joins_slots_and_autoscalers_then_withdraws() {
        let substrate =
            crate::embedded::substrate(&crate::embedded::Options::for_tests()).expect("substrate");
        let catalog = Catalog::builtins().only(&["num.affine".to_string()]);
        let worker = Worker::new(
            substrate.clone(),
            catalog,
            WorkerOptions {
                worker_id: "w1".to_string(),
                scaling: ScalingOptions {
                    tick: Duration::from_millis(10),
                    ..test_options().scaling
                },
                ..test_options()
            },
        );
        let stats = worker.stats();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let flow = stats.flow("num.affine@1");
        wait_until("the flow's minimum slot starts", || {
            flow.slots.load(Ordering::Relaxed) > 0
        })
        .await;
        stop(shutdown, running).await;
        assert_eq!(flow.slots.load(Ordering::Relaxed), 0);
        let listed = substrate.directory.list().await.expect("directory");
        assert!(listed.iter().all(|f| f.live_workers == 0), "{listed:?}");
    }

    /// Holds what the embedded queue pulled for a while before handing it over, and
    /// says when it holds something: a stop can then land in the middle of a pull.
    struct SlowPull {
        inner: Arc<dyn crate::JobQueue>,
        holding: Arc<tokio::sync::Notify>,
    }

    #[async_trait::async_trait]
    impl crate::JobQueue for SlowPull {
        async fn enqueue(
            &self,
            job: &crate::ComputeJob,
            headers: &crate::Headers,
        ) -> Result<crate::queue::Enqueued, Error> {
            self.inner.enqueue(job, headers).await
        }

        async fn pull(
            &self,
            flow: &FlowId,
            lanes: &[crate::Lane],
            max: usize,
            wait: Duration,
        ) -> Result<Vec<crate::Delivery>, Error> {
            let got = self.inner.pull(flow, lanes, max, wait).await?;
            if !got.is_empty() {
                self.holding.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(got)
        }

        async fn depth(&self, flow: &FlowId) -> Result<crate::Depth, Error> {
            self.inner.depth(flow).await
        }
    }

    /// The soak's stuck calls: a slot stopped (scaled down, or the worker shut down)
    /// while a pull was in flight dropped the jobs the pull had taken; they came back
    /// only when their lease ran out (30 s on NATS), and their callers waited that long.
    /// A pull is now never cut short: what it took is computed before the slot stops.
    #[tokio::test]
    async fn a_slot_stopped_mid_pull_computes_what_the_pull_took() {
        use fstore_proto::wire::{JobInput, job_input::Source};
        let mut substrate =
            crate::embedded::substrate(&crate::embedded::Options::for_tests()).expect("substrate");
        let holding = Arc::new(tokio::sync::Notify::new());
        substrate.queue = Arc::new(SlowPull {
            inner: substrate.queue.clone(),
            holding: holding.clone(),
        });
        let catalog = Catalog::builtins().only(&["num.affine".to_string()]);
        let options = WorkerOptions {
            slots: 1,
            ..test_options()
        };
        let worker = Worker::new(substrate.clone(), catalog, options);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let job = crate::ComputeJob {
            value_key: "k".into(),
            generation: 1,
            tenant: "t".into(),
            feature: "f".into(),
            feature_version: 1,
            flow: "num.affine".into(),
            flow_version: 1,
            inputs: vec![JobInput {
                name: "x".into(),
                source: Some(Source::Value(fstore_proto::api::Value {
                    kind: Some(fstore_proto::api::value::Kind::F64(2.0)),
                })),
                ..Default::default()
            }],
            ttl_ms: 60_000,
            planned_at_ms: crate::time::now_ms(),
            ..Default::default()
        };
        substrate
            .queue
            .enqueue(&job, &crate::Headers::new())
            .await
            .expect("enqueue");
        tokio::time::timeout(Duration::from_secs(5), holding.notified())
            .await
            .expect("the slot pulls the job");
        // Stop while the pull holds the job.
        stop(shutdown, running).await;
        let stored = substrate.results.get("k", 0).await.expect("read");
        assert!(
            stored.is_some_and(|e| e.error.is_empty()),
            "the job the pull had taken was computed before the slot stopped"
        );
        let flow = FlowId::new("num.affine", 1);
        assert_eq!(substrate.queue.depth(&flow).await.expect("depth").total, 0);
    }

    fn probe_job(key: &str, delay_ms: u64) -> crate::ComputeJob {
        crate::ComputeJob {
            value_key: key.into(),
            generation: 1,
            tenant: "t".into(),
            feature: "f".into(),
            feature_version: 1,
            flow: "test.probe".into(),
            flow_version: 1,
            params: [("delay_ms".to_string(), delay_ms.to_string())].into(),
            ttl_ms: 60_000,
            planned_at_ms: crate::time::now_ms(),
            ..Default::default()
        }
    }

    /// As text-embeddings-inference batches: jobs that arrive while a batch runs are
    /// pulled then, and form the next batch, which runs as soon as the slot is free.
    #[tokio::test]
    async fn the_next_batch_forms_while_the_current_one_runs() {
        let substrate =
            crate::embedded::substrate(&crate::embedded::Options::for_tests()).expect("substrate");
        let catalog = Catalog::builtins().only(&["test.probe".to_string()]);
        let options = WorkerOptions {
            slots: 1,
            max_batch: 8,
            ..test_options()
        };
        let worker = Worker::new(substrate.clone(), catalog, options);
        let stats = worker.stats();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let flow = stats.flow("test.probe@1");
        let enqueue = |key: &str| {
            let queue = substrate.queue.clone();
            let job = probe_job(key, 700);
            async move {
                queue
                    .enqueue(&job, &crate::Headers::new())
                    .await
                    .expect("enqueue")
            }
        };
        enqueue("first").await;
        wait_until("the first job's batch starts", || {
            flow.busy_slots.load(Ordering::Relaxed) == 1
        })
        .await;
        for k in ["a", "b", "c"] {
            enqueue(k).await;
        }
        wait_until(
            "the three jobs are pulled while the first batch runs",
            || flow.ahead.load(Ordering::Relaxed) == 3,
        )
        .await;
        assert_eq!(
            flow.in_flight.load(Ordering::Relaxed),
            1,
            "the first batch is still running"
        );
        let probe = FlowId::new("test.probe", 1);
        assert_eq!(substrate.queue.depth(&probe).await.expect("depth").total, 4);
        let results = substrate.results.clone();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut stored = 0;
                for k in ["first", "a", "b", "c"] {
                    if results.get(k, 0).await.expect("read").is_some() {
                        stored += 1;
                    }
                }
                if stored == 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("every job is computed");
        assert_eq!(flow.ahead.load(Ordering::Relaxed), 0);
        stop(shutdown, running).await;
        assert_eq!(substrate.queue.depth(&probe).await.expect("depth").total, 0);
    }
}
