//! Quotas per tenant on this replica: calls per second with a burst (`[quotas]`), kept
//! as one theoretical arrival time per tenant — the generic cell rate algorithm the
//! workers' shared rate limits use. A call over its tenant's quota is refused at once
//! with how long to wait; another tenant's calls never wait on it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fstore_substrate::rate::gcra;

use crate::config::QuotaConfig;
use crate::{Error, Result};

/// Past this many tenants, those with nothing outstanding are forgotten.
const PRUNE_AT: usize = 10_000;

#[derive(Debug)]
pub struct Quotas {
    config: QuotaConfig,
    /// Per tenant, the theoretical arrival time (µs) of its next call.
    tat: Mutex<HashMap<String, i64>>,
}

impl Quotas {
    pub fn new(config: QuotaConfig) -> Self {
        Quotas {
            config,
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// Charges one call of `tenant`, or refuses it with the wait after which it would
    /// pass.
    pub fn admit(&self, tenant: &str) -> Result<()> {
        self.admit_at(tenant, fstore_substrate::time::now_ms() * 1_000)
    }

    fn admit_at(&self, tenant: &str, now_us: i64) -> Result<()> {
        let (rate, burst) = self.config.of(tenant);
        if rate <= 0.0 {
            return Ok(());
        }
        // A call may start up to `burst - 1` intervals ahead of its rate.
        let tolerance = Duration::from_secs_f64(f64::from(burst - 1) / rate);
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let at = tat.get(tenant).copied().unwrap_or(now_us);
        let (next, wait) = gcra(at, now_us, 1, rate);
        if wait > tolerance {
            let retry_after_ms = (wait - tolerance).as_millis().max(1) as u64;
            return Err(Error::QuotaExceeded {
                tenant: tenant.to_string(),
                rate,
                burst,
                retry_after_ms,
            });
        }
        if tat.len() >= PRUNE_AT {
            tat.retain(|_, t| *t > now_us);
        }
        tat.insert(tenant.to_string(), next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantQuota;

    fn quotas() -> Quotas {
        let mut c = QuotaConfig {
            calls_per_second: 10.0,
            burst: 3,
            ..QuotaConfig::default()
        };
        c.tenants.insert(
            "big".into(),
            TenantQuota {
                calls_per_second: Some(1000.0),
                burst: None,
            },
        );
        Quotas::new(c)
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_says_when_to_retry() {
        let q = quotas();
        let t0 = 1_000_000_000;
        for _ in 0..3 {
            q.admit_at("a", t0).expect("within the burst");
        }
        let e = q.admit_at("a", t0).expect_err("past the burst");
        match e {
            Error::QuotaExceeded { retry_after_ms, .. } => assert_eq!(retry_after_ms, 100),
            other => panic!("{other}"),
        }
        // Another tenant is not held back; one with its own quota has its own rate.
        q.admit_at("b", t0).expect("b has its own budget");
        for i in 0..50 {
            q.admit_at("big", t0 + i * 1_000)
                .expect("one call a millisecond is 1000/s");
        }
        // 100 ms later one more call of `a` fits.
        q.admit_at("a", t0 + 100_000).expect("after the wait");
        assert!(q.admit_at("a", t0 + 100_000).is_err());
    }

    #[test]
    fn no_rate_means_no_bound() {
        let q = Quotas::new(QuotaConfig::default());
        for _ in 0..10_000 {
            q.admit_at("a", 0).expect("unbounded");
        }
    }
}
