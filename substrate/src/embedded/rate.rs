//! The embedded rate limiter: one theoretical arrival time per flow, in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::store::lock;
use crate::Error;
use crate::rate::{RateLimiter, gcra};

#[derive(Default)]
pub struct EmbeddedRates {
    tat: Mutex<HashMap<String, i64>>,
}

#[async_trait]
impl RateLimiter for EmbeddedRates {
    async fn reserve(&self, flow: &str, n: u32, per_sec: f64) -> Result<Duration, Error> {
        let now = crate::time::now_ms() * 1_000;
        let mut tat = lock(&self.tat);
        let at = tat.entry(flow.to_string()).or_insert(0);
        let (next, wait) = gcra(*at, now, n, per_sec);
        *at = next;
        Ok(wait)
    }
}
