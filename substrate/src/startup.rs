//! Retries of what a process does once as it starts: opening the streams and buckets,
//! advertising its flows, loading the registry and the published generations. A NATS
//! cluster that is electing leaders (just started, or a node restarting) answers such
//! requests with timeouts for a few seconds; a process started then waits for the
//! election instead of exiting. Calls are never retried here: a caller retries those
//! itself, on the status it was answered.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tracing::warn;

/// Tries before a start gives up: about 25 s of backoff, several leader elections.
const TRIES: usize = 15;

/// Runs `op`, again while it fails with an error `transient` accepts (up to about 25 s
/// in all); `what` names the step in the warnings.
pub async fn retry<T, E, F, Fut>(what: &str, op: F, transient: impl Fn(&E) -> bool) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(TRIES);
    retry_with(backoff, what, op, transient).await
}

async fn retry_with<T, E, F, Fut>(
    backoff: ExponentialBuilder,
    what: &str,
    op: F,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    op.retry(backoff)
        .when(transient)
        .notify(|e, after| {
            warn!(error = %e, retry_in = ?after, "{what} failed (a cluster electing leaders?); retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The shipped number of tries, without the waits.
    fn quick() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(1))
            .with_max_delay(Duration::from_millis(1))
            .with_max_times(TRIES)
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_the_step_succeeds() {
        let calls = AtomicU32::new(0);
        let got = retry_with(
            quick(),
            "a step",
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err("leader election"),
                    _ => Ok(7),
                }
            },
            |_| true,
        )
        .await;
        assert_eq!(got, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_lasting_failure_ends_the_start_after_the_tries() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry_with(
            quick(),
            "a step",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("no quorum")
            },
            |_| true,
        )
        .await;
        assert_eq!(got, Err("no quorum"));
        assert_eq!(calls.load(Ordering::SeqCst), TRIES as u32 + 1);
    }

    #[tokio::test]
    async fn other_failures_end_the_start_at_once() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry_with(
            quick(),
            "a step",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("bad config")
            },
            |e: &&str| *e != "bad config",
        )
        .await;
        assert_eq!(got, Err("bad config"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
