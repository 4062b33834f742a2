//! Schedules: backfills that repeat (`every`), so the offline cycle of seed 003 — compute,
//! gate, publish — runs by itself. A schedule is stored with its entities; each
//! `backfill.scan_interval` every replica's runner looks for schedules that are due and
//! takes one by compare-and-set on its record (a lease: one replica starts each run),
//! starts the run as an ordinary backfill — checked again against the registry of the
//! day — and records it in the schedule's history. A run that finds the previous one
//! still going is recorded as skipped rather than piling up.

use fstore_proto::api::{self, BackfillState};
use fstore_proto::wire::{EntityChunk, ScheduleRecord};
use fstore_substrate::time::now_ms;
use tracing::{info, warn};

use super::{Backfills, CAS_TRIES, Spec, view};
use crate::names::check_name;
use crate::{Error, Result};

/// The shortest `every` a schedule takes.
pub const MIN_EVERY_MS: u64 = 1_000;

/// Runs a schedule keeps in its history.
const RUNS_KEPT: usize = 20;

/// How a repeating backfill is asked for.
#[derive(Debug, Clone)]
pub struct Repeat {
    pub name: String,
    pub every_ms: u64,
}

impl Backfills {
    /// Stores `spec` over `entities` as the schedule `repeat.name` (replacing one of
    /// that name, whose history is kept) and starts its first run now.
    pub async fn schedule(
        &self,
        tenant: String,
        spec: Spec,
        repeat: Repeat,
        entities: Vec<api::EntityRequest>,
    ) -> Result<api::Backfill> {
        check_name("schedule", &repeat.name)?;
        if repeat.every_ms < MIN_EVERY_MS {
            return Err(Error::InvalidArgument(format!(
                "schedule `{}`: every {} ms is too often; give at least {MIN_EVERY_MS} ms",
                repeat.name, repeat.every_ms
            )));
        }
        if repeat.every_ms > crate::request::MAX_DURATION_MS {
            return Err(Error::InvalidArgument(format!(
                "schedule `{}`: every {} ms is more than 100 years",
                repeat.name, repeat.every_ms
            )));
        }
        // Checked whole before anything is stored, like any backfill.
        let mut first = self.check(tenant.clone(), spec.clone(), entities).await?;
        first.record.schedule = repeat.name.clone();
        let store = &self.inner.substrate.backfills;
        let entities_id = uuid::Uuid::now_v7().simple().to_string();
        store
            .put_schedule_chunks(&entities_id, &first.chunks)
            .await?;
        let chunk_count = u32::try_from(first.chunks.len()).unwrap_or(u32::MAX);
        let started = self.launch(first).await?;
        let now = now_ms();
        let run = api::ScheduleRun {
            backfill_id: started.id.clone(),
            started_at_ms: now,
            ..Default::default()
        };
        for _ in 0..CAS_TRIES {
            let held = store.get_schedule(&tenant, &repeat.name).await?;
            let (old, revision) = match &held {
                Some((r, rev)) => (Some(r), Some(*rev)),
                None => (None, None),
            };
            let mut runs = old.map(|o| o.runs.clone()).unwrap_or_default();
            runs.push(run.clone());
            let record = ScheduleRecord {
                name: repeat.name.clone(),
                tenant: tenant.clone(),
                features: spec.features.clone(),
                max_staleness_ms: spec.max_staleness_ms,
                stage: spec.stage,
                every_ms: repeat.every_ms,
                entities_id: entities_id.clone(),
                chunks: chunk_count,
                entities: started.entities,
                created_at_ms: old.map_or(now, |o| o.created_at_ms),
                next_run_ms: now + repeat.every_ms as i64,
                runs: trimmed(runs),
                ..Default::default()
            };
            if store.put_schedule(&record, revision).await?.is_some() {
                if let Some(old) = old
                    && old.entities_id != entities_id
                    && let Err(e) = store
                        .drop_schedule_chunks(&old.entities_id, old.chunks)
                        .await
                {
                    warn!(schedule = %repeat.name, error = %e, "could not drop a replaced schedule's entities");
                }
                info!(schedule = %repeat.name, every_ms = repeat.every_ms, "schedule stored; its first run started");
                return Ok(started);
            }
        }
        Err(Error::Substrate(fstore_substrate::Error::Unavailable(
            format!(
                "schedule `{}` changed under every try to store it; retry",
                repeat.name
            ),
        )))
    }

    /// The tenant's schedules, by name, each with its runs newest first.
    pub async fn list_schedules(&self, tenant: &str) -> Result<Vec<api::Schedule>> {
        let mut records: Vec<ScheduleRecord> = self
            .inner
            .substrate
            .backfills
            .list_schedules()
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| r.tenant == tenant)
            .collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(records.len());
        for r in &records {
            out.push(self.schedule_view(r).await?);
        }
        Ok(out)
    }

    /// Stops a schedule: no run starts any more; a run in progress goes on.
    pub async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<api::Schedule> {
        let store = &self.inner.substrate.backfills;
        let Some((record, _)) = store.get_schedule(tenant, name).await? else {
            return Err(Error::NotFound(format!(
                "no schedule `{}`; `fstore schedule ls` lists them",
                crate::names::truncate(name, 80)
            )));
        };
        store.delete_schedule(tenant, name).await?;
        if let Err(e) = store
            .drop_schedule_chunks(&record.entities_id, record.chunks)
            .await
        {
            warn!(schedule = %name, error = %e, "could not drop a deleted schedule's entities");
        }
        self.schedule_view(&record).await
    }

    /// A schedule as callers see it: each run with its backfill (while kept) and, for
    /// staged runs, its generations as the gate left them.
    async fn schedule_view(&self, r: &ScheduleRecord) -> Result<api::Schedule> {
        let now = now_ms();
        let mut runs = Vec::with_capacity(r.runs.len());
        for run in r.runs.iter().rev() {
            let mut run = run.clone();
            if !run.backfill_id.is_empty()
                && let Some((b, _)) = self.inner.substrate.backfills.get(&run.backfill_id).await?
            {
                for staged in &b.staged {
                    if let Some(g) = self.inner.publisher.generation(&b.tenant, staged).await? {
                        run.generations.push(g);
                    }
                }
                run.backfill = Some(view(&b, now));
            }
            runs.push(run);
        }
        Ok(api::Schedule {
            name: r.name.clone(),
            features: r.features.clone(),
            max_staleness_ms: r.max_staleness_ms,
            stage: r.stage,
            every_ms: r.every_ms,
            entities: r.entities,
            created_at_ms: r.created_at_ms,
            next_run_ms: r.next_run_ms,
            runs,
        })
    }

    /// Starts the run of every schedule that is due and that no replica is starting:
    /// `replica` takes it by compare-and-set for `backfill.lease`, starts the run (or
    /// records why not), moves `next_run_ms` on and lets go.
    pub(super) async fn run_due(&self, replica: &str) -> Result<()> {
        let store = &self.inner.substrate.backfills;
        let lease = self.inner.config.backfill.lease.as_millis() as i64;
        for (mut record, revision) in store.list_schedules().await? {
            let now = now_ms();
            if record.next_run_ms > now
                || (!record.runner.is_empty() && record.lease_until_ms >= now)
            {
                continue;
            }
            record.runner = replica.to_string();
            record.lease_until_ms = now + lease;
            let Some(revision) = store.put_schedule(&record, Some(revision)).await? else {
                continue; // another replica took it
            };
            let run = self.start_run(&record).await;
            let every = record.every_ms as i64;
            record.runs.push(run);
            record.runs = trimmed(std::mem::take(&mut record.runs));
            record.next_run_ms = if record.next_run_ms + every > now {
                record.next_run_ms + every
            } else {
                now + every
            };
            record.runner.clear();
            record.lease_until_ms = 0;
            if store.put_schedule(&record, Some(revision)).await?.is_none() {
                warn!(schedule = %record.name, "a schedule changed while its run started; its record keeps the change");
            }
        }
        Ok(())
    }

    /// One run of `s`: a backfill of its spec over its entities, unless the previous
    /// run is still going; the history entry either way.
    async fn start_run(&self, s: &ScheduleRecord) -> api::ScheduleRun {
        let mut run = api::ScheduleRun {
            started_at_ms: now_ms(),
            ..Default::default()
        };
        if let Some(last) = s.runs.iter().rev().find(|r| !r.backfill_id.is_empty())
            && let Ok(Some((b, _))) = self.inner.substrate.backfills.get(&last.backfill_id).await
            && b.state() == BackfillState::Running
        {
            run.note = format!("skipped: run {} was still running", b.id);
            return run;
        }
        match self.launch_run(s).await {
            Ok(b) => {
                info!(schedule = %s.name, backfill = %b.id, "a scheduled run started");
                run.backfill_id = b.id;
            }
            Err(e) => {
                warn!(schedule = %s.name, error = %e, "a scheduled run could not start");
                run.note = format!("not started: {e}");
            }
        }
        run
    }

    async fn launch_run(&self, s: &ScheduleRecord) -> Result<api::Backfill> {
        let store = &self.inner.substrate.backfills;
        let mut entities = Vec::with_capacity(s.entities as usize);
        for index in 0..s.chunks {
            let chunk: EntityChunk = store
                .schedule_chunk(&s.entities_id, index)
                .await?
                .ok_or_else(|| {
                    Error::Internal(format!("schedule {} has no chunk {index}", s.name))
                })?;
            entities.extend(chunk.entities);
        }
        let spec = Spec {
            features: s.features.clone(),
            max_staleness_ms: s.max_staleness_ms,
            stage: s.stage,
        };
        let mut checked = self.check(s.tenant.clone(), spec, entities).await?;
        checked.record.schedule = s.name.clone();
        self.launch(checked).await
    }
}

/// The last [`RUNS_KEPT`] runs.
fn trimmed(mut runs: Vec<api::ScheduleRun>) -> Vec<api::ScheduleRun> {
    let excess = runs.len().saturating_sub(RUNS_KEPT);
    runs.drain(..excess);
    runs
}
