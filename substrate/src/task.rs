//! Spawned tasks: every task the substrate starts goes through [`spawn_named`], so it is
//! tracked (a shutdown can wait for it) and named (it runs in a `task` span whose `name`
//! field says what it is). [`Background`] is the set a backend keeps for its watchers
//! and timers: they stop when its token is cancelled, and `shutdown` waits for them.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns `task` on `tracker`, inside a `task` span named `name`. The span's parent is
/// the caller's current span, so a slot's task sits under its flow's autoscaler.
pub fn spawn_named<F>(tracker: &TaskTracker, name: &str, task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tracker.spawn(task.instrument(tracing::info_span!("task", name)))
}

/// A backend's background tasks (watchers, wake-up timers) and the token that stops
/// them. Cheap to clone: clones share the tasks and the token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Background {
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Background {
    /// Spawns a background task; it must end soon after [`Background::token`] is
    /// cancelled.
    pub(crate) fn spawn<F>(&self, name: &str, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_named(&self.tracker, name, task)
    }

    /// Cancelled when the backend shuts down.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Stops every background task and waits until each has ended. Tasks spawned
    /// afterwards see the cancelled token at once.
    pub(crate) async fn shutdown(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_stops_and_joins_every_task() {
        let background = Background::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        for _ in 0..3 {
            let token = background.token().clone();
            let tx = tx.clone();
            background.spawn("test", async move {
                token.cancelled().await;
                // Holding the sender until the task ends: the channel closes only
                // once every task has returned.
                drop(tx);
            });
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), background.shutdown())
            .await
            .expect("background tasks stop when cancelled");
        assert!(rx.recv().await.is_none(), "every task has ended");
    }
}
