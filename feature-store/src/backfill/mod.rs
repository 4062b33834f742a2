//! Backfills: features computed for many entities on the batch lane. A backfill is
//! checked whole when it starts (every entity, as a request would be: names, inputs,
//! types) and stored in the shared store — its entities in chunks, then its record —
//! so any replica can read its progress and run it. [`runner`] runs them: one replica
//! at a time holds a backfill's lease and plans its chunks with the planner every
//! request uses (same keys, coalescing, dependencies first, dead letters), in the
//! batch lane; a replica that dies stops renewing its lease and another takes over
//! from the chunks it had not finished. Re-running a backfill skips what is fresh.

pub mod runner;
pub mod schedule;

use std::sync::Arc;

use fstore_proto::api::{self, BackfillState};
use fstore_proto::wire::{BackfillRecord, EntityChunk};
use fstore_substrate::time::now_ms;
use fstore_substrate::{Lane, Substrate};
use prost::Message;

use crate::config::Config;
use crate::planner::Planner;
use crate::publish::Publisher;
use crate::ready::ReadyHub;
use crate::registry::Registry;
use crate::request::ValidRequest;
use crate::{Error, Result};

/// A chunk is also cut once its entities encode to this many bytes, so that it fits
/// in one message of the shared store.
const CHUNK_BYTES: usize = 256 * 1024;

/// Tries of a compare-and-set on a backfill's record before giving up.
const CAS_TRIES: usize = 8;

/// Starting, reading and cancelling backfills. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backfills {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    substrate: Substrate,
    registry: Registry,
    planner: Arc<Planner>,
    hub: ReadyHub,
    config: Config,
    publisher: Publisher,
}

/// What a backfill computes.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `name` or `name@version`.
    pub features: Vec<String>,
    /// A stored value planned within this is fresh and skipped; None: any unexpired one.
    pub max_staleness_ms: Option<u64>,
    /// Values go to a new generation of each (snapshot-served) feature, published only
    /// if the gate passes it when the backfill is done.
    pub stage: bool,
}

impl Backfills {
    pub fn new(
        substrate: Substrate,
        registry: Registry,
        planner: Arc<Planner>,
        hub: ReadyHub,
        config: Config,
        publisher: Publisher,
    ) -> Self {
        Backfills {
            inner: Arc::new(Shared {
                substrate,
                registry,
                planner,
                hub,
                config,
                publisher,
            }),
        }
    }

    /// The request a chunk of `record` is planned as: its entities × its features, in
    /// the batch lane, under the backfill's id (which the feature log records as the
    /// request each value answered).
    async fn chunk_request(
        &self,
        record: &BackfillRecord,
        entities: Vec<api::EntityRequest>,
    ) -> Result<ValidRequest> {
        let req = api::GetFeaturesRequest {
            entities,
            features: record.features.clone(),
            mode: api::Mode::Async as i32,
            max_staleness_ms: record.max_staleness_ms,
            ..Default::default()
        };
        let s = &self.inner;
        let mut request = ValidRequest::new(
            record.tenant.clone(),
            &req,
            &s.registry.snapshot(&record.tenant),
            &s.config.limits,
            now_ms(),
            s.substrate.inputs.as_ref(),
        )
        .await?;
        request.lane = Lane::Batch;
        request.from_snapshots = false;
        request.id = record.id.clone();
        Ok(request)
    }

    /// Checks a backfill whole — every entity as a request would be — and stores it:
    /// its entities in chunks, then (staged) a new generation of each feature, then its
    /// record. Nothing is stored unless all is valid.
    pub async fn start(
        &self,
        tenant: String,
        spec: Spec,
        entities: Vec<api::EntityRequest>,
    ) -> Result<api::Backfill> {
        let checked = self.check(tenant, spec, entities).await?;
        self.launch(checked).await
    }

    /// A backfill checked whole and cut into chunks, not stored yet.
    async fn check(
        &self,
        tenant: String,
        spec: Spec,
        entities: Vec<api::EntityRequest>,
    ) -> Result<Checked> {
        let Spec {
            features,
            max_staleness_ms,
            stage,
        } = spec;
        let config = &self.inner.config.backfill;
        if features.is_empty() {
            return Err(Error::InvalidArgument(
                "a backfill names at least one feature".to_string(),
            ));
        }
        if entities.is_empty() {
            return Err(Error::InvalidArgument(
                "a backfill needs at least one entity".to_string(),
            ));
        }
        // Unknown features are NOT_FOUND before any entity is looked at.
        let snapshot = self.inner.registry.snapshot(&tenant);
        let mut nodes = Vec::with_capacity(features.len());
        for f in &features {
            let node = snapshot.resolve(&crate::names::FeatureRef::parse(f)?)?;
            if stage {
                Publisher::check_stageable(&node)?;
            }
            nodes.push(node);
        }
        if entities.len() > config.max_entities {
            return Err(Error::InvalidArgument(format!(
                "a backfill takes at most {} entities (backfill.max_entities); this one has {}: split it",
                config.max_entities,
                entities.len()
            )));
        }
        // A chunk is planned as one request: it stays within the request limits.
        let limits = &self.inner.config.limits;
        let per_chunk = config
            .chunk_entities
            .min(limits.max_items / features.len().max(1))
            .max(1);
        let chunks = chunks(entities, per_chunk);
        let mut record = BackfillRecord {
            id: uuid::Uuid::now_v7().simple().to_string(),
            tenant,
            features,
            max_staleness_ms,
            chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
            entities: chunks.iter().map(|c| c.entities.len() as u64).sum(),
            created_at_ms: now_ms(),
            ..Default::default()
        };
        record.set_state(BackfillState::Running);
        let mut first = 0usize;
        for chunk in &chunks {
            self.chunk_request(&record, chunk.entities.clone())
                .await
                .map_err(|e| match e {
                    Error::InvalidArgument(m) if chunk.entities.len() > 1 => {
                        Error::InvalidArgument(format!(
                            "backfill entities {} to {}: {m}",
                            first + 1,
                            first + chunk.entities.len()
                        ))
                    }
                    e => e,
                })?;
            first += chunk.entities.len();
        }
        Ok(Checked {
            record,
            chunks,
            nodes,
            stage,
        })
    }

    /// Stores a checked backfill: (staged) a new generation of each feature, its
    /// entities, then its record, which the runners pick up.
    async fn launch(&self, checked: Checked) -> Result<api::Backfill> {
        let Checked {
            mut record,
            chunks,
            nodes,
            stage,
        } = checked;
        if stage {
            record.staged = self
                .inner
                .publisher
                .stage(&record.tenant, &record.id, &nodes, record.chunks)
                .await?;
        }
        let created = self.inner.substrate.backfills.create(&record, chunks).await;
        if let Err(e) = created {
            // Nothing will fill the generations just staged.
            if let Err(abandon) = self.inner.publisher.abandon(&record).await {
                tracing::warn!(backfill = %record.id, error = %abandon, "could not mark the generations of a backfill that never started as abandoned");
            }
            return Err(e.into());
        }
        Ok(view(&record, now_ms()))
    }

    /// A backfill of `tenant`; another tenant's reads as unknown.
    async fn record(&self, tenant: &str, id: &str) -> Result<(BackfillRecord, u64)> {
        match self.inner.substrate.backfills.get(id).await? {
            Some((r, rev)) if r.tenant == tenant => Ok((r, rev)),
            _ => Err(Error::NotFound(format!(
                "no backfill `{}`; `fstore backfill ls` lists them",
                crate::names::truncate(id, 80)
            ))),
        }
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<api::Backfill> {
        let (record, _) = self.record(tenant, id).await?;
        Ok(view(&record, now_ms()))
    }

    /// The tenant's backfills, newest first.
    pub async fn list(&self, tenant: &str) -> Result<Vec<api::Backfill>> {
        let now = now_ms();
        let mut records: Vec<BackfillRecord> = self
            .inner
            .substrate
            .backfills
            .list()
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| r.tenant == tenant)
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.created_at_ms));
        Ok(records.iter().map(|r| view(r, now)).collect())
    }

    /// Stops a running backfill: nothing more is submitted (computes already queued
    /// finish). Cancelling one that ended answers it as it is.
    pub async fn cancel(&self, tenant: &str, id: &str) -> Result<api::Backfill> {
        for _ in 0..CAS_TRIES {
            let (mut record, revision) = self.record(tenant, id).await?;
            if record.state() != BackfillState::Running {
                return Ok(view(&record, now_ms()));
            }
            record.set_state(BackfillState::Canceled);
            record.finished_at_ms = now_ms();
            record.runner.clear();
            if self
                .inner
                .substrate
                .backfills
                .update(&record, revision)
                .await?
                .is_some()
            {
                self.inner.publisher.abandon(&record).await?;
                return Ok(view(&record, now_ms()));
            }
        }
        Err(Error::Substrate(fstore_substrate::Error::Unavailable(
            "the backfill changed under every try to cancel it; retry".to_string(),
        )))
    }
}

/// A backfill checked whole: its record (not stored yet), its entities in chunks, and
/// the nodes of its features.
struct Checked {
    record: BackfillRecord,
    chunks: Vec<EntityChunk>,
    nodes: Vec<Arc<crate::registry::Node>>,
    stage: bool,
}

/// `entities` cut into chunks of at most `size` entities and [`CHUNK_BYTES`].
fn chunks(entities: Vec<api::EntityRequest>, size: usize) -> Vec<EntityChunk> {
    let mut out = Vec::new();
    let mut chunk = EntityChunk::default();
    let mut bytes = 0;
    for e in entities {
        let len = e.encoded_len();
        if !chunk.entities.is_empty() && (chunk.entities.len() >= size || bytes + len > CHUNK_BYTES)
        {
            out.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += len;
        chunk.entities.push(e);
    }
    if !chunk.entities.is_empty() {
        out.push(chunk);
    }
    out
}

/// A backfill as callers see it, its rate and time left reckoned at `now`.
pub fn view(r: &BackfillRecord, now: i64) -> api::Backfill {
    let total = r.entities * r.features.len() as u64;
    let settled = r.done + r.failed + r.skipped;
    let end = if r.finished_at_ms > 0 {
        r.finished_at_ms
    } else {
        now
    };
    let secs = (end - r.created_at_ms).max(1) as f64 / 1000.0;
    let rate = settled as f64 / secs;
    let eta_ms = if r.state() == BackfillState::Running && rate > 0.0 {
        (total.saturating_sub(settled) as f64 / rate * 1000.0) as u64
    } else {
        0
    };
    api::Backfill {
        id: r.id.clone(),
        state: r.state,
        features: r.features.clone(),
        entities: r.entities,
        total,
        done: r.done,
        failed: r.failed,
        skipped: r.skipped,
        rate,
        eta_ms,
        created_at_ms: r.created_at_ms,
        finished_at_ms: r.finished_at_ms,
        runner: r.runner.clone(),
        max_staleness_ms: r.max_staleness_ms,
        staged: r.staged.clone(),
        schedule: r.schedule.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: usize, input_bytes: usize) -> api::EntityRequest {
        api::EntityRequest {
            entity_id: format!("e{id}"),
            inputs: [(
                "text".to_string(),
                api::Value {
                    kind: Some(api::value::Kind::String("x".repeat(input_bytes))),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn chunks_are_cut_by_count_and_by_size() {
        let small: Vec<_> = (0..10).map(|i| entity(i, 1)).collect();
        let c = chunks(small, 4);
        assert_eq!(
            c.iter().map(|c| c.entities.len()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        let big: Vec<_> = (0..5).map(|i| entity(i, CHUNK_BYTES / 2)).collect();
        let c = chunks(big, 100);
        assert_eq!(c.len(), 5, "one entity of half the bound per chunk");
        let huge = vec![entity(0, CHUNK_BYTES * 2)];
        assert_eq!(
            chunks(huge, 100).len(),
            1,
            "an entity alone always fits a chunk"
        );
    }

    #[test]
    fn the_view_reckons_rate_and_time_left() {
        let mut r = BackfillRecord {
            features: vec!["a".into(), "b".into()],
            entities: 100,
            done: 40,
            skipped: 10,
            created_at_ms: 0,
            ..Default::default()
        };
        r.set_state(BackfillState::Running);
        let v = view(&r, 10_000);
        assert_eq!(v.total, 200);
        assert!((v.rate - 5.0).abs() < 1e-9, "{}", v.rate);
        assert_eq!(v.eta_ms, 30_000);
        r.set_state(BackfillState::Done);
        r.finished_at_ms = 5_000;
        let v = view(&r, 99_000);
        assert!(
            (v.rate - 10.0).abs() < 1e-9,
            "a finished backfill's rate stops"
        );
        assert_eq!(v.eta_ms, 0);
    }
}
