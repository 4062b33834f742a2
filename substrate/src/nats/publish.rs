//! Published generations on KV: the record of a feature under
//! `pub.<tenant>.<feature>.<version>` in `<prefix>_publish`, replaced by compare-and-set
//! on its KV revision (created with an expected revision of none); a generation's values
//! under `gen.<tenant>.<feature>.<version>.<generation>.<index>` in
//! `<prefix>_generations`. Neither bucket expires entries: a published generation is
//! served until another replaces it, and a kept one is dropped when it falls out of the
//! kept window.

use async_nats::jetstream::kv;
use async_trait::async_trait;
use fstore_proto::wire::{GenerationChunk, PublishRecord};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;

use super::{Layout, fits, unavailable};
use crate::Error;
use crate::error::Message as Stored;
use crate::publish::{Feature, PublishStore, RevisedRecord};

pub struct NatsPublish {
    client: async_nats::Client,
    layout: Layout,
    records: kv::Store,
    chunks: kv::Store,
}

impl NatsPublish {
    pub(crate) fn new(
        client: async_nats::Client,
        layout: Layout,
        records: kv::Store,
        chunks: kv::Store,
    ) -> Self {
        NatsPublish {
            client,
            layout,
            records,
            chunks,
        }
    }

    async fn read(&self, key: String) -> Result<Option<RevisedRecord>, Error> {
        let entry = self.records.entry(key).await.map_err(unavailable)?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((PublishRecord::decode(e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl PublishStore for NatsPublish {
    async fn get(&self, f: Feature<'_>) -> Result<Option<RevisedRecord>, Error> {
        self.read(self.layout.publish_key(f.tenant, f.feature, f.version))
            .await
    }

    async fn put(
        &self,
        record: &PublishRecord,
        revision: Option<u64>,
    ) -> Result<Option<u64>, Error> {
        let key = self
            .layout
            .publish_key(&record.tenant, &record.feature, record.version);
        let bytes = record.encode_to_vec();
        super::kv::put_if_revision(&self.records, &key, bytes.into(), revision).await
    }

    async fn list(&self) -> Result<Vec<RevisedRecord>, Error> {
        let mut keys = self.records.keys().await.map_err(unavailable)?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            found.push(key.map_err(unavailable)?);
        }
        let mut out = Vec::with_capacity(found.len());
        for key in found {
            if let Some(r) = self.read(key).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn put_chunk(
        &self,
        f: Feature<'_>,
        generation: u64,
        index: u32,
        chunk: &GenerationChunk,
    ) -> Result<(), Error> {
        let bytes = chunk.encode_to_vec();
        fits(&self.client, Stored::GenerationChunk, bytes.len())?;
        let key = self
            .layout
            .generation_key(f.tenant, f.feature, f.version, generation, index);
        self.chunks
            .put(key, bytes.into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn chunk(
        &self,
        f: Feature<'_>,
        generation: u64,
        index: u32,
    ) -> Result<Option<GenerationChunk>, Error> {
        let key = self
            .layout
            .generation_key(f.tenant, f.feature, f.version, generation, index);
        match self.chunks.get(key).await.map_err(unavailable)? {
            Some(b) if !b.is_empty() => Ok(Some(GenerationChunk::decode(b)?)),
            _ => Ok(None),
        }
    }

    async fn drop_generation(
        &self,
        f: Feature<'_>,
        generation: u64,
        chunks: u32,
    ) -> Result<(), Error> {
        for index in 0..chunks {
            let key = self
                .layout
                .generation_key(f.tenant, f.feature, f.version, generation, index);
            self.chunks.purge(key).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn watch(&self) -> Result<BoxStream<'static, PublishRecord>, Error> {
        let watch = self.records.watch_all().await.map_err(unavailable)?;
        Ok(watch
            .take_while(|e| std::future::ready(e.is_ok()))
            .filter_map(|e| async move {
                match e {
                    Ok(e) if e.operation == kv::Operation::Put => {
                        PublishRecord::decode(e.value).ok()
                    }
                    _ => None,
                }
            })
            .boxed())
    }
}
