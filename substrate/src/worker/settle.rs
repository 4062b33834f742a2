//! Settling one job: a value is stored, its claim released, a ready notification sent
//! and the dependents waiting only for it enqueued — and only then is the delivery
//! acked. A failure is stored for the job and every job waiting on it, then the delivery
//! is terminated; a dead letter is stored first and the delivery acked (which deletes
//! it from the work queue). Whenever the backend cannot store the outcome, the job comes
//! back after [`BACKEND_RETRY`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fstore_proto::api::Value;
use tracing::{debug, warn};

use super::retry::{RetryPolicy, Verdict};
use super::{Worker, job_flow};
use crate::claim::MAX_REQUEUES;
use crate::time::{expires_at_ms, now_ms};
use crate::{ComputeJob, Delivery, Failure, ValueEnvelope};

/// How long a job waits before it is delivered again when the backend could not store
/// its result: long enough to ride out a leader election, so that outage does not use
/// up the job's deliveries.
pub(super) const BACKEND_RETRY: Duration = Duration::from_secs(1);

/// The envelope of a value computed at `now_ms` by attempt `attempt` of `job`; it
/// expires `job.ttl_ms` later, at the end of time at the latest.
fn value_envelope(job: &ComputeJob, value: Value, attempt: u32, now_ms: i64) -> ValueEnvelope {
    ValueEnvelope {
        value: Some(value),
        computed_at_ms: now_ms,
        expires_at_ms: expires_at_ms(now_ms, job.ttl_ms),
        planned_at_ms: job.planned_at_ms,
        feature: job.feature.clone(),
        feature_version: job.feature_version,
        lineage_hash: job.lineage_hash.clone(),
        attempts: attempt,
        error: String::new(),
        generation: job.generation,
        coverage: job.coverage.clone(),
        retryable: false,
    }
}

impl Worker {
    /// Settles one job of a batch with the flow's result for it.
    pub(super) async fn settle(
        &self,
        d: Delivery,
        out: Result<Value, fstore_flows::Error>,
        policy: &RetryPolicy,
    ) {
        let error = match out {
            Ok(value) => return self.settle_ok(d, value).await,
            Err(e) => e,
        };
        match policy.after_error(&error, &d.job.value_key, d.attempt) {
            Verdict::Retry(delay) => {
                debug!(key = %d.job.value_key, attempt = d.attempt, ?delay, error = %error, "transient failure; retrying");
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                crate::metrics::global()
                    .jobs_retried
                    .get_or_create(&job_flow(&d.job))
                    .inc();
                if let Err(e) = d.nak(delay).await {
                    warn!(error = %e, "nak failed; the job will be redelivered");
                }
            }
            // Tries used up on transient errors: a later call may try again.
            Verdict::DeadLetter(message) => self.dead_letter(d, &message, true).await,
            Verdict::Fail(message) => {
                let failure = Failure::permanent(message, d.attempt);
                self.settle_failed(d, &failure).await;
            }
        }
    }

    /// Settles a job that needs no compute, and returns the rest: a job a cancelled
    /// ticket gave up is dropped (with the jobs parked on it that were given up too); a
    /// job delivered again whose outcome its last worker stored before dying is
    /// settled from that outcome (logged, released, its dependents continued).
    pub(super) async fn already_settled(&self, d: Delivery) -> Option<Delivery> {
        let s = self.dispatcher.substrate();
        if s.claims.is_abandoned(&d.job.value_key, d.job.generation) {
            debug!(key = %d.job.value_key, "dropping a job its cancelled ticket gave up");
            match self.dispatcher.drop_abandoned(&d.job).await {
                Ok(()) => {
                    if let Err(e) = d.ack().await {
                        warn!(error = %e, "ack failed; the job may be delivered again");
                    }
                }
                Err(e) => {
                    warn!(key = %d.job.value_key, error = %e, "dropping a given-up job failed; retrying");
                    let _ = d.nak(BACKEND_RETRY).await;
                }
            }
            return None;
        }
        if d.attempt <= 1 {
            return Some(d);
        }
        let stored = match s.results.get(&d.job.value_key, d.job.planned_at_ms).await {
            // Settled again, it says how often it was delivered (stored again with it).
            Ok(Some(env)) if env.generation == d.job.generation => ValueEnvelope {
                attempts: env.attempts.max(d.attempt),
                ..Arc::unwrap_or_clone(env)
            },
            Ok(_) => return Some(d),
            Err(e) => {
                warn!(key = %d.job.value_key, error = %e, "reading a redelivered job's value failed; retrying");
                let _ = d.nak(BACKEND_RETRY).await;
                return None;
            }
        };
        debug!(key = %d.job.value_key, "settling again a job whose value was stored before its worker stopped");
        match self.dispatcher.resettle(&d.job, stored).await {
            Ok(()) => {
                if let Err(e) = d.ack().await {
                    warn!(error = %e, "ack failed; the job may run again");
                }
            }
            Err(e) => {
                warn!(key = %d.job.value_key, error = %e, "settling a redelivered job failed; retrying");
                let _ = d.nak(BACKEND_RETRY).await;
            }
        }
        None
    }

    #[tracing::instrument(name = "store", skip_all, fields(key = %d.job.value_key))]
    async fn settle_ok(&self, d: Delivery, value: Value) {
        let job = &d.job;
        let envelope = value_envelope(job, value, d.attempt, now_ms());
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
            // A value the backend cannot carry: computing it again gives the same one.
            Err(
                e @ crate::Error::TooLarge {
                    what: crate::error::Message::Value,
                    ..
                },
            ) => {
                let failure = Failure::permanent(e.to_string(), d.attempt);
                self.settle_failed(d, &failure).await;
            }
            Err(e) => {
                warn!(key = %job.value_key, error = %e, "storing the value failed; retrying the job");
                let _ = d.nak(BACKEND_RETRY).await;
            }
        }
    }

    /// The job used up its attempts: keep it as a dead letter, fail its value and every
    /// job waiting on it, then ack (which deletes it from the work queue). `retryable`:
    /// the tries went to transient errors, so a later call computes again; a job that
    /// crashed its workers every time stays failed for `cache.failure_ttl`.
    pub(super) async fn dead_letter(&self, d: Delivery, message: &str, retryable: bool) {
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
        let failure = Failure {
            error: message.to_string(),
            attempts: d.attempt,
            retryable,
        };
        self.fail_and_settle(d, &failure, true).await;
    }

    /// The job cannot succeed: fail it and every job waiting on it, then terminate it.
    pub(super) async fn settle_failed(&self, d: Delivery, failure: &Failure) {
        warn!(key = %d.job.value_key, feature = %d.job.feature, attempts = d.attempt, error = %failure.error, retryable = failure.retryable, "job failed");
        self.fail_and_settle(d, failure, false).await;
    }

    /// A job whose key inputs expired before it ran: they are computed again and the
    /// job waits for them under a new message id, then this delivery is acked. After
    /// `MAX_REQUEUES` such rounds (the inputs' TTL is shorter than the queue's wait),
    /// or when an input has no recipe, it fails — retryably: the next call computes
    /// everything again.
    pub(super) async fn requeue(&self, d: Delivery, expired: &[String]) {
        let names = expired.join("`, `");
        let error = if d.job.requeues >= MAX_REQUEUES {
            format!(
                "input `{names}` expired before this compute ran, {MAX_REQUEUES} times after it was computed again: \
                 its ttl is shorter than the wait in the queue; raise the input's ttl or add workers"
            )
        } else {
            debug!(key = %d.job.value_key, inputs = %names, "inputs expired before the compute ran; computing them again");
            match self.dispatcher.requeue(&d.job).await {
                Ok(Some(_)) => {
                    self.stats.requeued.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = d.ack().await {
                        warn!(error = %e, "ack failed; the job may be delivered again");
                    }
                    return;
                }
                Ok(None) => format!(
                    "input `{names}` expired before this compute ran and the job carries no recipe to compute it again; ask again"
                ),
                Err(e) => {
                    warn!(key = %d.job.value_key, error = %e, "putting back a job whose inputs expired failed; retrying");
                    let _ = d.nak(BACKEND_RETRY).await;
                    return;
                }
            }
        };
        let failure = Failure::retryable(error, d.attempt);
        self.settle_failed(d, &failure).await;
    }

    /// Stores the failure of `d` and of every job waiting on it, then acks a dead-lettered
    /// job (deleting it from the work queue) or terminates a failed one. If the failure
    /// cannot be stored, the job is delivered again.
    async fn fail_and_settle(&self, d: Delivery, failure: &Failure, dead_lettered: bool) {
        match self.dispatcher.fail(&d.job, failure).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ttl_ms: u64) -> ComputeJob {
        ComputeJob {
            value_key: "k".to_string(),
            generation: 3,
            ttl_ms,
            planned_at_ms: 5,
            ..Default::default()
        }
    }

    #[test]
    fn a_value_expires_its_ttl_after_it_was_computed() {
        let env = value_envelope(&job(1_000), Value::default(), 2, 10_000);
        assert_eq!(env.computed_at_ms, 10_000);
        assert_eq!(env.expires_at_ms, 11_000);
        assert_eq!((env.attempts, env.generation, env.planned_at_ms), (2, 3, 5));
        assert!(env.error.is_empty());
    }

    #[test]
    fn a_huge_ttl_saturates_instead_of_wrapping() {
        let env = value_envelope(&job(u64::MAX), Value::default(), 1, 10_000);
        assert_eq!(env.expires_at_ms, i64::MAX);
        let env = value_envelope(&job(i64::MAX as u64), Value::default(), 1, i64::MAX - 1);
        assert_eq!(env.expires_at_ms, i64::MAX);
    }
}
