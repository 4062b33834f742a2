//! The embedded backfill store: records with a revision counter and their chunks, in
//! memory (a backfill in `dev` ends with its process).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use fstore_proto::wire::{BackfillRecord, EntityChunk, ScheduleRecord};

use super::store::lock;
use crate::Error;
use crate::backfills::{BackfillStore, Revised, RevisedSchedule};

#[derive(Default)]
pub struct EmbeddedBackfills {
    records: Mutex<HashMap<String, Revised>>,
    chunks: Mutex<HashMap<(String, u32), EntityChunk>>,
    revision: Mutex<u64>,
    schedules: Mutex<HashMap<(String, String), RevisedSchedule>>,
    schedule_chunks: Mutex<HashMap<(String, u32), EntityChunk>>,
}

impl EmbeddedBackfills {
    fn next_revision(&self) -> u64 {
        let mut r = lock(&self.revision);
        *r += 1;
        *r
    }
}

#[async_trait]
impl BackfillStore for EmbeddedBackfills {
    async fn create(
        &self,
        record: &BackfillRecord,
        chunks: Vec<EntityChunk>,
    ) -> Result<u64, Error> {
        {
            let mut stored = lock(&self.chunks);
            for (i, chunk) in chunks.into_iter().enumerate() {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                stored.insert((record.id.clone(), index), chunk);
            }
        }
        let revision = self.next_revision();
        lock(&self.records).insert(record.id.clone(), (record.clone(), revision));
        Ok(revision)
    }

    async fn get(&self, id: &str) -> Result<Option<Revised>, Error> {
        Ok(lock(&self.records).get(id).cloned())
    }

    async fn update(&self, record: &BackfillRecord, revision: u64) -> Result<Option<u64>, Error> {
        let mut records = lock(&self.records);
        match records.get_mut(&record.id) {
            Some(held) if held.1 == revision => {
                let next = self.next_revision();
                *held = (record.clone(), next);
                Ok(Some(next))
            }
            _ => Ok(None),
        }
    }

    async fn chunk(&self, id: &str, index: u32) -> Result<Option<EntityChunk>, Error> {
        Ok(lock(&self.chunks).get(&(id.to_string(), index)).cloned())
    }

    async fn list(&self) -> Result<Vec<Revised>, Error> {
        Ok(lock(&self.records).values().cloned().collect())
    }

    async fn put_schedule_chunks(
        &self,
        entities_id: &str,
        chunks: &[EntityChunk],
    ) -> Result<(), Error> {
        let mut stored = lock(&self.schedule_chunks);
        for (i, chunk) in chunks.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            stored.insert((entities_id.to_string(), index), chunk.clone());
        }
        Ok(())
    }

    async fn schedule_chunk(
        &self,
        entities_id: &str,
        index: u32,
    ) -> Result<Option<EntityChunk>, Error> {
        Ok(lock(&self.schedule_chunks)
            .get(&(entities_id.to_string(), index))
            .cloned())
    }

    async fn drop_schedule_chunks(&self, entities_id: &str, _chunks: u32) -> Result<(), Error> {
        lock(&self.schedule_chunks).retain(|(id, _), _| id != entities_id);
        Ok(())
    }

    async fn get_schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<RevisedSchedule>, Error> {
        Ok(lock(&self.schedules)
            .get(&(tenant.to_string(), name.to_string()))
            .cloned())
    }

    async fn put_schedule(
        &self,
        record: &ScheduleRecord,
        revision: Option<u64>,
    ) -> Result<Option<u64>, Error> {
        let next = self.next_revision();
        let mut schedules = lock(&self.schedules);
        let key = (record.tenant.clone(), record.name.clone());
        if schedules.get(&key).map(|s| s.1) != revision {
            return Ok(None);
        }
        schedules.insert(key, (record.clone(), next));
        Ok(Some(next))
    }

    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<(), Error> {
        lock(&self.schedules).remove(&(tenant.to_string(), name.to_string()));
        Ok(())
    }

    async fn list_schedules(&self) -> Result<Vec<RevisedSchedule>, Error> {
        Ok(lock(&self.schedules).values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_is_replaced_only_under_the_revision_read() {
        let store = EmbeddedBackfills::default();
        let record = BackfillRecord {
            id: "b".into(),
            ..Default::default()
        };
        let chunk = EntityChunk::default();
        let r1 = store.create(&record, vec![chunk]).await.expect("create");
        let mut mine = record.clone();
        mine.runner = "a".into();
        let r2 = store.update(&mine, r1).await.expect("update");
        assert!(r2.is_some());
        let mut theirs = record;
        theirs.runner = "b".into();
        assert_eq!(
            store.update(&theirs, r1).await.expect("update"),
            None,
            "a stale revision loses"
        );
        let (held, _) = store.get("b").await.expect("get").expect("there");
        assert_eq!(held.runner, "a");
        assert!(store.chunk("b", 0).await.expect("chunk").is_some());
        assert!(store.chunk("b", 1).await.expect("chunk").is_none());
        assert_eq!(store.list().await.expect("list").len(), 1);
    }
}
