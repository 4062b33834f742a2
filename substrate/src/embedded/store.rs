//! In-memory stores: moka for values (TTL per entry from the envelope, bounded by
//! weight) and tickets, plain maps behind locks for the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fstore_flows::{FlowId, FlowSpec, ModelInfo};
use futures::StreamExt;
use futures::stream::BoxStream;
use moka::Expiry;
use prost::Message;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::store::{Advert, FlowEntry, same_job};
use crate::time::now_ms;
use fstore_proto::api::FeatureDefinition;

use fstore_proto::wire::{ServedReport, StoredInputs};

use crate::{
    ComputeJob, DeadLetter, DeadLetters, Definitions, Error, FlowDirectory, InputStore, Notifier,
    ResultStore, ServedReports, Ticket, TicketStore, ValueEnvelope, WaiterStore, Watermarks,
};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Each entry lives until its envelope's `expires_at_ms`.
struct EnvelopeExpiry;

impl EnvelopeExpiry {
    fn remaining(env: &ValueEnvelope) -> Option<Duration> {
        let left = env.expires_at_ms.saturating_sub(now_ms());
        Some(Duration::from_millis(left.max(0) as u64))
    }
}

impl Expiry<String, Arc<ValueEnvelope>> for EnvelopeExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        v: &Arc<ValueEnvelope>,
        _: Instant,
    ) -> Option<Duration> {
        Self::remaining(v)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<ValueEnvelope>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Self::remaining(v)
    }
}

/// Values in a moka cache bounded by the encoded size of its envelopes. The sync cache:
/// a look-up never waits, so it needs no future of its own on the hit path.
#[derive(Clone)]
pub struct EmbeddedResults {
    cache: moka::sync::Cache<String, Arc<ValueEnvelope>>,
}

impl EmbeddedResults {
    pub fn new(max_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<ValueEnvelope>| {
                u32::try_from(k.len() + v.encoded_len()).unwrap_or(u32::MAX)
            })
            .expire_after(EnvelopeExpiry)
            .build();
        EmbeddedResults { cache }
    }

    /// Drops the copy of `key` (for a tier in front of another store).
    pub(crate) fn evict(&self, key: &str) {
        self.cache.invalidate(key);
    }
}

#[async_trait]
impl ResultStore for EmbeddedResults {
    async fn get(
        &self,
        key: &str,
        _fresh_from_ms: i64,
    ) -> Result<Option<Arc<ValueEnvelope>>, Error> {
        Ok(self.cache.get(key))
    }

    async fn put(&self, key: &str, envelope: ValueEnvelope) -> Result<(), Error> {
        self.cache.insert(key.to_string(), Arc::new(envelope));
        Ok(())
    }
}

#[derive(Clone)]
pub struct EmbeddedTickets {
    cache: moka::future::Cache<String, Arc<Ticket>>,
}

impl EmbeddedTickets {
    pub fn new(ttl: Duration) -> Self {
        EmbeddedTickets {
            cache: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
        }
    }
}

#[async_trait]
impl TicketStore for EmbeddedTickets {
    async fn put(&self, ticket: Ticket) -> Result<(), Error> {
        self.cache.insert(ticket.id.clone(), Arc::new(ticket)).await;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Arc<Ticket>>, Error> {
        Ok(self.cache.get(id).await)
    }
}

/// Stored request-time inputs, by (tenant, entity).
#[derive(Default)]
pub struct EmbeddedInputs {
    inputs: Mutex<HashMap<(String, String), StoredInputs>>,
}

#[async_trait]
impl InputStore for EmbeddedInputs {
    async fn put(
        &self,
        tenant: &str,
        entity_id: &str,
        inputs: StoredInputs,
    ) -> Result<StoredInputs, Error> {
        let mut all = lock(&self.inputs);
        let stored = all
            .entry((tenant.to_string(), entity_id.to_string()))
            .or_default();
        crate::store::merge_inputs(stored, inputs);
        Ok(stored.clone())
    }

    async fn get(&self, tenant: &str, entity_id: &str) -> Result<Option<StoredInputs>, Error> {
        Ok(lock(&self.inputs)
            .get(&(tenant.to_string(), entity_id.to_string()))
            .cloned())
    }
}

#[derive(Default)]
pub struct EmbeddedWaiters {
    waiters: Mutex<HashMap<String, Vec<ComputeJob>>>,
}

#[async_trait]
impl WaiterStore for EmbeddedWaiters {
    async fn add(&self, input_key: &str, job: &ComputeJob) -> Result<(), Error> {
        let mut w = lock(&self.waiters);
        let list = w.entry(input_key.to_string()).or_default();
        if !list.iter().any(|j| same_job(j, job)) {
            list.push(job.clone());
        }
        Ok(())
    }

    async fn waiting(&self, input_key: &str) -> Result<Vec<ComputeJob>, Error> {
        Ok(lock(&self.waiters)
            .get(input_key)
            .cloned()
            .unwrap_or_default())
    }

    async fn remove(&self, input_key: &str, jobs: &[ComputeJob]) -> Result<(), Error> {
        let mut w = lock(&self.waiters);
        if let Some(list) = w.get_mut(input_key) {
            list.retain(|j| !jobs.iter().any(|t| same_job(j, t)));
            if list.is_empty() {
                w.remove(input_key);
            }
        }
        Ok(())
    }
}

/// Ready notifications on a broadcast channel; a lagging subscriber loses some, which
/// only delays it.
pub struct EmbeddedNotifier {
    tx: broadcast::Sender<String>,
}

impl Default for EmbeddedNotifier {
    fn default() -> Self {
        EmbeddedNotifier {
            tx: broadcast::channel(16 * 1024).0,
        }
    }
}

#[async_trait]
impl Notifier for EmbeddedNotifier {
    async fn publish(&self, key: &str) -> Result<(), Error> {
        // No subscriber is not an error: nobody is waiting.
        let _ = self.tx.send(key.to_string());
        Ok(())
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, String>, Error> {
        Ok(BroadcastStream::new(self.tx.subscribe())
            .filter_map(|r| async move { r.ok() })
            .boxed())
    }
}

/// (tenant, feature, entity)
type EntityScope = (String, String, String);

#[derive(Default)]
pub struct EmbeddedWatermarks {
    /// (tenant, feature) -> at
    features: RwLock<HashMap<(String, String), i64>>,
    /// (tenant, feature, entity) -> (at, forget after)
    entities: RwLock<HashMap<EntityScope, (i64, Instant)>>,
    /// Whether any watermark was ever set: the common case reads nothing.
    any: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Watermarks for EmbeddedWatermarks {
    async fn set(
        &self,
        tenant: &str,
        feature: &str,
        entity: Option<&str>,
        at_ms: i64,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
        match entity {
            None => {
                let mut f = self.features.write().unwrap_or_else(|p| p.into_inner());
                let e = f
                    .entry((tenant.to_string(), feature.to_string()))
                    .or_insert(0);
                *e = (*e).max(at_ms);
            }
            Some(entity) => {
                let now = Instant::now();
                let mut m = self.entities.write().unwrap_or_else(|p| p.into_inner());
                if m.len() > 100_000 {
                    m.retain(|_, (_, until)| *until > now);
                }
                m.insert(
                    (tenant.to_string(), feature.to_string(), entity.to_string()),
                    (at_ms, now + ttl),
                );
            }
        }
        Ok(())
    }

    async fn get(&self, tenant: &str, feature: &str, entity: &str) -> Result<i64, Error> {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(0);
        }
        let f = self.features.read().unwrap_or_else(|p| p.into_inner());
        let mut at = f
            .get(&(tenant.to_string(), feature.to_string()))
            .copied()
            .unwrap_or(0);
        drop(f);
        let m = self.entities.read().unwrap_or_else(|p| p.into_inner());
        if !m.is_empty()
            && let Some((e, _)) =
                m.get(&(tenant.to_string(), feature.to_string(), entity.to_string()))
        {
            at = at.max(*e);
        }
        Ok(at)
    }
}

/// A flow's spec and the workers serving it, with their model and slots.
type Served = (FlowSpec, BTreeMap<String, (Option<ModelInfo>, u32)>);

#[derive(Default)]
pub struct EmbeddedDirectory {
    flows: RwLock<BTreeMap<FlowId, Served>>,
}

#[async_trait]
impl FlowDirectory for EmbeddedDirectory {
    async fn advertise(&self, worker_id: &str, adverts: &[Advert]) -> Result<(), Error> {
        let mut flows = self.flows.write().unwrap_or_else(|p| p.into_inner());
        for advert in adverts {
            let entry = flows
                .entry(advert.spec.id.clone())
                .or_insert_with(|| (advert.spec.clone(), BTreeMap::new()));
            entry.0 = advert.spec.clone();
            entry
                .1
                .insert(worker_id.to_string(), (advert.model.clone(), advert.slots));
        }
        Ok(())
    }

    async fn withdraw(&self, worker_id: &str) -> Result<(), Error> {
        let mut flows = self.flows.write().unwrap_or_else(|p| p.into_inner());
        for (_, workers) in flows.values_mut() {
            workers.remove(worker_id);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<FlowEntry>, Error> {
        let flows = self.flows.read().unwrap_or_else(|p| p.into_inner());
        Ok(flows
            .values()
            .map(|(spec, workers)| FlowEntry {
                spec: spec.clone(),
                live_workers: workers.len() as u32,
                slots: workers.values().map(|(_, slots)| slots).sum(),
                models: workers
                    .iter()
                    .filter_map(|(w, (m, _))| Some((w.clone(), m.clone()?)))
                    .collect(),
            })
            .collect())
    }
}

/// Dead letters in memory, by a sequence number.
#[derive(Default)]
pub struct EmbeddedDeadLetters {
    letters: Mutex<BTreeMap<u64, DeadLetter>>,
    next: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl DeadLetters for EmbeddedDeadLetters {
    async fn put(&self, mut letter: DeadLetter) -> Result<String, Error> {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        letter.id = seq.to_string();
        lock(&self.letters).insert(seq, letter);
        Ok(seq.to_string())
    }

    async fn list(&self, tenant: &str, limit: usize) -> Result<(Vec<DeadLetter>, u64), Error> {
        let letters = lock(&self.letters);
        let mine: Vec<&DeadLetter> = letters
            .values()
            .filter(|l| l.job.as_ref().is_some_and(|j| j.tenant == tenant))
            .collect();
        let total = mine.len() as u64;
        Ok((mine.into_iter().take(limit).cloned().collect(), total))
    }

    async fn get(&self, id: &str) -> Result<Option<DeadLetter>, Error> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(None);
        };
        Ok(lock(&self.letters).get(&seq).cloned())
    }

    async fn remove(&self, id: &str) -> Result<bool, Error> {
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(false);
        };
        Ok(lock(&self.letters).remove(&seq).is_some())
    }
}

/// Definitions of a single process: nobody else registers, so the watch is silent.
#[derive(Default)]
pub struct EmbeddedDefinitions {
    /// By (tenant, name, version).
    defs: Mutex<BTreeMap<(String, String, u32), FeatureDefinition>>,
}

#[async_trait]
impl Definitions for EmbeddedDefinitions {
    async fn create(&self, def: &FeatureDefinition) -> Result<bool, Error> {
        let mut defs = lock(&self.defs);
        let key = (def.tenant.clone(), def.name.clone(), def.version);
        if defs.contains_key(&key) {
            return Ok(false);
        }
        defs.insert(key, def.clone());
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<FeatureDefinition>, Error> {
        Ok(lock(&self.defs).values().cloned().collect())
    }

    async fn remove(&self, tenant: &str, name: &str, version: u32) -> Result<bool, Error> {
        Ok(lock(&self.defs)
            .remove(&(tenant.to_string(), name.to_string(), version))
            .is_some())
    }

    async fn watch(&self) -> Result<BoxStream<'static, FeatureDefinition>, Error> {
        Ok(futures::stream::pending().boxed())
    }
}

/// Replicas' reports with when each expires.
#[derive(Default)]
pub struct EmbeddedServed {
    reports: Mutex<HashMap<(String, String), (ServedReport, Instant)>>,
}

#[async_trait]
impl ServedReports for EmbeddedServed {
    async fn put(
        &self,
        tenant: &str,
        replica: &str,
        report: &ServedReport,
        ttl: Duration,
    ) -> Result<(), Error> {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        reports.retain(|_, (_, until)| *until > now);
        reports.insert(
            (tenant.to_string(), replica.to_string()),
            (report.clone(), now + ttl),
        );
        Ok(())
    }

    async fn list(&self, tenant: &str) -> Result<Vec<(String, ServedReport)>, Error> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        Ok(reports
            .iter()
            .filter(|((t, _), (_, until))| t == tenant && *until > now)
            .map(|((_, replica), (report, _))| (replica.clone(), report.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_values_are_gone() {
        let store = EmbeddedResults::new(1 << 20);
        let env = ValueEnvelope {
            expires_at_ms: now_ms() + 50,
            ..Default::default()
        };
        store.put("k", env).await.expect("put");
        assert!(store.get("k", 0).await.expect("get").is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.get("k", 0).await.expect("get").is_none());
    }
}
