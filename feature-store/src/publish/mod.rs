//! Staged generations and their publication (seed 003: offline compute, a gate, the
//! last good result served from memory). A staged backfill of a snapshot-served feature
//! writes its values, chunk by chunk, into a new generation that nothing serves yet;
//! when the backfill is done the [`gate`] measures it against the published generation
//! and the feature's record is switched to it (one compare-and-set: every replica's
//! [`snapshots`] watch reloads it) or marks it rejected with the report. The last
//! `backfill.keep_generations` decided generations are kept for a rollback.

pub mod gate;
pub mod snapshots;

use std::sync::Arc;

use fstore_proto::api::{self, GenerationState};
use fstore_proto::wire::{
    BackfillRecord, GenerationChunk, GenerationEntry, KeptGeneration, PublishRecord,
};
use fstore_substrate::publish::{Feature, PublishStore};
use fstore_substrate::time::now_ms;
use tracing::{info, warn};

use crate::names::FeatureRef;
use crate::registry::{Node, Registry};
use crate::{Error, Result};

/// Tries of a compare-and-set on a feature's record before giving up.
const CAS_TRIES: usize = 16;

/// Staging, gating, publishing and rolling back generations. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Arc<dyn PublishStore>,
    registry: Registry,
    keep: usize,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(store: Arc<dyn PublishStore>, registry: Registry, keep: usize) -> Self {
        Publisher {
            store,
            registry,
            keep,
        }
    }

    /// Refuses to stage a feature that is not served from snapshots: nothing would
    /// ever read its generations.
    pub fn check_stageable(node: &Node) -> Result<()> {
        if node.definition.serving() == api::Serving::Snapshot {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "feature `{}` is served online; only a feature registered with serving = \"snapshot\" \
             has generations to stage: register a version with it, or run the backfill unstaged",
            node.id
        )))
    }

    /// Hands out a new generation of each node for `backfill` (state STAGING), in order.
    pub async fn stage(
        &self,
        tenant: &str,
        backfill: &str,
        nodes: &[Arc<Node>],
        chunks: u32,
    ) -> Result<Vec<api::StagedGeneration>> {
        let mut staged = Vec::with_capacity(nodes.len());
        for node in nodes {
            let feature = Feature {
                tenant,
                feature: &node.name,
                version: node.version,
            };
            let record = self
                .change(feature, |r| {
                    r.last_generation += 1;
                    r.generations.push(KeptGeneration {
                        info: Some(api::Generation {
                            generation: r.last_generation,
                            state: GenerationState::Staging as i32,
                            backfill_id: backfill.to_string(),
                            created_at_ms: now_ms(),
                            ..Default::default()
                        }),
                        chunks,
                    });
                    Ok(Vec::new())
                })
                .await?;
            staged.push(api::StagedGeneration {
                feature: node.name.clone(),
                version: node.version,
                generation: record.last_generation,
            });
        }
        Ok(staged)
    }

    /// Writes one settled chunk's values into each staged generation. `results` are the
    /// chunk's, entity-major over the backfill's features (which `staged` follows).
    pub async fn record_chunk(
        &self,
        record: &BackfillRecord,
        index: u32,
        results: &[api::FeatureResult],
    ) -> Result<()> {
        let features = record.features.len().max(1);
        for (j, staged) in record.staged.iter().enumerate() {
            let entries = results
                .iter()
                .skip(j)
                .step_by(features)
                .map(|r| {
                    let ready = matches!(r.status(), api::Status::Ready | api::Status::Stale);
                    GenerationEntry {
                        entity_id: r.entity_id.clone(),
                        value: if ready { r.value.clone() } else { None },
                        failed: !ready,
                        computed_at_ms: r.computed_at_ms,
                    }
                })
                .collect();
            let feature = Feature {
                tenant: &record.tenant,
                feature: &staged.feature,
                version: staged.version,
            };
            self.store
                .put_chunk(
                    feature,
                    staged.generation,
                    index,
                    &GenerationChunk { entries },
                )
                .await?;
        }
        Ok(())
    }

    /// The gate, for each generation `record` staged that is still STAGING: publishes
    /// it or rejects it. Idempotent, so a replica that takes over a finished backfill
    /// decides only what its predecessor did not.
    pub async fn decide(&self, record: &BackfillRecord) -> Result<()> {
        for staged in &record.staged {
            let feature = Feature {
                tenant: &record.tenant,
                feature: &staged.feature,
                version: staged.version,
            };
            let Some((current, _)) = self.store.get(feature).await? else {
                continue;
            };
            let Some(kept) = find(&current, staged.generation) else {
                continue;
            };
            if state(kept) != GenerationState::Staging {
                continue;
            }
            let new = self.load(feature, staged.generation, kept.chunks).await?;
            let old = match find(&current, current.published) {
                Some(p) => Some(self.load(feature, number(p), p.chunks).await?),
                None => None,
            };
            let node = self
                .registry
                .snapshot(&record.tenant)
                .resolve(&FeatureRef {
                    name: staged.feature.clone(),
                    version: Some(staged.version),
                })?;
            let checks = gate::check(node.definition.gate.as_ref(), &new, old.as_deref());
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{} {:.4} (limit {:.4})", c.name, c.value, c.threshold))
                .collect();
            let rows = new.iter().filter(|e| !e.failed).count() as u64;
            let failures = new.len() as u64 - rows;
            let generation = staged.generation;
            let published = failed.is_empty();
            self.change(feature, |r| {
                let now = now_ms();
                if published {
                    switch(r, generation, now, "passed the gate".to_string())?;
                }
                let Some(info) = info_mut(r, generation) else {
                    return Ok(Vec::new());
                };
                info.rows = rows;
                info.failed = failures;
                info.checks = checks.clone();
                if !published {
                    info.set_state(GenerationState::Rejected);
                    info.decided_at_ms = now;
                    info.reason = format!("refused by the gate: {}", failed.join(", "));
                }
                Ok(trim(r, self.keep))
            })
            .await?;
            if published {
                info!(feature = %node.id, generation, "published a generation");
            } else {
                warn!(feature = %node.id, generation, checks = %failed.join(", "), "the gate refused a generation; the published one is still served");
            }
        }
        Ok(())
    }

    /// Marks the generations a cancelled backfill staged as abandoned.
    pub async fn abandon(&self, record: &BackfillRecord) -> Result<()> {
        for staged in &record.staged {
            let feature = Feature {
                tenant: &record.tenant,
                feature: &staged.feature,
                version: staged.version,
            };
            self.change(feature, |r| {
                if let Some(info) = info_mut(r, staged.generation)
                    && info.state() == GenerationState::Staging
                {
                    info.set_state(GenerationState::Abandoned);
                    info.decided_at_ms = now_ms();
                    info.reason = "its backfill was cancelled".to_string();
                }
                Ok(trim(r, self.keep))
            })
            .await?;
        }
        Ok(())
    }

    /// One staged generation as the gate left it (None once it is no longer kept).
    pub async fn generation(
        &self,
        tenant: &str,
        staged: &api::StagedGeneration,
    ) -> Result<Option<api::Generation>> {
        let feature = Feature {
            tenant,
            feature: &staged.feature,
            version: staged.version,
        };
        Ok(self
            .store
            .get(feature)
            .await?
            .and_then(|(r, _)| find(&r, staged.generation).and_then(|g| g.info.clone())))
    }

    /// The generations of the tenant's snapshot-served features: one (`name` or
    /// `name@version`), or every one that has a record.
    pub async fn status(&self, tenant: &str, feature: &str) -> Result<api::PublishStatus> {
        let mut records: Vec<PublishRecord> = if feature.is_empty() {
            self.store
                .list()
                .await?
                .into_iter()
                .map(|(r, _)| r)
                .filter(|r| r.tenant == tenant)
                .collect()
        } else {
            let node = self.resolve(tenant, feature)?;
            let found = self
                .store
                .get(Feature {
                    tenant,
                    feature: &node.name,
                    version: node.version,
                })
                .await?;
            vec![found.map(|(r, _)| r).unwrap_or_else(|| PublishRecord {
                tenant: tenant.to_string(),
                feature: node.name.clone(),
                version: node.version,
                ..Default::default()
            })]
        };
        records.sort_by(|a, b| (&a.feature, a.version).cmp(&(&b.feature, b.version)));
        Ok(api::PublishStatus {
            features: records.iter().map(view).collect(),
        })
    }

    /// Publishes an earlier generation again: `to`, or the newest superseded one.
    pub async fn rollback(
        &self,
        tenant: &str,
        feature: &str,
        to: Option<u64>,
    ) -> Result<api::FeaturePublish> {
        let node = self.resolve(tenant, feature)?;
        let key = Feature {
            tenant,
            feature: &node.name,
            version: node.version,
        };
        let id = &node.id;
        let record = self
            .change(key, |r| {
                let target = match to {
                    Some(g) => g,
                    None => r
                        .generations
                        .iter()
                        .rev()
                        .find(|g| state(g) == GenerationState::Superseded)
                        .map(number)
                        .ok_or_else(|| {
                            Error::FailedPrecondition(format!(
                                "feature `{id}` has no earlier published generation to roll back to; \
                                 `fstore publish status {id}` lists its generations"
                            ))
                        })?,
                };
                let Some(kept) = find(r, target) else {
                    let kept: Vec<String> = r
                        .generations
                        .iter()
                        .map(|g| number(g).to_string())
                        .collect();
                    return Err(Error::NotFound(format!(
                        "feature `{id}` keeps no generation {target} (kept: {}); \
                         `fstore publish status {id}` lists them",
                        if kept.is_empty() {
                            "none".to_string()
                        } else {
                            kept.join(", ")
                        }
                    )));
                };
                match state(kept) {
                    GenerationState::Published => Ok(Vec::new()),
                    GenerationState::Superseded => {
                        let from = r.published;
                        switch(r, target, now_ms(), format!("rolled back from {from}"))?;
                        Ok(Vec::new())
                    }
                    other => Err(Error::FailedPrecondition(format!(
                        "generation {target} of `{id}` is {}; only a generation that passed the gate \
                         can be published again",
                        state_name(other)
                    ))),
                }
            })
            .await?;
        info!(feature = %id, generation = record.published, "rolled back");
        Ok(view(&record))
    }

    /// Every value of a kept generation.
    pub(crate) async fn load(
        &self,
        feature: Feature<'_>,
        generation: u64,
        chunks: u32,
    ) -> Result<Vec<GenerationEntry>> {
        load(self.store.as_ref(), feature, generation, chunks).await
    }

    fn resolve(&self, tenant: &str, feature: &str) -> Result<Arc<Node>> {
        self.registry
            .snapshot(tenant)
            .resolve(&FeatureRef::parse(feature)?)
    }

    /// Applies `change` to the feature's record (a new one if it has none) and writes
    /// it by compare-and-set, again on a lost race; `change` returns the generations it
    /// dropped, whose values are then deleted. The record as written.
    async fn change(
        &self,
        feature: Feature<'_>,
        change: impl Fn(&mut PublishRecord) -> Result<Vec<KeptGeneration>>,
    ) -> Result<PublishRecord> {
        for _ in 0..CAS_TRIES {
            let (mut record, revision) = match self.store.get(feature).await? {
                Some((r, rev)) => (r, Some(rev)),
                None => (
                    PublishRecord {
                        tenant: feature.tenant.to_string(),
                        feature: feature.feature.to_string(),
                        version: feature.version,
                        ..Default::default()
                    },
                    None,
                ),
            };
            let dropped = change(&mut record)?;
            if self.store.put(&record, revision).await?.is_some() {
                for g in &dropped {
                    if let Err(e) = self
                        .store
                        .drop_generation(feature, number(g), g.chunks)
                        .await
                    {
                        warn!(feature = feature.feature, generation = number(g), error = %e, "could not drop a generation no longer kept");
                    }
                }
                return Ok(record);
            }
        }
        Err(Error::Substrate(fstore_substrate::Error::Unavailable(
            format!(
                "the generations of `{}@{}` changed under every try; retry",
                feature.feature, feature.version
            ),
        )))
    }
}

/// Every value of a kept generation, read chunk by chunk from `store`.
pub(crate) async fn load(
    store: &dyn PublishStore,
    feature: Feature<'_>,
    generation: u64,
    chunks: u32,
) -> Result<Vec<GenerationEntry>> {
    let mut out = Vec::new();
    for index in 0..chunks {
        if let Some(chunk) = store.chunk(feature, generation, index).await? {
            out.extend(chunk.entries);
        }
    }
    Ok(out)
}

fn number(g: &KeptGeneration) -> u64 {
    g.info.as_ref().map_or(0, |i| i.generation)
}

fn state(g: &KeptGeneration) -> GenerationState {
    g.info
        .as_ref()
        .map_or(GenerationState::Unspecified, api::Generation::state)
}

fn state_name(s: GenerationState) -> &'static str {
    match s {
        GenerationState::Staging => "still staging",
        GenerationState::Rejected => "rejected by the gate",
        GenerationState::Abandoned => "abandoned (its backfill was cancelled)",
        GenerationState::Published => "published",
        GenerationState::Superseded => "superseded",
        GenerationState::Unspecified => "in no known state",
    }
}

fn find(r: &PublishRecord, generation: u64) -> Option<&KeptGeneration> {
    r.generations.iter().find(|g| number(g) == generation)
}

fn info_mut(r: &mut PublishRecord, generation: u64) -> Option<&mut api::Generation> {
    r.generations
        .iter_mut()
        .find(|g| number(g) == generation)
        .and_then(|g| g.info.as_mut())
}

/// Makes `generation` the published one (the one before it superseded): the switch
/// every replica sees as one write.
fn switch(r: &mut PublishRecord, generation: u64, now: i64, reason: String) -> Result<()> {
    let before = r.published;
    if let Some(old) = info_mut(r, before) {
        old.set_state(GenerationState::Superseded);
    }
    let feature = r.feature.clone();
    let info = info_mut(r, generation).ok_or_else(|| {
        Error::Internal(format!("generation {generation} of `{feature}` vanished"))
    })?;
    info.set_state(GenerationState::Published);
    info.decided_at_ms = now;
    info.reason = reason;
    r.published = generation;
    Ok(())
}

/// Drops the oldest decided generations beyond `keep` (never the published one, nor
/// one still staging) and returns them.
fn trim(r: &mut PublishRecord, keep: usize) -> Vec<KeptGeneration> {
    let decided = |g: &KeptGeneration| {
        !matches!(
            state(g),
            GenerationState::Staging | GenerationState::Published
        )
    };
    let published = usize::from(r.published > 0);
    let mut excess =
        (r.generations.iter().filter(|g| decided(g)).count() + published).saturating_sub(keep);
    let mut dropped = Vec::new();
    r.generations.retain(|g| {
        if excess > 0 && decided(g) {
            excess -= 1;
            dropped.push(g.clone());
            false
        } else {
            true
        }
    });
    dropped
}

/// A record as callers see it: its generations newest first.
fn view(r: &PublishRecord) -> api::FeaturePublish {
    api::FeaturePublish {
        feature: r.feature.clone(),
        version: r.version,
        published: r.published,
        generations: r
            .generations
            .iter()
            .rev()
            .filter_map(|g| g.info.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(generation: u64, s: GenerationState) -> KeptGeneration {
        let mut info = api::Generation {
            generation,
            ..Default::default()
        };
        info.set_state(s);
        KeptGeneration {
            info: Some(info),
            chunks: 1,
        }
    }

    #[test]
    fn trimming_keeps_the_published_and_the_staging_and_the_newest_decided() {
        use GenerationState::*;
        let mut r = PublishRecord {
            published: 2,
            generations: vec![
                kept(1, Superseded),
                kept(2, Published),
                kept(3, Rejected),
                kept(4, Rejected),
                kept(5, Staging),
            ],
            ..Default::default()
        };
        let dropped = trim(&mut r, 2);
        assert_eq!(dropped.iter().map(number).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            r.generations.iter().map(number).collect::<Vec<_>>(),
            vec![2, 4, 5]
        );
    }

    #[test]
    fn a_switch_supersedes_the_published_generation() {
        use GenerationState::*;
        let mut r = PublishRecord {
            published: 1,
            generations: vec![kept(1, Published), kept(2, Staging)],
            ..Default::default()
        };
        switch(&mut r, 2, 7, "passed the gate".into()).expect("switch");
        assert_eq!(r.published, 2);
        assert_eq!(state(&r.generations[0]), Superseded);
        assert_eq!(state(&r.generations[1]), Published);
        assert!(switch(&mut r, 9, 7, String::new()).is_err());
    }
}
