//! The KV-backed stores: values, tickets, claims, waiters, watermarks and definitions.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::header;
use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use fstore_proto::api::FeatureDefinition;
use fstore_proto::wire::{JobList, StoredInputs};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use tracing::warn;

use super::{Layout, unavailable};
use crate::error::Message as Stored;
use crate::store::same_job;
use crate::task::Background;
use crate::{
    ComputeJob, Definitions, Error, InputStore, ResultStore, Ticket, TicketStore, ValueEnvelope,
    WaiterStore, Watermarks,
};

/// Opens a bucket, creating it if needed.
pub(crate) async fn open(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, Error> {
    let name = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create) => js
            .get_key_value(&name)
            .await
            .map_err(|e| unavailable(format!("bucket {name}: {create}; {e}"))),
    }
}

/// The latest value of `key` and its revision as the bucket stream's leader has them:
/// a read that sees every write acknowledged before it, also on a cluster. The KV
/// client's own reads are direct gets, which any replica may answer, one that lags
/// included: a job parked on an input just stored, or taken from its waiters just now,
/// would then be decided on a stale read (and lost). Deleted, purged and expired keys
/// read as absent.
pub(super) async fn leader_entry(
    store: &kv::Store,
    key: &str,
) -> Result<Option<(Bytes, u64)>, Error> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{key}", store.prefix);
    let message = match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => message,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(unavailable(e)),
    };
    let removed = message
        .headers
        .get("KV-Operation")
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
        || message.headers.get("Nats-Marker-Reason").is_some();
    Ok((!removed).then_some((message.payload, message.sequence)))
}

/// Every record of a bucket whose values are all `M`, in no particular order (keys
/// deleted or purged meanwhile are skipped). Each is read from the stream's leader: a
/// registry reloaded because a ticket named a version it lacked must see that version
/// (the chaos run had a lagging replica answer "no version 237 (latest is 234)").
pub(super) async fn decode_all<M: Message + Default>(store: &kv::Store) -> Result<Vec<M>, Error> {
    let mut keys = store.keys().await.map_err(unavailable)?;
    let mut found = Vec::new();
    while let Some(key) = keys.next().await {
        found.push(key.map_err(unavailable)?);
    }
    let mut out = Vec::new();
    for key in found {
        if let Some((bytes, _)) = leader_entry(store, &key).await?
            && !bytes.is_empty()
        {
            out.push(M::decode(bytes)?);
        }
    }
    Ok(out)
}

/// A per-message TTL as `Nats-TTL` takes it: whole seconds, rounded up (rounding down
/// would cut a heartbeat's three beats of 500 ms to two).
pub(super) fn ttl_secs(ttl: Duration) -> u128 {
    ttl.as_millis().div_ceil(1000).max(1)
}

/// Publishes a value under a key with a per-message TTL and optional expected revision.
pub(super) async fn put_with_ttl(
    js: &jetstream::Context,
    layout: &Layout,
    store: &kv::Store,
    key: &str,
    value: Bytes,
    ttl: Option<Duration>,
    expect_revision: Option<u64>,
) -> Result<u64, async_nats::jetstream::context::PublishError> {
    let mut h = async_nats::HeaderMap::new();
    if let Some(ttl) = ttl {
        // Whole seconds, at least one: readers check expires_at themselves.
        let secs = ttl_secs(ttl);
        h.insert(header::NATS_MESSAGE_TTL, secs.to_string().as_str());
    }
    if let Some(rev) = expect_revision {
        h.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            rev.to_string().as_str(),
        );
    }
    let ack = js
        .publish_with_headers(layout.kv_subject(&store.name, key), h, value)
        .await?
        .await?;
    Ok(ack.sequence)
}

/// Writes `value` under `key` if its revision is still `revision` (None: if the key has
/// none yet): the new revision, or None when another writer got there first.
pub(super) async fn put_if_revision(
    store: &kv::Store,
    key: &str,
    value: Bytes,
    revision: Option<u64>,
) -> Result<Option<u64>, Error> {
    let written = match revision {
        Some(r) => store.update(key, value, r).await.map_err(|e| {
            (
                e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                e.to_string(),
            )
        }),
        None => store.create(key, value).await.map_err(|e| {
            (
                e.kind() == kv::CreateErrorKind::AlreadyExists,
                e.to_string(),
            )
        }),
    };
    match written {
        Ok(r) => Ok(Some(r)),
        Err((true, _)) => Ok(None),
        Err((false, e)) => Err(unavailable(e)),
    }
}

/// Fails at once while the connection is down, instead of after the request timeout.
pub(super) fn connected(js: &jetstream::Context) -> Result<(), Error> {
    match js.client().connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        state => Err(Error::Unavailable(format!(
            "the NATS connection is {}; nothing was lost, retry once it is back",
            format!("{state:?}").to_lowercase()
        ))),
    }
}

pub struct NatsValues {
    js: jetstream::Context,
    layout: Layout,
    store: kv::Store,
}

impl NatsValues {
    pub(crate) fn new(js: jetstream::Context, layout: Layout, store: kv::Store) -> Self {
        NatsValues { js, layout, store }
    }
}

#[async_trait]
impl ResultStore for NatsValues {
    async fn get(
        &self,
        key: &str,
        _fresh_from_ms: i64,
    ) -> Result<Option<Arc<ValueEnvelope>>, Error> {
        connected(&self.js)?;
        let Some((bytes, _)) = leader_entry(&self.store, key).await? else {
            return Ok(None);
        };
        if bytes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(ValueEnvelope::decode(bytes)?)))
    }

    async fn put(&self, key: &str, envelope: ValueEnvelope) -> Result<(), Error> {
        let ttl_ms = (envelope.expires_at_ms - crate::time::now_ms()).max(1) as u64;
        let bytes = envelope.encode_to_vec();
        super::fits(&self.js.client(), Stored::Value, bytes.len())?;
        put_with_ttl(
            &self.js,
            &self.layout,
            &self.store,
            key,
            bytes.into(),
            Some(Duration::from_millis(ttl_ms)),
            None,
        )
        .await
        .map(|_| ())
        .map_err(unavailable)
    }
}

pub struct NatsTickets {
    client: async_nats::Client,
    store: kv::Store,
}

impl NatsTickets {
    pub fn new(client: async_nats::Client, store: kv::Store) -> Self {
        NatsTickets { client, store }
    }
}

#[async_trait]
impl TicketStore for NatsTickets {
    async fn put(&self, ticket: Ticket) -> Result<(), Error> {
        let bytes = ticket.encode_to_vec();
        super::fits(&self.client, Stored::Ticket, bytes.len())?;
        self.store
            .put(&ticket.id, bytes.into())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn get(&self, id: &str) -> Result<Option<Arc<Ticket>>, Error> {
        // Ticket ids come from callers: only well-formed ones reach the bucket.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        // Read from the leader: a ticket stored by one replica is read back by another.
        match leader_entry(&self.store, id).await? {
            Some((b, _)) if !b.is_empty() => Ok(Some(Arc::new(Ticket::decode(b)?))),
            _ => Ok(None),
        }
    }
}

/// Stored request-time inputs: one entry per (tenant, entity), merged by
/// compare-and-set on its revision.
pub struct NatsInputs {
    client: async_nats::Client,
    layout: Layout,
    store: kv::Store,
}

impl NatsInputs {
    pub(crate) fn new(client: async_nats::Client, layout: Layout, store: kv::Store) -> Self {
        NatsInputs {
            client,
            layout,
            store,
        }
    }
}

#[async_trait]
impl InputStore for NatsInputs {
    async fn put(
        &self,
        tenant: &str,
        entity_id: &str,
        inputs: StoredInputs,
    ) -> Result<StoredInputs, Error> {
        let key = self.layout.inputs_key(tenant, entity_id);
        for _ in 0..CAS_TRIES {
            let entry = self.store.entry(&key).await.map_err(unavailable)?;
            let (mut merged, revision) = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    (StoredInputs::decode(e.value)?, Some(e.revision))
                }
                _ => (StoredInputs::default(), None),
            };
            crate::store::merge_inputs(&mut merged, inputs.clone());
            let bytes = merged.encode_to_vec();
            super::fits(&self.client, Stored::Inputs, bytes.len())?;
            let done = match revision {
                Some(r) => self.store.update(&key, bytes.into(), r).await.is_ok(),
                None => self.store.create(&key, bytes.into()).await.is_ok(),
            };
            if done {
                return Ok(merged);
            }
        }
        Err(Error::Unavailable(format!(
            "storing the inputs of an entity lost {CAS_TRIES} races with other writers; retry"
        )))
    }

    async fn get(&self, tenant: &str, entity_id: &str) -> Result<Option<StoredInputs>, Error> {
        let key = self.layout.inputs_key(tenant, entity_id);
        match self.store.get(&key).await.map_err(unavailable)? {
            Some(b) if !b.is_empty() => Ok(Some(StoredInputs::decode(b)?)),
            _ => Ok(None),
        }
    }
}

/// Waiting jobs: one list per input key, changed by compare-and-set on its revision.
pub struct NatsWaiters {
    store: kv::Store,
}

impl NatsWaiters {
    pub fn new(store: kv::Store) -> Self {
        NatsWaiters { store }
    }
}

pub(super) const CAS_TRIES: usize = 50;

#[async_trait]
impl WaiterStore for NatsWaiters {
    async fn add(&self, input_key: &str, job: &ComputeJob) -> Result<(), Error> {
        for _ in 0..CAS_TRIES {
            let (mut list, revision) = match leader_entry(&self.store, input_key).await? {
                Some((bytes, revision)) if !bytes.is_empty() => {
                    (JobList::decode(bytes)?, Some(revision))
                }
                _ => (JobList::default(), None),
            };
            // A write that landed unacknowledged shows here on the next try.
            if list.jobs.iter().any(|j| same_job(j, job)) {
                return Ok(());
            }
            list.jobs.push(job.clone());
            let bytes: Bytes = list.encode_to_vec().into();
            let done = match revision {
                Some(rev) => self.store.update(input_key, bytes, rev).await.is_ok(),
                None => self.store.create(input_key, bytes).await.is_ok(),
            };
            if done {
                return Ok(());
            }
        }
        Err(Error::Unavailable(format!(
            "too much contention parking a job on {input_key}"
        )))
    }

    async fn waiting(&self, input_key: &str) -> Result<Vec<ComputeJob>, Error> {
        match leader_entry(&self.store, input_key).await? {
            Some((bytes, _)) if !bytes.is_empty() => Ok(JobList::decode(bytes)?.jobs),
            _ => Ok(Vec::new()),
        }
    }

    async fn remove(&self, input_key: &str, jobs: &[ComputeJob]) -> Result<(), Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        for _ in 0..CAS_TRIES {
            let Some((bytes, revision)) = leader_entry(&self.store, input_key).await? else {
                return Ok(());
            };
            let mut list = if bytes.is_empty() {
                JobList::default()
            } else {
                JobList::decode(bytes)?
            };
            let before = list.jobs.len();
            list.jobs.retain(|j| !jobs.iter().any(|t| same_job(j, t)));
            // Also where a write that landed unacknowledged already removed them.
            if list.jobs.len() == before {
                return Ok(());
            }
            let done = if list.jobs.is_empty() {
                self.store
                    .delete_expect_revision(input_key, Some(revision))
                    .await
                    .is_ok()
            } else {
                let bytes: Bytes = list.encode_to_vec().into();
                self.store.update(input_key, bytes, revision).await.is_ok()
            };
            if done {
                return Ok(());
            }
        }
        Err(Error::Unavailable(format!(
            "too much contention removing the jobs waiting on {input_key}"
        )))
    }
}

/// Feeds every entry of `watch` to `apply` on a `background` task, until the backend
/// closes or the watch fails (a failed or drained watch is not polled again): how a
/// bucket is mirrored into a process's memory.
pub(super) fn mirror_watch(
    background: &Background,
    name: &'static str,
    mut watch: kv::Watch,
    mut apply: impl FnMut(kv::Entry) + Send + 'static,
) {
    let stop = background.token().clone();
    background.spawn(name, async move {
        loop {
            let entry = tokio::select! {
                _ = stop.cancelled() => break,
                entry = watch.next() => match entry {
                    Some(entry) => entry,
                    None => break,
                },
            };
            match entry {
                Ok(e) => apply(e),
                Err(err) => {
                    warn!(error = %err, watch = name, "watch ended");
                    break;
                }
            }
        }
    });
}

/// Watermarks mirrored into memory by a watch, so a read costs no round trip and an
/// Invalidate on any replica reaches every replica.
pub struct NatsWatermarks {
    js: jetstream::Context,
    layout: Layout,
    store: kv::Store,
    mirror: Arc<RwLock<HashMap<String, i64>>>,
}

impl NatsWatermarks {
    /// Mirrors the bucket into memory; the watch runs on `background` until the
    /// backend closes (or the watch fails).
    pub(crate) async fn start(
        js: jetstream::Context,
        layout: Layout,
        store: kv::Store,
        background: &Background,
    ) -> Result<Self, Error> {
        let mirror = Arc::new(RwLock::new(HashMap::new()));
        let watch = store
            .watch_all_from_revision(1)
            .await
            .map_err(unavailable)?;
        let m = mirror.clone();
        mirror_watch(background, "nats watermark watch", watch, move |e| {
            let mut map = m.write().unwrap_or_else(|p| p.into_inner());
            if e.operation == kv::Operation::Put {
                let at = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0);
                let slot = map.entry(e.key).or_insert(0);
                *slot = (*slot).max(at);
            } else {
                map.remove(&e.key);
            }
        });
        Ok(NatsWatermarks {
            js,
            layout,
            store,
            mirror,
        })
    }
}

#[async_trait]
impl Watermarks for NatsWatermarks {
    async fn set(
        &self,
        tenant: &str,
        feature: &str,
        entity: Option<&str>,
        at_ms: i64,
        ttl: Duration,
    ) -> Result<(), Error> {
        let key = self.layout.watermark_key(tenant, feature, entity);
        let ttl = entity.map(|_| ttl.max(Duration::from_secs(1)));
        put_with_ttl(
            &self.js,
            &self.layout,
            &self.store,
            &key,
            at_ms.to_string().into(),
            ttl,
            None,
        )
        .await
        .map_err(unavailable)?;
        let mut map = self.mirror.write().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(key).or_insert(0);
        *slot = (*slot).max(at_ms);
        Ok(())
    }

    async fn get(&self, tenant: &str, feature: &str, entity: &str) -> Result<i64, Error> {
        let map = self.mirror.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return Ok(0);
        }
        let all = map
            .get(&self.layout.watermark_key(tenant, feature, None))
            .copied()
            .unwrap_or(0);
        let one = map
            .get(&self.layout.watermark_key(tenant, feature, Some(entity)))
            .copied()
            .unwrap_or(0);
        Ok(all.max(one))
    }
}

/// Definitions under `<name token>.<version>`; creating the key takes the version.
pub struct NatsDefinitions {
    layout: Layout,
    store: kv::Store,
}

impl NatsDefinitions {
    pub(crate) fn new(layout: Layout, store: kv::Store) -> Self {
        NatsDefinitions { layout, store }
    }
}

#[async_trait]
impl Definitions for NatsDefinitions {
    async fn create(&self, def: &FeatureDefinition) -> Result<bool, Error> {
        match self
            .store
            .create(
                self.layout
                    .definition_key(&def.tenant, &def.name, def.version),
                def.encode_to_vec().into(),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list(&self) -> Result<Vec<FeatureDefinition>, Error> {
        decode_all(&self.store).await
    }

    async fn remove(&self, tenant: &str, name: &str, version: u32) -> Result<bool, Error> {
        let key = self.layout.definition_key(tenant, name, version);
        let there = self.store.get(&key).await.map_err(unavailable)?;
        if there.is_none_or(|b| b.is_empty()) {
            return Ok(false);
        }
        // Purge, not delete: a reader never sees a tombstone as a version.
        self.store.purge(&key).await.map_err(unavailable)?;
        Ok(true)
    }

    async fn watch(&self) -> Result<BoxStream<'static, FeatureDefinition>, Error> {
        let watch = self.store.watch_all().await.map_err(unavailable)?;
        // Stop at the first error: a failed watch must not be polled again.
        Ok(watch
            .take_while(|e| futures::future::ready(e.is_ok()))
            .filter_map(|e| async move {
                let e = e.ok()?;
                if e.operation != kv::Operation::Put {
                    return None;
                }
                FeatureDefinition::decode(e.value).ok()
            })
            .boxed())
    }
}
