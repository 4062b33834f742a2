//! Published generations as every replica sees them: per snapshot-served feature of a
//! tenant, one record saying which generation is published and which are kept (replaced
//! only by compare-and-set on its revision, so a publish or a rollback is one atomic
//! write), the values of each kept generation in chunks, and a watch on the records so
//! every replica reloads a feature the moment its published generation changes.

use async_trait::async_trait;
use fstore_proto::wire::{GenerationChunk, PublishRecord};
use futures::stream::BoxStream;

use crate::Error;

/// Which feature a record or chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Feature<'a> {
    pub tenant: &'a str,
    pub feature: &'a str,
    pub version: u32,
}

impl<'a> Feature<'a> {
    pub fn of(record: &'a PublishRecord) -> Self {
        Feature {
            tenant: &record.tenant,
            feature: &record.feature,
            version: record.version,
        }
    }
}

/// A record and the revision a compare-and-set must name to replace it.
pub type RevisedRecord = (PublishRecord, u64);

#[async_trait]
pub trait PublishStore: Send + Sync + 'static {
    async fn get(&self, feature: Feature<'_>) -> Result<Option<RevisedRecord>, Error>;
    /// Writes the record if its revision is still `revision` (None: if there is none
    /// yet): the new revision, or None when another writer got there first.
    async fn put(
        &self,
        record: &PublishRecord,
        revision: Option<u64>,
    ) -> Result<Option<u64>, Error>;
    /// Every record, of every tenant.
    async fn list(&self) -> Result<Vec<RevisedRecord>, Error>;
    async fn put_chunk(
        &self,
        feature: Feature<'_>,
        generation: u64,
        index: u32,
        chunk: &GenerationChunk,
    ) -> Result<(), Error>;
    async fn chunk(
        &self,
        feature: Feature<'_>,
        generation: u64,
        index: u32,
    ) -> Result<Option<GenerationChunk>, Error>;
    /// Drops a generation's values (one no longer kept).
    async fn drop_generation(
        &self,
        feature: Feature<'_>,
        generation: u64,
        chunks: u32,
    ) -> Result<(), Error>;
    /// Every record written from now on. The stream ends if the backend loses it; the
    /// watcher lists again and watches anew.
    async fn watch(&self) -> Result<BoxStream<'static, PublishRecord>, Error>;
}
