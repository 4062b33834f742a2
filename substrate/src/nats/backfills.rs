//! Backfills on KV: the record under `rec.<id>` in `<prefix>_backfills`, replaced by
//! compare-and-set on its KV revision; the entity chunks under `chunk.<id>.<index>` in
//! `<prefix>_backfill_chunks`, written before the record. Both buckets keep entries for
//! `backfill.retention`. Schedules live in `<prefix>_schedules`, which keeps entries
//! until they are deleted: the record under `rec.<tenant>.<name>`, its entities under
//! `chunk.<entities id>.<index>`.

use async_nats::jetstream::kv;
use async_trait::async_trait;
use fstore_proto::wire::{BackfillRecord, EntityChunk, ScheduleRecord};
use futures::StreamExt;
use prost::Message;

use super::{Layout, fits, unavailable};
use crate::Error;
use crate::backfills::{BackfillStore, Revised, RevisedSchedule};
use crate::error::Message as Stored;

pub struct NatsBackfills {
    client: async_nats::Client,
    layout: Layout,
    store: kv::Store,
    chunks: kv::Store,
    schedules: kv::Store,
}

impl NatsBackfills {
    pub(crate) fn new(
        client: async_nats::Client,
        layout: Layout,
        store: kv::Store,
        chunks: kv::Store,
        schedules: kv::Store,
    ) -> Self {
        NatsBackfills {
            client,
            layout,
            store,
            chunks,
            schedules,
        }
    }

    async fn read_schedule(&self, key: String) -> Result<Option<RevisedSchedule>, Error> {
        match self.schedules.entry(key).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((ScheduleRecord::decode(e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl BackfillStore for NatsBackfills {
    async fn create(
        &self,
        record: &BackfillRecord,
        chunks: Vec<EntityChunk>,
    ) -> Result<u64, Error> {
        for (i, chunk) in chunks.iter().enumerate() {
            let bytes = chunk.encode_to_vec();
            fits(&self.client, Stored::BackfillChunk, bytes.len())?;
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            self.chunks
                .put(
                    self.layout.backfill_chunk_key(&record.id, index),
                    bytes.into(),
                )
                .await
                .map_err(unavailable)?;
        }
        self.store
            .create(
                self.layout.backfill_key(&record.id),
                record.encode_to_vec().into(),
            )
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: &str) -> Result<Option<Revised>, Error> {
        let entry = self
            .store
            .entry(self.layout.backfill_key(id))
            .await
            .map_err(unavailable)?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((BackfillRecord::decode(e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    async fn update(&self, record: &BackfillRecord, revision: u64) -> Result<Option<u64>, Error> {
        let key = self.layout.backfill_key(&record.id);
        match self
            .store
            .update(&key, record.encode_to_vec().into(), revision)
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn chunk(&self, id: &str, index: u32) -> Result<Option<EntityChunk>, Error> {
        let bytes = self
            .chunks
            .get(self.layout.backfill_chunk_key(id, index))
            .await
            .map_err(unavailable)?;
        Ok(match bytes {
            Some(b) if !b.is_empty() => Some(EntityChunk::decode(b)?),
            _ => None,
        })
    }

    async fn list(&self) -> Result<Vec<Revised>, Error> {
        let mut keys = self.store.keys().await.map_err(unavailable)?;
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if let Some(id) = key.strip_prefix("rec.") {
                ids.push(id.to_string());
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.get(&crate::token::decode(&id).unwrap_or(id)).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn put_schedule_chunks(
        &self,
        entities_id: &str,
        chunks: &[EntityChunk],
    ) -> Result<(), Error> {
        for (i, chunk) in chunks.iter().enumerate() {
            let bytes = chunk.encode_to_vec();
            fits(&self.client, Stored::BackfillChunk, bytes.len())?;
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            self.schedules
                .put(
                    self.layout.backfill_chunk_key(entities_id, index),
                    bytes.into(),
                )
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn schedule_chunk(
        &self,
        entities_id: &str,
        index: u32,
    ) -> Result<Option<EntityChunk>, Error> {
        let key = self.layout.backfill_chunk_key(entities_id, index);
        Ok(match self.schedules.get(key).await.map_err(unavailable)? {
            Some(b) if !b.is_empty() => Some(EntityChunk::decode(b)?),
            _ => None,
        })
    }

    async fn drop_schedule_chunks(&self, entities_id: &str, chunks: u32) -> Result<(), Error> {
        for index in 0..chunks {
            self.schedules
                .purge(self.layout.backfill_chunk_key(entities_id, index))
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn get_schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<RevisedSchedule>, Error> {
        self.read_schedule(self.layout.schedule_key(tenant, name))
            .await
    }

    async fn put_schedule(
        &self,
        record: &ScheduleRecord,
        revision: Option<u64>,
    ) -> Result<Option<u64>, Error> {
        let key = self.layout.schedule_key(&record.tenant, &record.name);
        let bytes = record.encode_to_vec();
        super::kv::put_if_revision(&self.schedules, &key, bytes.into(), revision).await
    }

    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<(), Error> {
        self.schedules
            .purge(self.layout.schedule_key(tenant, name))
            .await
            .map_err(unavailable)
    }

    async fn list_schedules(&self) -> Result<Vec<RevisedSchedule>, Error> {
        let mut keys = self.schedules.keys().await.map_err(unavailable)?;
        let mut records = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if key.starts_with("rec.") {
                records.push(key);
            }
        }
        let mut out = Vec::with_capacity(records.len());
        for key in records {
            if let Some(r) = self.read_schedule(key).await? {
                out.push(r);
            }
        }
        Ok(out)
    }
}
