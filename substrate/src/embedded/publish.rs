//! The embedded publish store: records with a revision counter, generation chunks and a
//! broadcast of every record written, in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use fstore_proto::wire::{GenerationChunk, PublishRecord};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::store::lock;
use crate::Error;
use crate::publish::{Feature, PublishStore, RevisedRecord};

type Id = (String, String, u32);

fn id(f: Feature<'_>) -> Id {
    (f.tenant.to_string(), f.feature.to_string(), f.version)
}

pub struct EmbeddedPublish {
    records: Mutex<(u64, HashMap<Id, RevisedRecord>)>,
    chunks: Mutex<HashMap<(Id, u64, u32), GenerationChunk>>,
    written: broadcast::Sender<PublishRecord>,
}

impl Default for EmbeddedPublish {
    fn default() -> Self {
        EmbeddedPublish {
            records: Mutex::default(),
            chunks: Mutex::default(),
            written: broadcast::channel(256).0,
        }
    }
}

#[async_trait]
impl PublishStore for EmbeddedPublish {
    async fn get(&self, feature: Feature<'_>) -> Result<Option<RevisedRecord>, Error> {
        Ok(lock(&self.records).1.get(&id(feature)).cloned())
    }

    async fn put(
        &self,
        record: &PublishRecord,
        revision: Option<u64>,
    ) -> Result<Option<u64>, Error> {
        let next = {
            let mut held = lock(&self.records);
            let (counter, records) = &mut *held;
            let key = id(Feature::of(record));
            if records.get(&key).map(|r| r.1) != revision {
                return Ok(None);
            }
            *counter += 1;
            records.insert(key, (record.clone(), *counter));
            *counter
        };
        // Nobody watching is no error.
        let _ = self.written.send(record.clone());
        Ok(Some(next))
    }

    async fn list(&self) -> Result<Vec<RevisedRecord>, Error> {
        Ok(lock(&self.records).1.values().cloned().collect())
    }

    async fn put_chunk(
        &self,
        feature: Feature<'_>,
        generation: u64,
        index: u32,
        chunk: &GenerationChunk,
    ) -> Result<(), Error> {
        lock(&self.chunks).insert((id(feature), generation, index), chunk.clone());
        Ok(())
    }

    async fn chunk(
        &self,
        feature: Feature<'_>,
        generation: u64,
        index: u32,
    ) -> Result<Option<GenerationChunk>, Error> {
        Ok(lock(&self.chunks)
            .get(&(id(feature), generation, index))
            .cloned())
    }

    async fn drop_generation(
        &self,
        feature: Feature<'_>,
        generation: u64,
        _chunks: u32,
    ) -> Result<(), Error> {
        let key = id(feature);
        lock(&self.chunks).retain(|(k, g, _), _| !(*k == key && *g == generation));
        Ok(())
    }

    async fn watch(&self) -> Result<BoxStream<'static, PublishRecord>, Error> {
        // A lagging watcher skips what it missed; it reloads from the next record.
        Ok(BroadcastStream::new(self.written.subscribe())
            .filter_map(|r| async move { r.ok() })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_is_created_once_and_replaced_only_under_its_revision() {
        let store = EmbeddedPublish::default();
        let mut watch = store.watch().await.expect("watch");
        let record = PublishRecord {
            tenant: "t".into(),
            feature: "f".into(),
            version: 1,
            ..Default::default()
        };
        let r1 = store
            .put(&record, None)
            .await
            .expect("create")
            .expect("won");
        assert_eq!(store.put(&record, None).await.expect("again"), None);
        let mut next = record.clone();
        next.published = 1;
        assert!(store.put(&next, Some(r1)).await.expect("update").is_some());
        assert_eq!(store.put(&record, Some(r1)).await.expect("stale"), None);
        let f = Feature::of(&record);
        assert_eq!(
            store.get(f).await.expect("get").expect("there").0.published,
            1
        );
        assert_eq!(watch.next().await.expect("first").published, 0);
        assert_eq!(watch.next().await.expect("second").published, 1);
        store
            .put_chunk(f, 1, 0, &GenerationChunk::default())
            .await
            .expect("chunk");
        assert!(store.chunk(f, 1, 0).await.expect("read").is_some());
        store.drop_generation(f, 1, 1).await.expect("drop");
        assert!(store.chunk(f, 1, 0).await.expect("read").is_none());
    }
}
