//! Moving jobs forward: a job is enqueued once every input it reads by key is stored;
//! until then it waits on each missing input, and the completion of its last missing
//! input enqueues it. A failure fails every job waiting on it, transitively, so nothing
//! stays pending behind a failed input. Planners and workers both go through here.

use std::time::Duration;

use fstore_proto::wire::job_input::Source;
use tokio_util::task::TaskTracker;

use crate::log::{record_id, value_record};
use crate::queue::Enqueued;
use crate::time::now_ms;
use crate::{ComputeJob, Error, Headers, Substrate, ValueEnvelope};

/// Header that carries the tenant of a job.
pub const TENANT_HEADER: &str = "Fstore-Tenant";

/// Where a job's key inputs stand.
#[derive(Debug)]
enum Inputs {
    Ready,
    Missing(Vec<String>),
    /// An input failed: its key and its failure.
    Failed(String, Failure),
}

/// Why a job ended without a value: the error, the tries it took, and whether it came
/// from timing or a transient condition rather than from the job's inputs
/// (`ValueEnvelope::retryable`: a call made after it computes again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    pub attempts: u32,
    pub retryable: bool,
}

impl Failure {
    /// A failure the job's inputs cause: computing again gives the same one.
    pub fn permanent(error: impl Into<String>, attempts: u32) -> Self {
        Failure {
            error: error.into(),
            attempts,
            retryable: false,
        }
    }

    /// A failure of timing or of a transient condition.
    pub fn retryable(error: impl Into<String>, attempts: u32) -> Self {
        Failure {
            error: error.into(),
            attempts,
            retryable: true,
        }
    }
}

/// Submits jobs and continues or fails their dependents.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    substrate: Substrate,
    failure_ttl: Duration,
    claim_ttl: Duration,
    /// Where claims abandoned by cancelled callers are given back.
    tasks: TaskTracker,
}

/// What [`Dispatcher::submit`] did with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Enqueued,
    /// Parked until its missing inputs complete.
    Waiting,
    /// An input had failed, so the job was failed with it.
    Failed(String),
}

impl Dispatcher {
    /// A dispatcher storing failures for `failure_ttl` and claiming for `claim_ttl`;
    /// `tasks` is where it gives back claims that cancelled callers abandoned (its
    /// owner's tracker, so shutdown waits for them).
    pub fn new(
        substrate: Substrate,
        failure_ttl: Duration,
        claim_ttl: Duration,
        tasks: TaskTracker,
    ) -> Self {
        Dispatcher {
            substrate,
            failure_ttl,
            claim_ttl,
            tasks,
        }
    }

    pub fn substrate(&self) -> &Substrate {
        &self.substrate
    }

    /// How long a claim holds before another caller may take over.
    pub fn claim_ttl(&self) -> Duration {
        self.claim_ttl
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Enqueues `job` if its inputs are stored, else parks it on the missing ones.
    pub async fn submit(&self, job: &ComputeJob) -> Result<Submitted, Error> {
        match self.inputs(job).await? {
            Inputs::Ready => self.enqueue(job).await.map(|_| Submitted::Enqueued),
            Inputs::Failed(key, failure) => {
                let failure = upstream(job, &key, failure);
                self.fail(job, &failure).await?;
                Ok(Submitted::Failed(failure.error))
            }
            Inputs::Missing(keys) => {
                for key in &keys {
                    self.substrate.waiters.add(key, job).await?;
                }
                // An input may have completed between the check and the parking, and
                // its completion may have missed this job: look once more.
                match self.inputs(job).await? {
                    Inputs::Ready => self.enqueue(job).await.map(|_| Submitted::Enqueued),
                    Inputs::Missing(_) => Ok(Submitted::Waiting),
                    Inputs::Failed(key, failure) => {
                        let failure = upstream(job, &key, failure);
                        self.fail(job, &failure).await?;
                        Ok(Submitted::Failed(failure.error))
                    }
                }
            }
        }
    }

    /// A value was stored under `key`: enqueue the jobs that were waiting only for it.
    /// They leave the waiters only once each is continued (see [`WaiterStore`]): a
    /// settlement cut short anywhere is done again by the redelivery that settles `key`
    /// again, and continuing a job twice enqueues it once (same message id).
    ///
    /// [`WaiterStore`]: crate::WaiterStore
    pub async fn completed(&self, key: &str) -> Result<(), Error> {
        let waiting = self.substrate.waiters.waiting(key).await?;
        for job in &waiting {
            self.continue_waiting(key, job).await?;
        }
        self.substrate.waiters.remove(key, &waiting).await
    }

    /// A job that was waiting on `key`: enqueued if every input is stored, failed if one
    /// failed, left where it is also parked if another is missing. If `key` itself is
    /// missing again (its value expired before this settling reached the job, say after
    /// a redelivery), the job is put back to wait for it, computed again from the
    /// job's recipe: it is leaving `key`'s waiters, and nobody else would.
    async fn continue_waiting(&self, key: &str, job: &ComputeJob) -> Result<(), Error> {
        match self.inputs(job).await? {
            Inputs::Ready => {
                self.enqueue(job).await?;
            }
            Inputs::Missing(keys) if keys.iter().any(|k| k == key) => {
                let gave_up = if job.requeues >= crate::claim::MAX_REQUEUES {
                    Some(
                        "an input expired before this compute could run, each time it was computed again: its ttl is shorter than the wait in the queue; raise the input's ttl or add workers",
                    )
                } else if self.requeue(job).await?.is_none() {
                    Some(
                        "an input expired before this compute could run, and the job carries no recipe to compute it again; ask again",
                    )
                } else {
                    None
                };
                if let Some(error) = gave_up {
                    self.fail(job, &Failure::retryable(error.to_string(), 0))
                        .await?;
                }
            }
            // Still waiting on another input, where it is parked too.
            Inputs::Missing(_) => {}
            Inputs::Failed(k, failure) => {
                let failure = upstream(job, &k, failure);
                self.fail(job, &failure).await?;
            }
        }
        Ok(())
    }

    /// Ends `job` as failed, and every job waiting on it, transitively (a retryable
    /// failure stays retryable downstream). As in [`Dispatcher::completed`], the
    /// waiting jobs leave the waiters only after all of them are failed.
    pub async fn fail(&self, job: &ComputeJob, failure: &Failure) -> Result<(), Error> {
        let mut stack = vec![(job.clone(), failure.clone())];
        let mut settled = Vec::new();
        while let Some((job, failure)) = stack.pop() {
            self.fail_one(&job, &failure).await?;
            let waiting = self.substrate.waiters.waiting(&job.value_key).await?;
            for w in &waiting {
                let f = upstream(w, &job.value_key, failure.clone());
                stack.push((w.clone(), f));
            }
            settled.push((job.value_key, waiting));
        }
        self.remove_waiters(settled).await
    }

    /// Removes the jobs that were waiting on each key, now that all are settled.
    async fn remove_waiters(&self, settled: Vec<(String, Vec<ComputeJob>)>) -> Result<(), Error> {
        for (key, jobs) in settled {
            self.substrate.waiters.remove(&key, &jobs).await?;
        }
        Ok(())
    }

    /// Stores the failure of one job (its claim released, callers told).
    async fn fail_one(&self, job: &ComputeJob, failure: &Failure) -> Result<(), Error> {
        let now = now_ms();
        let envelope = ValueEnvelope {
            value: None,
            computed_at_ms: now,
            expires_at_ms: crate::time::expires_after(now, self.failure_ttl),
            planned_at_ms: job.planned_at_ms,
            feature: job.feature.clone(),
            feature_version: job.feature_version,
            lineage_hash: job.lineage_hash.clone(),
            attempts: failure.attempts,
            error: failure.error.clone(),
            generation: job.generation,
            coverage: job.coverage.clone(),
            retryable: failure.retryable,
        };
        self.finish(job, envelope).await
    }

    /// Stores a computed value, releases the claim, notifies and continues dependents.
    pub async fn succeed(&self, job: &ComputeJob, envelope: ValueEnvelope) -> Result<(), Error> {
        self.finish(job, envelope).await?;
        self.completed(&job.value_key).await
    }

    /// Stores the envelope, then appends the feature log's record (with the requests
    /// that joined the claim) while it releases the claim and notifies. A job whose settlement is cut
    /// short anywhere here is delivered again and settles again: the store takes the
    /// same key, the log drops the record it already has (same id).
    async fn finish(&self, job: &ComputeJob, envelope: ValueEnvelope) -> Result<(), Error> {
        let s = &self.substrate;
        // The requests that joined the claim are read while the value is stored.
        let mut record = value_record(job, &envelope, Vec::new());
        let (stored, joined) = tokio::join!(
            s.results.put(&job.value_key, envelope),
            s.claims.joiners(&job.value_key, job.generation)
        );
        stored?;
        for t in &joined? {
            crate::store::add_once(&mut record.tickets, t);
        }
        crate::fault::point(crate::fault::BEFORE_LOG).await;
        // The record is written by the time the job is acked; callers need not wait for
        // it, so the claim is released and the waiters told meanwhile. A failure of
        // either brings the job back, and it settles again from the stored value.
        let id = record_id(job);
        let (logged, released) = tokio::join!(s.log.append(&id, record), async {
            s.claims.release(&job.value_key, job.generation).await?;
            s.notifier.publish(&job.value_key).await
        });
        logged?;
        released
    }

    /// Settles again a job whose envelope is already stored under its generation (it
    /// was delivered again after its worker stored it and died): the rest of
    /// [`Dispatcher::succeed`] or [`Dispatcher::fail`] without computing it twice.
    pub async fn resettle(&self, job: &ComputeJob, stored: ValueEnvelope) -> Result<(), Error> {
        if stored.error.is_empty() {
            self.succeed(job, stored).await
        } else {
            let failure = Failure {
                error: stored.error.clone(),
                attempts: stored.attempts,
                retryable: stored.retryable,
            };
            self.fail(job, &failure).await
        }
    }

    /// Drops a job a cancelled ticket gave up, and the jobs parked on its value that
    /// were given up with it (the rest would wait for a value nobody computes: they
    /// fail, and can be asked for again).
    pub async fn drop_abandoned(&self, job: &ComputeJob) -> Result<(), Error> {
        let mut stack = vec![job.clone()];
        let mut settled = Vec::new();
        while let Some(job) = stack.pop() {
            let waiting = self.substrate.waiters.waiting(&job.value_key).await?;
            for w in &waiting {
                if self
                    .substrate
                    .claims
                    .is_abandoned(&w.value_key, w.generation)
                {
                    stack.push(w.clone());
                } else {
                    let error = format!(
                        "input `{}` was given up by a cancelled ticket; ask again",
                        job.feature
                    );
                    self.fail(w, &Failure::retryable(error, 0)).await?;
                }
            }
            settled.push((job.value_key, waiting));
        }
        self.remove_waiters(settled).await
    }

    async fn enqueue(&self, job: &ComputeJob) -> Result<Enqueued, Error> {
        let mut headers = Headers::new();
        headers.insert(TENANT_HEADER.to_string(), job.tenant.clone());
        crate::trace::inject(&mut headers);
        let enqueued = self.substrate.queue.enqueue(job, &headers).await?;
        if enqueued == Enqueued::Added {
            crate::metrics::global()
                .jobs_enqueued
                .get_or_create(&crate::metrics::flow(&format!(
                    "{}@{}",
                    job.flow, job.flow_version
                )))
                .inc();
        }
        Ok(enqueued)
    }

    async fn inputs(&self, job: &ComputeJob) -> Result<Inputs, Error> {
        let now = now_ms();
        let mut missing = Vec::new();
        for input in &job.inputs {
            let Some(Source::ValueKey(key)) = &input.source else {
                continue;
            };
            match self.substrate.results.get(key, 0).await? {
                Some(env) if env.expires_at_ms > now => {
                    // A retryable failure older than the job does not answer it: the
                    // input is being computed again (or will be, by whoever planned it).
                    if env.retryable && env.computed_at_ms < job.planned_at_ms {
                        missing.push(key.clone());
                    } else if !env.error.is_empty() {
                        let failure = Failure {
                            error: env.error.clone(),
                            attempts: env.attempts,
                            retryable: env.retryable,
                        };
                        return Ok(Inputs::Failed(key.clone(), failure));
                    }
                }
                _ => missing.push(key.clone()),
            }
        }
        Ok(if missing.is_empty() {
            Inputs::Ready
        } else {
            Inputs::Missing(missing)
        })
    }

    /// The key inputs of `job` whose value is not stored (or expired), each with the
    /// recipe that computes it, when the job carries one.
    pub(crate) async fn missing_inputs(
        &self,
        job: &ComputeJob,
    ) -> Result<Vec<(String, Option<ComputeJob>)>, Error> {
        let mut missing = Vec::new();
        for input in &job.inputs {
            let Some(Source::ValueKey(key)) = &input.source else {
                continue;
            };
            if self.stored(key).await?.is_none() {
                missing.push((key.clone(), input.recipe.clone()));
            }
        }
        Ok(missing)
    }

    /// Whether a value that has not expired is stored under `key` (a failure counts
    /// when it is not retryable).
    pub(crate) async fn stored(&self, key: &str) -> Result<Option<()>, Error> {
        let now = now_ms();
        Ok(self
            .substrate
            .results
            .get(key, 0)
            .await?
            .filter(|env| env.expires_at_ms > now && !env.retryable)
            .map(|_| ()))
    }
}

/// The failure of a job whose input `input_key` failed with `failure`.
fn upstream(job: &ComputeJob, input_key: &str, failure: Failure) -> Failure {
    let name = job
        .inputs
        .iter()
        .find(|i| matches!(&i.source, Some(Source::ValueKey(k)) if k == input_key))
        .map_or("?", |i| i.name.as_str());
    Failure {
        error: format!("input `{name}` failed: {}", failure.error),
        attempts: 0,
        retryable: failure.retryable,
    }
}
