//! Snapshot serving: every serve replica holds the published generation of each
//! snapshot-served feature in memory and answers reads of it with no store round trip.
//! The copy is loaded at start and replaced when the feature's record changes (a watch
//! on the records, re-listed every [`RESYNC`] in case a watch was lost), so a publish or
//! rollback on any replica is served by every replica within a moment. An entity the
//! generation lacks falls back to the on-demand path (the planner's).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fstore_proto::api;
use fstore_proto::wire::PublishRecord;
use fstore_substrate::publish::{Feature, PublishStore};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Result;

/// How often the records are listed again besides the watch.
const RESYNC: Duration = Duration::from_secs(10);

/// A published value as held in memory.
#[derive(Debug, Clone)]
pub struct Held {
    pub value: api::Value,
    pub computed_at_ms: i64,
    pub generation: u64,
}

/// One feature's published generation, by entity.
#[derive(Debug, Default)]
struct Loaded {
    generation: u64,
    values: HashMap<String, Held>,
}

/// Per tenant, per feature (`name@version`): looked up by `&str`, without allocating.
type ByTenant = HashMap<String, HashMap<String, Arc<Loaded>>>;

/// The published generations held in memory. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    loaded: Arc<RwLock<ByTenant>>,
}

fn feature_id(feature: &str, version: u32) -> String {
    format!("{feature}@{version}")
}

impl Snapshots {
    /// The published value of `entity` for the feature `id` (`name@version`), if the
    /// feature has a generation in memory holding one.
    pub fn get(&self, tenant: &str, id: &str, entity: &str) -> Option<Held> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        loaded.get(tenant)?.get(id)?.values.get(entity).cloned()
    }

    /// The generation held for a feature (0: none).
    pub fn generation(&self, tenant: &str, feature: &str, version: u32) -> u64 {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        loaded
            .get(tenant)
            .and_then(|f| f.get(&feature_id(feature, version)))
            .map_or(0, |l| l.generation)
    }

    /// Loads every published generation: what a replica does before it serves.
    pub async fn load_all(&self, store: &dyn PublishStore) -> Result<()> {
        for (record, _) in store.list().await? {
            self.sync(store, &record).await?;
        }
        Ok(())
    }

    /// Follows the records until `shutdown`: reloads a feature whenever its published
    /// generation changes.
    pub async fn follow(self, store: Arc<dyn PublishStore>, shutdown: CancellationToken) {
        loop {
            // Watch first, then list: a publish between the two is seen by one of them.
            let watch = match store.watch().await {
                Ok(w) => Some(w),
                Err(e) => {
                    warn!(error = %e, "cannot watch published generations; listing them every {RESYNC:?}");
                    None
                }
            };
            if let Err(e) = self.load_all(store.as_ref()).await {
                warn!(error = %e, "cannot list published generations; trying again");
            }
            let resync = tokio::time::sleep(RESYNC);
            tokio::pin!(resync);
            let mut watch = watch.unwrap_or_else(|| futures::stream::pending().boxed());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut resync => break,
                    next = watch.next() => match next {
                        Some(record) => {
                            if let Err(e) = self.sync(store.as_ref(), &record).await {
                                warn!(feature = %record.feature, error = %e, "cannot load a published generation; trying again at the next listing");
                            }
                        }
                        None => break,
                    },
                }
            }
        }
    }

    /// Makes memory hold the generation `record` publishes (or nothing, if none).
    async fn sync(&self, store: &dyn PublishStore, record: &PublishRecord) -> Result<()> {
        if self.generation(&record.tenant, &record.feature, record.version) == record.published {
            return Ok(());
        }
        let id = feature_id(&record.feature, record.version);
        let Some(kept) = record
            .generations
            .iter()
            .find(|g| g.info.as_ref().map(|i| i.generation) == Some(record.published))
        else {
            if let Some(features) = self.write().get_mut(&record.tenant) {
                features.remove(&id);
            }
            return Ok(());
        };
        let generation = record.published;
        let entries = super::load(store, Feature::of(record), generation, kept.chunks).await?;
        let values: HashMap<String, Held> = entries
            .into_iter()
            .filter_map(|e| {
                Some((
                    e.entity_id,
                    Held {
                        value: e.value?,
                        computed_at_ms: e.computed_at_ms,
                        generation,
                    },
                ))
            })
            .collect();
        info!(feature = %record.feature, version = record.version, generation, entities = values.len(), "serving a published generation from memory");
        self.write()
            .entry(record.tenant.clone())
            .or_default()
            .insert(id, Arc::new(Loaded { generation, values }));
        Ok(())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ByTenant> {
        self.loaded.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use fstore_proto::api::GenerationState;
    use fstore_proto::wire::{GenerationChunk, GenerationEntry, KeptGeneration};
    use fstore_substrate::embedded::EmbeddedPublish;

    use super::*;

    #[tokio::test]
    async fn memory_follows_the_published_generation() {
        let store = EmbeddedPublish::default();
        let mut record = PublishRecord {
            tenant: "t".into(),
            feature: "f".into(),
            version: 1,
            ..Default::default()
        };
        for g in [1u64, 2] {
            let entry = GenerationEntry {
                entity_id: "e".into(),
                value: Some(api::Value {
                    kind: Some(api::value::Kind::I64(g as i64)),
                }),
                ..Default::default()
            };
            store
                .put_chunk(
                    Feature::of(&record),
                    g,
                    0,
                    &GenerationChunk {
                        entries: vec![entry],
                    },
                )
                .await
                .expect("chunk");
            let mut info = api::Generation {
                generation: g,
                ..Default::default()
            };
            info.set_state(GenerationState::Superseded);
            record.generations.push(KeptGeneration {
                info: Some(info),
                chunks: 1,
            });
        }
        let snapshots = Snapshots::default();
        for (published, want) in [(1, Some(1)), (2, Some(2)), (0, None)] {
            record.published = published;
            snapshots.sync(&store, &record).await.expect("sync");
            let got = snapshots.get("t", "f@1", "e").map(|h| h.generation);
            assert_eq!(got, want, "published {published}");
        }
        assert!(snapshots.get("t", "f@1", "other").is_none());
    }
}
