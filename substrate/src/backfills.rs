//! Backfills as every replica sees them: a record per backfill (its spec, progress and
//! lease), replaced only by compare-and-set on its revision so that one replica at a
//! time runs it, and its entities in chunks written once, before the record. Schedules
//! (backfills that repeat) likewise, kept until deleted: a record per (tenant, name)
//! and its entities in chunks under the record's `entities_id`.

use async_trait::async_trait;
use fstore_proto::wire::{BackfillRecord, EntityChunk, ScheduleRecord};

use crate::Error;

/// A record and the revision a compare-and-set must name to replace it.
pub type Revised = (BackfillRecord, u64);

#[async_trait]
pub trait BackfillStore: Send + Sync + 'static {
    /// Stores a new backfill: its chunks, then its record (so a record is never seen
    /// without its entities). Returns the record's revision.
    async fn create(&self, record: &BackfillRecord, chunks: Vec<EntityChunk>)
    -> Result<u64, Error>;
    async fn get(&self, id: &str) -> Result<Option<Revised>, Error>;
    /// Replaces the record if its revision is still `revision`: the new revision, or
    /// None when another writer got there first (read it again).
    async fn update(&self, record: &BackfillRecord, revision: u64) -> Result<Option<u64>, Error>;
    async fn chunk(&self, id: &str, index: u32) -> Result<Option<EntityChunk>, Error>;
    /// Every backfill kept, of every tenant.
    async fn list(&self) -> Result<Vec<Revised>, Error>;

    /// Writes a schedule's entities under `entities_id` (before its record names it).
    async fn put_schedule_chunks(
        &self,
        entities_id: &str,
        chunks: &[EntityChunk],
    ) -> Result<(), Error>;
    async fn schedule_chunk(
        &self,
        entities_id: &str,
        index: u32,
    ) -> Result<Option<EntityChunk>, Error>;
    async fn drop_schedule_chunks(&self, entities_id: &str, chunks: u32) -> Result<(), Error>;
    async fn get_schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<RevisedSchedule>, Error>;
    /// Writes the record if its revision is still `revision` (None: if there is none
    /// yet): the new revision, or None when another writer got there first.
    async fn put_schedule(
        &self,
        record: &ScheduleRecord,
        revision: Option<u64>,
    ) -> Result<Option<u64>, Error>;
    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<(), Error>;
    /// Every schedule, of every tenant.
    async fn list_schedules(&self) -> Result<Vec<RevisedSchedule>, Error>;
}

/// A schedule and the revision a compare-and-set must name to replace it.
pub type RevisedSchedule = (ScheduleRecord, u64);
