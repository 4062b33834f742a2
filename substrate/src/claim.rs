//! Claim and submit, the one way into the queue — for planners, dead-letter replays,
//! refresh-ahead and workers recomputing an expired input alike. The first claimer of a
//! value key gets a generation and submits the job; everybody else joins its compute. A
//! won claim is given back whenever nothing ends up enqueued under it (the re-check
//! found the value, the submission failed, the caller was cancelled mid-way), so later
//! callers never join a compute that nobody started.

use futures::future::BoxFuture;
use tracing::warn;

use crate::dispatch::{Dispatcher, Submitted};
use crate::fault;
use crate::store::Claim;
use crate::task::spawn_named;
use crate::time::now_ms;
use crate::{ComputeJob, Error};

/// What [`Dispatcher::claim_and_submit`] did.
#[derive(Debug)]
pub enum Claimed<T> {
    /// Someone else holds the claim (of this generation): their compute will fill the key.
    Coalesced(u64),
    /// The re-check after winning the claim found what it looks for; the claim is back.
    Found(T),
    /// The job was submitted under the won claim of this generation.
    Submitted(Submitted, u64),
}

/// A won claim that nothing was enqueued under yet. Dropped armed — the caller was
/// cancelled (its client went away or its deadline passed) between the claim and the
/// end of the submission — it gives the claim back on a tracked task.
struct ClaimGuard<'a> {
    dispatcher: &'a Dispatcher,
    key: &'a str,
    generation: u64,
    armed: bool,
}

impl ClaimGuard<'_> {
    /// Gives the claim back now; a failure leaves it to expire with its TTL.
    async fn release(mut self) -> Result<(), Error> {
        self.armed = false;
        let claims = &self.dispatcher.substrate().claims;
        claims.release(self.key, self.generation).await
    }

    /// The claim is settled otherwise (a job holds it): keep it.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if !self.armed || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let claims = self.dispatcher.substrate().claims.clone();
        let key = self.key.to_string();
        let generation = self.generation;
        spawn_named(self.dispatcher.tasks(), "claim-release", async move {
            if let Err(e) = claims.release(&key, generation).await {
                warn!(%key, error = %e, "could not give back an abandoned claim; it expires with its ttl");
            }
        });
    }
}

/// How many times a job is put back to wait for inputs that expired before it ran; past
/// that, the inputs' TTL is shorter than the wait in the queue and the job fails.
pub(crate) const MAX_REQUEUES: u32 = 3;

impl Dispatcher {
    /// Claims `key`; if the claim is won and `recheck` finds nothing, submits the job
    /// `job(generation)` makes. Whenever nothing ends up enqueued under the won claim —
    /// the re-check found the value, the submission failed, or the caller was cancelled
    /// in between — the claim is given back.
    pub async fn claim_and_submit<T, E: From<Error>>(
        &self,
        key: &str,
        recheck: impl AsyncFnOnce() -> Result<Option<T>, E>,
        job: impl FnOnce(u64) -> ComputeJob,
    ) -> Result<Claimed<T>, E> {
        let claims = &self.substrate().claims;
        let generation = match claims.claim(key, self.claim_ttl()).await? {
            Claim::Won(g) => g,
            Claim::Held(g) => return Ok(Claimed::Coalesced(g)),
        };
        let guard = ClaimGuard {
            dispatcher: self,
            key,
            generation,
            armed: true,
        };
        let found = match recheck().await {
            Ok(found) => found,
            Err(e) => {
                if let Err(release) = guard.release().await {
                    warn!(%key, error = %release, "could not give a claim back; it expires with its ttl");
                }
                return Err(e);
            }
        };
        if let Some(found) = found {
            guard.release().await?;
            return Ok(Claimed::Found(found));
        }
        fault::point(fault::BEFORE_SUBMIT).await;
        match self.submit(&job(generation)).await {
            Ok(submitted) => {
                guard.keep();
                if matches!(submitted, Submitted::Enqueued | Submitted::Waiting) {
                    // The claim holds for its TTL from now on. Without the mark it is
                    // taken over once the orphan bound passes: at worst the key is
                    // computed twice, so a failed mark is no failed call.
                    let marked = claims.submitted(key, generation, self.claim_ttl()).await;
                    if let Err(e) = marked {
                        warn!(%key, error = %e, "could not mark a claim submitted; it may be taken over");
                    }
                }
                Ok(Claimed::Submitted(submitted, generation))
            }
            Err(e) => {
                // Nothing was enqueued: give the claim back so a later call can retry.
                if let Err(release) = guard.release().await {
                    warn!(%key, error = %release, "could not give a claim back; it expires with its ttl");
                }
                Err(e.into())
            }
        }
    }

    /// Puts `job` back to wait for its key inputs that expired before it ran: each is
    /// computed again from the recipe the job carries — claimed like a planner would,
    /// its own expired inputs first — and the job, under a new message id, waits for
    /// them. Answers what happened to the job; `None` when an expired input has no
    /// recipe (the job was too big to carry it), so nothing could recompute it.
    pub async fn requeue(&self, job: &ComputeJob) -> Result<Option<Submitted>, Error> {
        if !self.recompute_missing(job).await? {
            return Ok(None);
        }
        let again = ComputeJob {
            requeues: job.requeues.saturating_add(1),
            ..job.clone()
        };
        self.submit(&again).await.map(Some)
    }

    /// Claims and submits the recipe of every key input of `job` that is not stored;
    /// whether every such input had one.
    fn recompute_missing<'a>(&'a self, job: &'a ComputeJob) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut all = true;
            for (key, recipe) in self.missing_inputs(job).await? {
                let Some(recipe) = recipe else {
                    all = false;
                    continue;
                };
                let recheck = async || self.stored(&key).await;
                let planned_at_ms = now_ms();
                let make = |generation| ComputeJob {
                    generation,
                    planned_at_ms,
                    tickets: job.tickets.clone(),
                    lane: job.lane,
                    ..recipe.clone()
                };
                // The recipe's own inputs may have expired too: they come first, or it
                // would wait on values nobody computes.
                if !self.recompute_missing(&recipe).await? {
                    all = false;
                    continue;
                }
                self.claim_and_submit::<(), Error>(&key, recheck, make)
                    .await?;
            }
            Ok(all)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use fstore_flows::FlowId;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::queue::Enqueued;
    use crate::{Delivery, Headers, JobQueue, Lane};

    /// A queue whose enqueue never answers: a call submitting to it is cancelled mid-way.
    struct StuckQueue;

    #[async_trait]
    impl JobQueue for StuckQueue {
        async fn enqueue(&self, _job: &ComputeJob, _headers: &Headers) -> Result<Enqueued, Error> {
            futures::future::pending().await
        }

        async fn pull(
            &self,
            _flow: &FlowId,
            _lanes: &[Lane],
            _max: usize,
            _wait: Duration,
        ) -> Result<Vec<Delivery>, Error> {
            Ok(Vec::new())
        }

        async fn depth(&self, _flow: &FlowId) -> Result<crate::Depth, Error> {
            Ok(crate::Depth::default())
        }
    }

    fn dispatcher(substrate: crate::Substrate, tasks: &TaskTracker) -> Dispatcher {
        let ttl = Duration::from_secs(600);
        Dispatcher::new(substrate, Duration::from_secs(1), ttl, tasks.clone())
    }

    #[tokio::test]
    async fn a_cancelled_call_gives_its_claim_back() {
        let mut substrate =
            crate::embedded::substrate(&crate::embedded::Options::for_tests()).expect("substrate");
        substrate.queue = Arc::new(StuckQueue);
        let tasks = TaskTracker::new();
        let dispatcher = dispatcher(substrate.clone(), &tasks);
        let job = |generation| ComputeJob {
            value_key: "k".into(),
            generation,
            ..Default::default()
        };
        // The caller goes away while the submission hangs.
        let call = dispatcher.claim_and_submit::<(), Error>("k", async || Ok(None), job);
        let cancelled = tokio::time::timeout(Duration::from_millis(50), call).await;
        assert!(cancelled.is_err(), "the submission should still hang");
        tasks.close();
        tasks.wait().await;
        // The abandoned claim is free again: a later caller wins it.
        let again = substrate
            .claims
            .claim("k", Duration::from_secs(600))
            .await
            .expect("claim");
        assert!(
            matches!(again, Claim::Won(_)),
            "the cancelled call's claim was given back"
        );
    }

    /// A job whose input expired, carrying the input's recipe, and the input's own
    /// input expired too: requeueing claims and submits both recipes, deepest first in
    /// effect (the middle one waits for the first), and the job waits under a new id.
    /// The keys of the `num.affine` jobs queued now.
    async fn enqueued(substrate: &crate::Substrate) -> Vec<String> {
        let flow = FlowId::new("num.affine", 1);
        let pulled = substrate
            .queue
            .pull(&flow, &[Lane::Interactive], 10, Duration::from_millis(50))
            .await
            .expect("pull");
        pulled.into_iter().map(|d| d.job.value_key).collect()
    }

    /// An input read by key, with the job that computes it (its recipe), if any.
    fn by_key(key: &str, recipe: Option<ComputeJob>) -> fstore_proto::wire::JobInput {
        fstore_proto::wire::JobInput {
            name: format!("in_{key}"),
            source: Some(fstore_proto::wire::job_input::Source::ValueKey(key.into())),
            key: key.into(),
            recipe,
            ..Default::default()
        }
    }

    /// A `num.affine` job computing `key` from `inputs`.
    fn job(key: &str, inputs: Vec<fstore_proto::wire::JobInput>) -> ComputeJob {
        ComputeJob {
            value_key: key.into(),
            flow: "num.affine".into(),
            flow_version: 1,
            tenant: "t".into(),
            inputs,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_requeued_job_recomputes_its_expired_inputs_through_claims() {
        let substrate =
            crate::embedded::substrate(&crate::embedded::Options::for_tests()).expect("substrate");
        let tasks = TaskTracker::new();
        let dispatcher = dispatcher(substrate.clone(), &tasks);
        let root = job("a", Vec::new());
        let middle = job("b", vec![by_key("a", Some(root))]);
        let top = ComputeJob {
            generation: 7,
            ..job("c", vec![by_key("b", Some(middle))])
        };
        let submitted = dispatcher.requeue(&top).await.expect("requeue");
        assert_eq!(submitted, Some(Submitted::Waiting));
        // `a` was enqueued under a claim of its own; `b` and `c` wait.
        let a = substrate.claims.claim("a", Duration::from_secs(1)).await;
        assert!(matches!(a, Ok(Claim::Held(_))), "{a:?}");
        let b = substrate.claims.claim("b", Duration::from_secs(1)).await;
        assert!(matches!(b, Ok(Claim::Held(_))), "{b:?}");
        assert_eq!(enqueued(&substrate).await, ["a"]);
        let waiting_on_a = substrate.waiters.waiting("a").await.expect("waiters");
        assert_eq!(waiting_on_a.len(), 1);
        assert_eq!(waiting_on_a[0].value_key, "b");
        let waiting_on_b = substrate.waiters.waiting("b").await.expect("waiters");
        assert_eq!(
            (waiting_on_b[0].value_key.as_str(), waiting_on_b[0].requeues),
            ("c", 1),
            "the job waits again under a new message id"
        );
        assert_eq!(crate::message_id(&waiting_on_b[0]), "c.7.r1");

        // Without a recipe nothing can recompute the input: the caller is told.
        let bare = job("d", vec![by_key("gone", None)]);
        assert_eq!(dispatcher.requeue(&bare).await.expect("requeue"), None);
    }

    /// The chaos run's last lost call, made deterministic: a job waits on `a`, and by the
    /// time `a`'s settling reaches it (after a redelivery, on NATS, where an expired
    /// value stays readable until the server deletes it) `a` has expired. The job is
    /// leaving `a`'s waiters; it used to be dropped there, as if parked elsewhere. It
    /// now waits on `a` again, and `a` is computed again from the job's recipe.
    #[tokio::test]
    async fn a_waiting_job_whose_input_expired_before_it_was_continued_waits_again() {
        let substrate =
            crate::embedded::substrate(&crate::embedded::Options::for_tests()).expect("substrate");
        let tasks = TaskTracker::new();
        let dispatcher = dispatcher(substrate.clone(), &tasks);
        let waiting = ComputeJob {
            generation: 3,
            ..job("b", vec![by_key("a", Some(job("a", Vec::new())))])
        };
        substrate.waiters.add("a", &waiting).await.expect("park");
        let now = crate::time::now_ms();
        let expired = crate::ValueEnvelope {
            computed_at_ms: now - 2_000,
            expires_at_ms: now - 1_000,
            ..Default::default()
        };
        substrate.results.put("a", expired).await.expect("store");

        dispatcher.completed("a").await.expect("settle");

        let again = substrate.waiters.waiting("a").await.expect("waiters");
        assert_eq!(again.len(), 1, "the job waits on `a` again: {again:?}");
        assert_eq!((again[0].value_key.as_str(), again[0].requeues), ("b", 1));
        assert_eq!(enqueued(&substrate).await, ["a"], "`a` is computed again");
    }
}
