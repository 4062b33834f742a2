//! Fan-out of ready notifications inside one replica: one subscription to the
//! substrate's notifier, re-broadcast to every waiting call. A lagging call loses
//! notifications and simply re-checks; the result store stays the truth.

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use fstore_substrate::Substrate;

#[derive(Debug, Clone)]
pub struct ReadyHub {
    tx: broadcast::Sender<String>,
}

impl ReadyHub {
    /// Starts forwarding the substrate's notifications, on a task of `tasks`, until
    /// `shutdown`.
    pub async fn start(
        substrate: &Substrate,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, fstore_substrate::Error> {
        let (tx, _) = broadcast::channel(64 * 1024);
        let mut stream = substrate.notifier.subscribe().await?;
        let fwd = tx.clone();
        let results = substrate.results.clone();
        fstore_substrate::task::spawn_named(tasks, "ready-hub", async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = stream.next() => match next {
                        Some(key) => {
                            // Stored again: a local copy of it is out of date.
                            results.forget(&key);
                            let _ = fwd.send(key);
                        }
                        None => { warn!("ready notifications ended"); break; }
                    }
                }
            }
        });
        Ok(ReadyHub { tx })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}
