//! The shared rate limiter: a flow's theoretical arrival time (µs) under `<flow>` in
//! `<prefix>_rates`, moved on by compare-and-set, so every worker process of the flow
//! draws from one budget.

use std::time::Duration;

use async_nats::jetstream::kv;
use async_trait::async_trait;

use super::unavailable;
use crate::Error;
use crate::rate::{RateLimiter, gcra};

/// Tries of a compare-and-set before giving up.
const TRIES: usize = 32;

pub struct NatsRates {
    store: kv::Store,
}

impl NatsRates {
    pub(crate) fn new(store: kv::Store) -> Self {
        NatsRates { store }
    }
}

#[async_trait]
impl RateLimiter for NatsRates {
    async fn reserve(&self, flow: &str, n: u32, per_sec: f64) -> Result<Duration, Error> {
        let key = crate::token::encode(flow);
        for _ in 0..TRIES {
            let entry = self.store.entry(&key).await.map_err(unavailable)?;
            let (tat, revision) = match entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(0),
                    Some(e.revision),
                ),
                _ => (0, None),
            };
            let now = crate::time::now_ms() * 1_000;
            let (next, wait) = gcra(tat, now, n, per_sec);
            let value = next.to_string().into_bytes().into();
            let written = match revision {
                Some(r) => self.store.update(&key, value, r).await.is_ok(),
                None => self.store.create(&key, value).await.is_ok(),
            };
            if written {
                return Ok(wait);
            }
        }
        Err(Error::Unavailable(format!(
            "too much contention on the rate limit of {flow}"
        )))
    }
}
