//! Spawned tasks: every task the substrate starts goes through [`spawn_named`], so it is
//! tracked (a shutdown can wait for it) and named (it runs in a `task` span whose `name`
//! field says what it is).

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns `task` on `tracker`, inside a `task` span named `name`. The span's parent is
/// the caller's current span, so a slot's task sits under its flow's autoscaler.
pub(crate) fn spawn_named<F>(tracker: &TaskTracker, name: &str, task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tracker.spawn(task.instrument(tracing::info_span!("task", name)))
}
