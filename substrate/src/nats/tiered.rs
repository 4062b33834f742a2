//! Values in two tiers: an L1 moka cache per process in front of the shared KV bucket.
//! L1 answers only with a copy fresh enough for the caller, never with a retryable
//! failure; otherwise the shared tier is read (it may hold a value another replica
//! computed since) and L1 refilled. A ready notification for a key drops its L1 copy
//! (`ResultStore::forget`): the key was stored again, by another process (a job
//! settled again after a redelivery says how often it was delivered).

use std::sync::Arc;

use async_trait::async_trait;

use crate::embedded::EmbeddedResults;
use crate::{Error, ResultStore, ValueEnvelope};

pub struct Tiered {
    l1: EmbeddedResults,
    shared: Arc<dyn ResultStore>,
}

impl Tiered {
    pub fn new(l1: EmbeddedResults, shared: Arc<dyn ResultStore>) -> Self {
        Tiered { l1, shared }
    }
}

#[async_trait]
impl ResultStore for Tiered {
    async fn get(
        &self,
        key: &str,
        fresh_from_ms: i64,
    ) -> Result<Option<Arc<ValueEnvelope>>, Error> {
        // A retryable failure is never answered from L1: the shared tier may hold the
        // value computed again since, by another process.
        if let Some(env) = self.l1.get(key, fresh_from_ms).await?
            && env.planned_at_ms >= fresh_from_ms
            && env.expires_at_ms > crate::time::now_ms()
            && !env.retryable
        {
            crate::metrics::global()
                .cache
                .get_or_create(&crate::metrics::cache("l1", true))
                .inc();
            return Ok(Some(env));
        }
        let m = crate::metrics::global();
        m.cache
            .get_or_create(&crate::metrics::cache("l1", false))
            .inc();
        let env = self.shared.get(key, fresh_from_ms).await?;
        m.cache
            .get_or_create(&crate::metrics::cache("shared", env.is_some()))
            .inc();
        if let Some(env) = &env {
            self.l1.put(key, env.as_ref().clone()).await?;
        }
        Ok(env)
    }

    async fn put(&self, key: &str, envelope: ValueEnvelope) -> Result<(), Error> {
        self.shared.put(key, envelope.clone()).await?;
        self.l1.put(key, envelope).await
    }

    fn forget(&self, key: &str) {
        self.l1.evict(key);
    }
}
