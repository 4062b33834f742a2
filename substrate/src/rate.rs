//! Rate limits shared by every worker of a flow: a flow that calls a source system can
//! be held to so many jobs per second across all processes (on NATS, through the
//! shared store; embedded, in memory). A generic cell rate algorithm: the state is one
//! *theoretical arrival time*; a reservation of `n` jobs moves it `n / rate` seconds
//! on, and the caller waits until its reservation begins.

use std::time::Duration;

use async_trait::async_trait;

use crate::Error;

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Reserves `n` jobs of `flow` at `per_sec`: how long to wait before running them.
    async fn reserve(&self, flow: &str, n: u32, per_sec: f64) -> Result<Duration, Error>;
}

/// The next theoretical arrival time (µs) and the wait of a reservation of `n` at
/// `per_sec`, made at `now_us` against `tat_us`.
pub fn gcra(tat_us: i64, now_us: i64, n: u32, per_sec: f64) -> (i64, Duration) {
    let cost = (f64::from(n) * 1e6 / per_sec.max(1e-9)) as i64;
    let start = tat_us.max(now_us);
    let wait = Duration::from_micros(u64::try_from(start - now_us).unwrap_or(0));
    (start + cost, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_spaced_by_the_rate() {
        // 10/s: each job costs 100 ms.
        let (tat, wait) = gcra(0, 1_000_000, 1, 10.0);
        assert_eq!((tat, wait), (1_100_000, Duration::ZERO), "idle: at once");
        let (tat, wait) = gcra(tat, 1_000_000, 2, 10.0);
        assert_eq!((tat, wait), (1_300_000, Duration::from_millis(100)));
        let (_, wait) = gcra(tat, 1_050_000, 1, 10.0);
        assert_eq!(wait, Duration::from_millis(250));
    }
}
