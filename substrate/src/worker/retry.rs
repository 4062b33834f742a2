//! The retry policy: what becomes of a job whose flow failed, or that keeps coming back
//! without finishing. A transient error is tried again after an exponential backoff with
//! jitter until `max_attempts`; then, or when a job has been delivered more often than
//! it may be tried (crash loops, lease timeouts), it is dead-lettered. A permanent error
//! fails the job at once. The queue's redelivery is the one retry mechanism: an attempt
//! is a delivery.

use std::time::Duration;

use super::{Worker, WorkerOptions};

/// What to do with a job after its flow returned an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Deliver it again after this delay.
    Retry(Duration),
    /// Attempts used up: keep it as a dead letter, then fail it.
    DeadLetter(String),
    /// It cannot succeed: fail it now.
    Fail(String),
}

/// The retry settings of a worker.
#[derive(Debug, Clone)]
pub(super) struct RetryPolicy {
    base: Duration,
    max: Duration,
    max_attempts: u32,
    max_deliveries: u32,
}

impl RetryPolicy {
    pub(super) fn new(options: &WorkerOptions) -> Self {
        RetryPolicy {
            base: options.retry_base,
            max: options.retry_max,
            max_attempts: options.max_attempts,
            max_deliveries: options.max_deliveries,
        }
    }

    /// The crash-loop guard: a job delivered as often as it may be tried (and more
    /// often than its attempts allow) crashed or outlived its lease every time, so it
    /// must not run again. Returns the dead letter's message.
    pub(super) fn crash_looped(&self, attempt: u32) -> Option<String> {
        let limit = self.max_deliveries.max(self.max_attempts.saturating_add(1));
        (attempt >= limit).then(|| {
            format!(
                "delivered {attempt} times without finishing (worker crashes or lease timeouts)"
            )
        })
    }

    /// What becomes of attempt `attempt` of the job under `key` that failed with `error`.
    pub(super) fn after_error(
        &self,
        error: &fstore_flows::Error,
        key: &str,
        attempt: u32,
    ) -> Verdict {
        if !error.is_transient() {
            Verdict::Fail(error.message().to_string())
        } else if attempt < self.max_attempts {
            Verdict::Retry(self.delay(key, attempt))
        } else {
            Verdict::DeadLetter(format!(
                "{} (gave up after {attempt} tries)",
                error.message()
            ))
        }
    }

    /// `base * 2^(attempt-1)`, capped at `max`, with ±50% jitter derived from the key
    /// and attempt (so retries of many jobs spread out without a random source).
    fn delay(&self, key: &str, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let h = blake3::hash(format!("{key}/{attempt}").as_bytes());
        let r = f64::from(h.as_bytes()[0]) / 255.0; // 0..=1
        capped.mul_f64(0.5 + r)
    }
}

impl Worker {
    pub(super) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(&self.options)
    }
}

/// How long attempt `attempt` of the job under `key` waits before it is delivered again:
/// `retry_base * 2^(attempt-1)`, capped at `retry_max`, with ±50% jitter.
pub fn backoff(options: &WorkerOptions, key: &str, attempt: u32) -> Duration {
    RetryPolicy::new(options).delay(key, attempt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fstore_flows::Error as FlowError;

    fn options() -> WorkerOptions {
        WorkerOptions {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            max_attempts: 3,
            max_deliveries: 10,
            ..crate::worker::test_options()
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = options();
        let d1 = backoff(&o, "k", 1);
        let d4 = backoff(&o, "k", 4);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(150));
        assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(1200));
        assert!(backoff(&o, "k", 30) <= Duration::from_millis(1500));
        assert!(backoff(&o, "k", u32::MAX) <= Duration::from_millis(1500));
    }

    #[test]
    fn jitter_is_stable_per_key_and_attempt() {
        let o = options();
        assert_eq!(backoff(&o, "k", 2), backoff(&o, "k", 2));
    }

    #[test]
    fn transient_errors_retry_until_the_last_attempt_then_dead_letter() {
        let p = RetryPolicy::new(&options());
        let busy = FlowError::Transient("busy".into());
        assert!(matches!(p.after_error(&busy, "k", 1), Verdict::Retry(_)));
        assert!(matches!(p.after_error(&busy, "k", 2), Verdict::Retry(_)));
        assert_eq!(
            p.after_error(&busy, "k", 3),
            Verdict::DeadLetter("busy (gave up after 3 tries)".into())
        );
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        let p = RetryPolicy::new(&options());
        let bad = FlowError::Permanent("bad input".into());
        assert_eq!(
            p.after_error(&bad, "k", 1),
            Verdict::Fail("bad input".into())
        );
    }

    #[test]
    fn crash_loops_are_caught_at_max_deliveries_but_never_before_the_attempts() {
        let p = RetryPolicy::new(&options());
        assert_eq!(p.crash_looped(9), None);
        assert!(p.crash_looped(10).is_some());
        let few = RetryPolicy::new(&WorkerOptions {
            max_attempts: 5,
            max_deliveries: 2,
            ..options()
        });
        // A job gets its attempts even when max_deliveries is set below them.
        assert_eq!(few.crash_looped(5), None);
        assert!(few.crash_looped(6).is_some());
        assert!(few.crash_looped(u32::MAX).is_some());
    }
}
