//! Claim and submit, the one way into the queue: a won claim is given back whenever
//! nothing ends up enqueued under it (the re-check found the value, the submission
//! failed, the call was cancelled mid-way), so later callers never join a compute that
//! nobody started.

use fstore_substrate::task::spawn_named;
use fstore_substrate::{Claim, ComputeJob, Submitted};

use super::Planner;
use crate::Result;
use crate::keys::ValueKey;

/// A won claim that nothing was enqueued under yet. Dropped armed — the call was
/// cancelled (its client went away or its deadline passed) between the claim and the
/// end of the submission — it gives the claim back on a tracked task, so later callers
/// never join a compute that nobody started.
pub(super) struct ClaimGuard<'a> {
    planner: &'a Planner,
    key: &'a ValueKey,
    generation: u64,
    armed: bool,
}

impl ClaimGuard<'_> {
    /// Gives the claim back now.
    async fn release(mut self) -> Result<()> {
        self.armed = false;
        let claims = &self.planner.substrate.claims;
        Ok(claims.release(self.key.as_str(), self.generation).await?)
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
        let claims = self.planner.substrate.claims.clone();
        let key = self.key.to_string();
        let generation = self.generation;
        spawn_named(&self.planner.tasks, "claim-release", async move {
            if let Err(e) = claims.release(&key, generation).await {
                tracing::warn!(%key, error = %e, "could not give back an abandoned claim; it expires with its ttl");
            }
        });
    }
}

/// What [`Planner::claim_and_submit`] did.
#[derive(Debug)]
pub enum Claimed<T> {
    /// Someone else holds the claim (of this generation): their compute will fill the key.
    Coalesced(u64),
    /// The re-check after winning the claim found what it looks for; the claim is back.
    Found(T),
    /// The job was submitted under the won claim of this generation.
    Submitted(Submitted, u64),
}

impl Planner {
    /// Claims `key`; if the claim is won and `recheck` finds nothing, submits the job
    /// `job(generation)` makes. Whenever nothing ends up enqueued under the won claim — the
    /// re-check found the value, the submission failed, or the call was cancelled in
    /// between — the claim is given back, so later callers never coalesce onto a compute
    /// that is not running. The one way into the queue for planned computes and
    /// dead-letter replays alike.
    pub async fn claim_and_submit<T>(
        &self,
        key: &ValueKey,
        recheck: impl AsyncFnOnce() -> Result<Option<T>>,
        job: impl FnOnce(u64) -> ComputeJob,
    ) -> Result<Claimed<T>> {
        let claims = &self.substrate.claims;
        let generation = match claims.claim(key.as_str(), self.options.claim_ttl).await? {
            Claim::Won(g) => g,
            Claim::Held(g) => return Ok(Claimed::Coalesced(g)),
        };
        let guard = ClaimGuard {
            planner: self,
            key,
            generation,
            armed: true,
        };
        let found = match recheck().await {
            Ok(found) => found,
            Err(e) => {
                if let Err(release) = guard.release().await {
                    tracing::warn!(key = %key, error = %release, "could not give a claim back; it expires with its ttl");
                }
                return Err(e);
            }
        };
        if let Some(found) = found {
            guard.release().await?;
            return Ok(Claimed::Found(found));
        }
        fstore_substrate::fault::point(fstore_substrate::fault::BEFORE_SUBMIT).await;
        match self.dispatcher.submit(&job(generation)).await {
            Ok(submitted) => {
                guard.keep();
                if matches!(submitted, Submitted::Enqueued | Submitted::Waiting) {
                    // The claim holds for its TTL from now on. Without the mark it is
                    // taken over once `cache.claim_orphan_after` passes: at worst the
                    // key is computed twice, so a failed mark is no failed call.
                    let marked = claims
                        .submitted(key.as_str(), generation, self.options.claim_ttl)
                        .await;
                    if let Err(e) = marked {
                        tracing::warn!(key = %key, error = %e, "could not mark a claim submitted; it may be taken over");
                    }
                }
                Ok(Claimed::Submitted(submitted, generation))
            }
            Err(e) => {
                // Nothing was enqueued: give the claim back so a later call can retry.
                if let Err(release) = guard.release().await {
                    tracing::warn!(key = %key, error = %release, "could not give a claim back; it expires with its ttl");
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fstore_flows::FlowId;
    use fstore_substrate::queue::Enqueued;
    use fstore_substrate::{Delivery, Headers, JobQueue};

    use std::sync::Arc;

    use super::*;
    use fstore_substrate::Dispatcher;
    use tokio_util::task::TaskTracker;

    use crate::planner::PlannerOptions;
    use crate::publish::snapshots::Snapshots;

    /// A queue whose enqueue never answers: a call submitting to it is cancelled mid-way.
    struct StuckQueue;

    #[async_trait::async_trait]
    impl JobQueue for StuckQueue {
        async fn enqueue(
            &self,
            _job: &ComputeJob,
            _headers: &Headers,
        ) -> Result<Enqueued, fstore_substrate::Error> {
            futures::future::pending().await
        }

        async fn pull(
            &self,
            _flow: &FlowId,
            _lanes: &[fstore_substrate::Lane],
            _max: usize,
            _wait: Duration,
        ) -> Result<Vec<Delivery>, fstore_substrate::Error> {
            Ok(Vec::new())
        }

        async fn depth(&self, _flow: &FlowId) -> Result<u64, fstore_substrate::Error> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_cancelled_call_gives_its_claim_back() {
        let mut substrate =
            fstore_substrate::embedded::substrate(&crate::Config::default().embedded_options())
                .expect("substrate");
        substrate.queue = Arc::new(StuckQueue);
        let tasks = TaskTracker::new();
        let planner = Planner::new(
            substrate.clone(),
            Dispatcher::new(substrate.clone(), Duration::from_secs(1)),
            PlannerOptions {
                claim_ttl: Duration::from_secs(600),
                refresh_ahead: 0.0,
                max_related: 10,
            },
            tasks.clone(),
            Snapshots::default(),
        );
        let key = ValueKey::from_wire("k".into());
        let job = |generation| ComputeJob {
            value_key: "k".into(),
            generation,
            ..Default::default()
        };
        // The caller goes away while the submission hangs.
        let call = planner.claim_and_submit(&key, async || Ok(None::<()>), job);
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
}
