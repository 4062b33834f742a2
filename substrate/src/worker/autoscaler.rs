//! The autoscaler of one flow: reads the queue depth every tick and keeps
//! `ceil(depth / jobs_per_slot)` slots within the flow's bounds — up at once, down after
//! `scale_down_after`. At zero slots the flow's model is unloaded, and the first job to
//! arrive wakes it: a cold start, timed until its first batch finishes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use fstore_flows::{Flow, FlowId};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::{FlowStats, SlotBounds, Worker};
use crate::task::spawn_named;

/// What the autoscaler sees of a flow at a tick.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    /// Jobs waiting or in flight (the queue's depth).
    depth: u64,
    /// Jobs the busy slots hold.
    in_flight: u64,
    /// Slots holding a batch.
    busy: usize,
    /// Slots running.
    current: usize,
}

/// The slots a flow should have: one per `jobs_per_slot` jobs of depth, within
/// `bounds`, and at least one while any job is there; and one more than now while
/// every slot is busy and a job waits, so a lone slow job never waits for another to
/// finish while the bounds allow a slot for it.
fn desired_slots(load: Load, jobs_per_slot: u64, bounds: SlotBounds) -> usize {
    let wanted = usize::try_from(load.depth.div_ceil(jobs_per_slot.max(1))).unwrap_or(usize::MAX);
    let mut desired = wanted.clamp(bounds.min, bounds.max);
    if load.depth > 0 {
        desired = desired.max(1);
    }
    let waiting = load.depth.saturating_sub(load.in_flight);
    if waiting > 0 && load.current > 0 && load.busy >= load.current {
        desired = desired.max((load.current + 1).min(bounds.max));
    }
    desired
}

/// One running slot: the token that stops it and its task.
struct Slot {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl FlowStats {
    /// The flow goes from zero slots to some: a cold start begins.
    fn woke(&self) {
        self.cold_starts.fetch_add(1, Ordering::Relaxed);
        *self.woke_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// A batch of the flow finished: if it was the first since a wake, the cold start
    /// ends here and is recorded.
    pub(super) fn batch_finished(&self, flow: &FlowId) {
        let Some(woke) = self
            .woke_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let ms = u64::try_from(woke.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_cold_start_ms.store(ms, Ordering::Relaxed);
        crate::metrics::global()
            .cold_start_seconds
            .get_or_create(&crate::metrics::flow(&flow.to_string()))
            .observe(woke.elapsed().as_secs_f64());
        info!(flow = %flow, cold_start_ms = ms, "woke from zero");
    }
}

impl Worker {
    /// Runs the autoscaler of flow `id` until `shutdown`; then stops its slots and
    /// returns once each has settled the jobs it held.
    pub(super) async fn scale(self: Arc<Self>, id: FlowId, shutdown: CancellationToken) {
        let Some(flow) = self.catalog.get(&id).cloned() else {
            return;
        };
        let bounds = self.bounds(&id);
        let scaling = self.options.scaling.clone();
        let stats = self.stats.flow(&id.to_string());
        let queue = self.dispatcher.substrate().queue.clone();
        let tracker = TaskTracker::new();
        let slot_name = format!("slot {id}");
        // Slots that may hold batch jobs at once: all but one unless configured, so an
        // interactive job never waits behind a backfill for a slot.
        let batch_slots = match self.options.batch_slots {
            0 => bounds.max.saturating_sub(1).max(1),
            n => n,
        };
        let batch_permits = Arc::new(Semaphore::new(batch_slots));
        let start = |slots: &mut Vec<Slot>| {
            let stop = shutdown.child_token();
            let this = self.clone();
            let id = id.clone();
            let token = stop.clone();
            let permits = batch_permits.clone();
            let task = spawn_named(&tracker, &slot_name, async move {
                this.serve(id, permits, token).await;
            });
            slots.push(Slot { stop, task });
        };
        let mut slots = Vec::new();
        let mut below_since: Option<Instant> = None;
        for _ in 0..bounds.min {
            start(&mut slots);
        }
        stats.slots.store(slots.len() as u64, Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(scaling.tick) => {}
            }
            slots.retain(|s| !s.task.is_finished());
            let depth = match queue.depth(&id).await {
                Ok(d) => d.total,
                Err(e) => {
                    debug!(flow = %id, error = %e, "cannot read the queue depth; keeping the slots");
                    continue;
                }
            };
            let current = slots.len();
            let load = Load {
                depth,
                in_flight: stats.in_flight.load(Ordering::Relaxed),
                busy: usize::try_from(stats.busy_slots.load(Ordering::Relaxed)).unwrap_or(0),
                current,
            };
            let desired = desired_slots(load, scaling.jobs_per_slot, bounds);
            if desired > current {
                if current == 0 {
                    stats.woke();
                }
                info!(flow = %id, depth, from = current, to = desired, max = bounds.max, "scaling up");
                for _ in current..desired {
                    start(&mut slots);
                }
                below_since = None;
            } else if desired < current {
                let since = *below_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= scaling.scale_down_after {
                    info!(flow = %id, depth, from = current, to = desired, idle_for = ?since.elapsed(), "scaling down");
                    for slot in slots.drain(desired..) {
                        // The slot finishes the batch it holds, then stops.
                        slot.stop.cancel();
                    }
                    if desired == 0 {
                        unload(&id, flow.as_ref());
                    }
                    below_since = None;
                }
            } else {
                below_since = None;
            }
            stats.slots.store(slots.len() as u64, Ordering::Relaxed);
            record(&id, flow.as_ref(), slots.len(), depth);
        }
        // Shutdown: the slots stop pulling and settle what they hold; only then does
        // the autoscaler stop.
        for slot in &slots {
            slot.stop.cancel();
        }
        tracker.close();
        tracker.wait().await;
        stats.slots.store(0, Ordering::Relaxed);
    }
}

/// Scaled to zero: the flow's model, if loaded, leaves memory until the next wake.
fn unload(id: &FlowId, flow: &dyn Flow) {
    if flow.model().is_some_and(|m| m.loaded) {
        flow.unload();
        info!(flow = %id, "scaled to zero: model unloaded");
    }
}

/// Slots, queue depth and model load time of a flow, as metrics.
fn record(id: &FlowId, flow: &dyn Flow, slots: usize, depth: u64) {
    let m = crate::metrics::global();
    let label = crate::metrics::flow(&id.to_string());
    m.slots
        .get_or_create(&label)
        .set(i64::try_from(slots).unwrap_or(i64::MAX));
    m.queue_depth
        .get_or_create(&label)
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
    if let Some(model) = flow.model().filter(|m| m.loaded) {
        m.model_load_seconds
            .get_or_create(&label)
            .set(model.load_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: SlotBounds = SlotBounds { min: 0, max: 4 };

    fn depth(depth: u64) -> Load {
        Load {
            depth,
            ..Load::default()
        }
    }

    #[test]
    fn slots_follow_the_depth_within_bounds() {
        assert_eq!(desired_slots(depth(0), 16, BOUNDS), 0);
        assert_eq!(desired_slots(depth(1), 16, BOUNDS), 1);
        assert_eq!(desired_slots(depth(16), 16, BOUNDS), 1);
        assert_eq!(desired_slots(depth(17), 16, BOUNDS), 2);
        assert_eq!(desired_slots(depth(10_000), 16, BOUNDS), 4);
        assert_eq!(desired_slots(depth(u64::MAX), 1, BOUNDS), 4);
    }

    #[test]
    fn min_slots_stay_and_any_job_wakes_a_flow() {
        assert_eq!(
            desired_slots(depth(0), 16, SlotBounds { min: 2, max: 4 }),
            2
        );
        // jobs_per_slot 0 is read as 1, not a division by zero.
        assert_eq!(desired_slots(depth(3), 0, BOUNDS), 3);
    }

    #[test]
    fn a_job_waiting_while_every_slot_is_busy_gets_a_slot_within_bounds() {
        let waiting = Load {
            depth: 2,
            in_flight: 1,
            busy: 1,
            current: 1,
        };
        assert_eq!(desired_slots(waiting, 16, BOUNDS), 2);
        let idle_slot = Load { busy: 0, ..waiting };
        assert_eq!(
            desired_slots(idle_slot, 16, BOUNDS),
            1,
            "a free slot takes it"
        );
        let none_waiting = Load {
            in_flight: 2,
            ..waiting
        };
        assert_eq!(desired_slots(none_waiting, 16, BOUNDS), 1);
        let at_max = Load {
            depth: 9,
            in_flight: 4,
            busy: 4,
            current: 4,
        };
        assert_eq!(
            desired_slots(at_max, 16, BOUNDS),
            4,
            "never past the bounds"
        );
    }
}
