//! Running backfills. Every replica runs a [`Runner`]: each `scan_interval` it lists the
//! backfills and takes over any running one whose lease has run out (or that nobody
//! holds) by compare-and-set on its record. Holding one, it plans up to `window` chunks
//! at a time as batch-lane requests and follows each until every pair is READY or
//! FAILED, recording each finished chunk's counts in the record; a renewer extends the
//! lease meanwhile. A replica that dies stops renewing: another takes the backfill over
//! and re-plans only the chunks not recorded as settled — values the dead one computed
//! are found stored (counted as done, not computed twice); jobs it had queued are
//! joined, not queued again. A cancel, or a lease lost, is seen at the next write.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use fstore_proto::api::{self, BackfillState};
use fstore_proto::wire::BackfillRecord;
use fstore_substrate::backfills::Revised;
use fstore_substrate::time::now_ms;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{Backfills, CAS_TRIES};
use crate::follow::Follower;
use crate::plan::Origin;
use crate::{Error, Result};

/// How long one chunk is followed before it is planned again from the start (its
/// computes keep going meanwhile).
const CHUNK_WAIT: Duration = Duration::from_secs(600);

/// What one settled chunk adds to its backfill's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    done: u64,
    failed: u64,
    skipped: u64,
}

/// Runs the backfills this replica holds, and takes over those nobody does.
#[derive(Debug, Clone)]
pub struct Runner {
    backfills: Backfills,
    /// This replica, as written into the records it holds.
    replica: String,
    /// Backfills this replica runs now.
    running: Arc<Mutex<HashSet<String>>>,
}

/// Why a backfill stopped running here.
#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    /// Every chunk settled: the record says DONE.
    Done,
    /// Cancelled, or another replica holds it now.
    Lost,
    /// This replica is shutting down; the lease runs out and another takes over.
    Shutdown,
}

impl Runner {
    pub fn new(backfills: Backfills, replica: String) -> Self {
        Runner {
            backfills,
            replica,
            running: Arc::default(),
        }
    }

    /// Scans for backfills to run until `shutdown`, then waits for the ones it runs to
    /// stop (their leases run out, so another replica continues them).
    pub async fn run(self, tasks: TaskTracker, shutdown: CancellationToken) {
        let scan = self.backfills.inner.config.backfill.scan_interval;
        loop {
            if let Err(e) = self.scan(&tasks, &shutdown).await {
                warn!(error = %e, "scanning backfills failed; trying again");
            }
            if let Err(e) = self.backfills.run_due(&self.replica).await {
                warn!(error = %e, "starting scheduled backfills failed; trying again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(scan) => {}
            }
        }
    }

    async fn scan(&self, tasks: &TaskTracker, shutdown: &CancellationToken) -> Result<()> {
        let store = &self.backfills.inner.substrate.backfills;
        let lease = self.backfills.inner.config.backfill.lease;
        for (mut record, revision) in store.list().await? {
            let now = now_ms();
            let free = record.runner.is_empty() || record.lease_until_ms < now;
            if record.state() != BackfillState::Running
                || !free
                || self.lock_running().contains(&record.id)
            {
                continue;
            }
            let taken_from = std::mem::replace(&mut record.runner, self.replica.clone());
            record.lease_until_ms = now + lease.as_millis() as i64;
            let Some(revision) = store.update(&record, revision).await? else {
                continue; // another replica took it first
            };
            info!(backfill = %record.id, from = %taken_from, "running a backfill");
            self.lock_running().insert(record.id.clone());
            let runner = self.clone();
            let token = shutdown.clone();
            fstore_substrate::task::spawn_named(tasks, "backfill", async move {
                let id = record.id.clone();
                let stopped = runner.run_one((record, revision), token).await;
                match stopped {
                    Ok(s) => info!(backfill = %id, stopped = ?s, "backfill stopped here"),
                    Err(e) => {
                        warn!(backfill = %id, error = %e, "backfill stopped here; another replica takes it over")
                    }
                }
                runner.lock_running().remove(&id);
            });
        }
        Ok(())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one held backfill until it is done, lost or this replica shuts down.
    async fn run_one(&self, held: Revised, shutdown: CancellationToken) -> Result<Stopped> {
        let record = held.0.clone();
        let holder = Holder::new(self, held);
        let lease = self.backfills.inner.config.backfill.lease;
        let window = self.backfills.inner.config.backfill.window;
        let settled: HashSet<u32> = record.settled.iter().copied().collect();
        let todo: Vec<u32> = (record.next_chunk..record.chunks)
            .filter(|c| !settled.contains(c))
            .collect();
        let stop = shutdown.child_token();
        let renew = async {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(Stopped::Shutdown),
                    _ = tokio::time::sleep(lease / 3) => {}
                }
                let until = now_ms() + lease.as_millis() as i64;
                if !holder.save(|r| r.lease_until_ms = until).await? {
                    return Ok(Stopped::Lost);
                }
            }
        };
        let work = async {
            let mut chunks = futures::stream::iter(todo)
                .map(|index| {
                    let record = &record;
                    async move { (index, self.settle_chunk(record, index).await) }
                })
                .buffer_unordered(window);
            while let Some((index, counts)) = chunks.next().await {
                let counts = counts?;
                let kept = holder
                    .save(|r| {
                        r.done += counts.done;
                        r.failed += counts.failed;
                        r.skipped += counts.skipped;
                        r.settled.push(index);
                        r.settled.sort_unstable();
                        // The cursor moves past every chunk settled in a row.
                        while r.settled.first() == Some(&r.next_chunk) {
                            r.settled.remove(0);
                            r.next_chunk += 1;
                        }
                    })
                    .await?;
                if !kept {
                    return Ok(Stopped::Lost);
                }
            }
            // Staged generations go through the gate before the backfill reads as done; a
            // replica that takes over a finished backfill decides what is still undecided.
            self.backfills.inner.publisher.decide(&record).await?;
            let finished = holder
                .save(|r| {
                    r.set_state(BackfillState::Done);
                    r.finished_at_ms = now_ms();
                    r.runner.clear();
                })
                .await?;
            Ok(if finished {
                Stopped::Done
            } else {
                Stopped::Lost
            })
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => Ok(Stopped::Shutdown),
            r = renew => r,
            r = work => r,
        };
        stop.cancel();
        outcome
    }

    /// Plans one chunk as a batch-lane request and follows it until every pair is
    /// READY or FAILED; retried with backoff while the backend is unavailable or the
    /// batch lane is full.
    async fn settle_chunk(&self, record: &BackfillRecord, index: u32) -> Result<Counts> {
        let attempt = || self.try_chunk(record, index);
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(30)
                    .with_jitter(),
            )
            .when(retryable)
            .notify(|e, after| {
                warn!(backfill = %record.id, chunk = index, error = %e, ?after, "a backfill chunk will be planned again");
            })
            .await
    }

    async fn try_chunk(&self, record: &BackfillRecord, index: u32) -> Result<Counts> {
        let s = &self.backfills.inner;
        let chunk = s
            .substrate
            .backfills
            .chunk(&record.id, index)
            .await?
            .ok_or_else(|| {
                Error::Internal(format!("backfill {} has no chunk {index}", record.id))
            })?;
        let request = self.backfills.chunk_request(record, chunk.entities).await?;
        let mut follower = Follower::new(
            s.planner.clone(),
            &s.hub,
            Arc::new(request),
            Instant::now() + CHUNK_WAIT,
            s.config.server.recheck_interval,
        )
        .waiting_for_all();
        let first = follower.first().await?;
        let origins = first.origins.clone();
        let last = if first.is_pending() {
            follower.last(first).await?
        } else {
            first
        };
        if last.is_pending() {
            return Err(Error::Substrate(fstore_substrate::Error::Unavailable(
                format!("chunk {index} still pending after {CHUNK_WAIT:?}"),
            )));
        }
        if !record.staged.is_empty() {
            // Before the chunk is recorded settled: a settled chunk has its values staged.
            s.publisher
                .record_chunk(record, index, &last.results)
                .await?;
        }
        Ok(count(&last.results, &origins, record.created_at_ms))
    }
}

/// A chunk's results counted: READY found stored from before the backfill began is
/// skipped as fresh; other READY values were computed for it (by this replica, or by
/// one that died before recording the chunk); FAILED failed.
fn count(results: &[api::FeatureResult], first: &[Origin], started_at_ms: i64) -> Counts {
    let mut c = Counts::default();
    for (r, origin) in results.iter().zip(first) {
        match r.status() {
            api::Status::Ready if *origin == Origin::Stored && r.computed_at_ms < started_at_ms => {
                c.skipped += 1
            }
            api::Status::Ready | api::Status::Stale => c.done += 1,
            _ => c.failed += 1,
        }
    }
    c
}

/// Errors a later try of a chunk may not meet: the backend away, a full lane.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Substrate(
            fstore_substrate::Error::Unavailable(_) | fstore_substrate::Error::QueueFull { .. }
        )
    )
}

/// The record of a backfill this replica holds, and its revision: every write is a
/// compare-and-set that finds out when the backfill was cancelled or taken over.
struct Holder<'a> {
    runner: &'a Runner,
    held: tokio::sync::Mutex<Revised>,
}

impl<'a> Holder<'a> {
    fn new(runner: &'a Runner, held: Revised) -> Self {
        Holder {
            runner,
            held: tokio::sync::Mutex::new(held),
        }
    }

    /// Applies `change` to the record and writes it; false once the backfill is no
    /// longer this replica's to run (cancelled, or held by another).
    async fn save(&self, change: impl Fn(&mut BackfillRecord)) -> Result<bool> {
        let store = &self.runner.backfills.inner.substrate.backfills;
        let mut held = self.held.lock().await;
        for _ in 0..CAS_TRIES {
            let mut next = held.0.clone();
            change(&mut next);
            if let Some(revision) = store.update(&next, held.1).await? {
                *held = (next, revision);
                return Ok(true);
            }
            match store.get(&held.0.id).await? {
                Some(fresh)
                    if fresh.0.state() == BackfillState::Running
                        && fresh.0.runner == self.runner.replica =>
                {
                    *held = fresh;
                }
                _ => return Ok(false),
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: api::Status, computed_at_ms: i64) -> api::FeatureResult {
        let mut r = api::FeatureResult {
            computed_at_ms,
            ..Default::default()
        };
        r.set_status(status);
        r
    }

    #[test]
    fn fresh_values_are_skipped_and_values_computed_since_the_start_are_done() {
        let results = vec![
            result(api::Status::Ready, 50),
            result(api::Status::Ready, 150),
            result(api::Status::Ready, 160),
            result(api::Status::Failed, 170),
        ];
        let origins = [
            Origin::Stored,
            Origin::Stored,
            Origin::Computed,
            Origin::Computed,
        ];
        assert_eq!(
            count(&results, &origins, 100),
            Counts {
                done: 2,
                failed: 1,
                skipped: 1
            },
            "a value stored before the start is fresh; one stored after it was computed for it"
        );
    }
}
