//! The planner: for each (entity, feature) node of a request's closure it computes the
//! value key, reads the stored envelope, and — where a value is missing, expired, older
//! than the request allows or invalidated — claims the key and submits a compute job.
//! Claims make planning idempotent: however many callers on however many replicas ask at
//! once, one wins and the rest wait for the same value. Jobs whose inputs are still
//! being computed are parked by the substrate's dispatcher and enqueued when those
//! inputs complete, so progress never depends on a caller polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api::{self, FeatureResult, Status};
use fstore_proto::wire::{ClaimRef, JobInput, job_input};
use fstore_substrate::task::spawn_named;
use fstore_substrate::time::now_ms;
use fstore_substrate::{Claim, ComputeJob, Dispatcher, Submitted, Substrate, ValueEnvelope};
use tokio_util::task::TaskTracker;

use crate::keys::{FieldHasher, ValueKey};
pub use crate::plan::{Origin, Plan};
use crate::publish::snapshots::{Held, Snapshots};
use crate::registry::{Node, NodeInput};
use crate::request::{ValidRequest, Wanted};
use crate::served::ServedStats;
use crate::{Error, Result};

/// The state of one planned node.
#[derive(Debug, Clone)]
enum NodeState {
    Ready(Arc<ValueEnvelope>),
    Pending { stale: Option<Arc<ValueEnvelope>> },
    Failed { error: String, attempts: u32 },
}

/// A planned node: its key, state and origin, and the generation of the compute it
/// claimed or joined.
#[derive(Debug, Clone)]
struct Planned {
    key: ValueKey,
    state: NodeState,
    origin: Origin,
    generation: Option<u64>,
}

/// Planned nodes of one entity, by node identity (the registry's `Arc<Node>` address).
type NodeStates = HashMap<usize, Planned>;

/// How a plan treats what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// A call's first plan: claims and submits, and records the computes of others it
    /// joins (so cancelling its ticket keeps what they wait on).
    First,
    /// A later plan of the same call, or a ticket read: claims and submits.
    Again,
    /// Only looks: what is missing reads as pending and nothing is submitted (a
    /// cancelled ticket's last answer).
    Look,
}

/// One planning pass: how it treats what is missing, and the time it plans at.
#[derive(Debug, Clone, Copy)]
struct Pass {
    how: Planning,
    now: i64,
}

#[derive(Debug, Clone)]
pub struct PlannerOptions {
    /// How long an in-flight claim holds before another planner may take over.
    pub claim_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Planner {
    substrate: Substrate,
    dispatcher: Dispatcher,
    options: PlannerOptions,
    stats: Arc<ServedStats>,
    /// Where a claim abandoned by a cancelled call is given back.
    tasks: TaskTracker,
    /// The published generations of snapshot-served features, in memory.
    snapshots: Snapshots,
}

/// A won claim that nothing was enqueued under yet. Dropped armed — the call was
/// cancelled (its client went away or its deadline passed) between the claim and the
/// end of the submission — it gives the claim back on a tracked task, so later callers
/// never join a compute that nobody started.
struct ClaimGuard<'a> {
    planner: &'a Planner,
    key: &'a ValueKey,
    generation: u64,
    armed: bool,
}

impl ClaimGuard<'_> {
    /// Gives the claim back now.
    async fn release(mut self) -> Result<()> {
        self.armed = false;
        let claims = &self.planner.substrate.claims;
        Ok(claims.release(self.key.as_str(), self.generation).await?)
    }

    /// The claim is settled otherwise (a job holds it): keep it.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if !self.armed || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let claims = self.planner.substrate.claims.clone();
        let key = self.key.to_string();
        let generation = self.generation;
        spawn_named(&self.planner.tasks, "claim-release", async move {
            if let Err(e) = claims.release(&key, generation).await {
                tracing::warn!(%key, error = %e, "could not give back an abandoned claim; it expires with its ttl");
            }
        });
    }
}

/// What [`Planner::claim_and_submit`] did.
#[derive(Debug)]
pub enum Claimed<T> {
    /// Someone else holds the claim (of this generation): their compute will fill the key.
    Coalesced(u64),
    /// The re-check after winning the claim found what it looks for; the claim is back.
    Found(T),
    /// The job was submitted under the won claim of this generation.
    Submitted(Submitted, u64),
}

impl Planner {
    /// A planner; `tasks` is where it gives back claims that cancelled calls abandoned
    /// (the server's tracker, so shutdown waits for them).
    pub fn new(
        substrate: Substrate,
        dispatcher: Dispatcher,
        options: PlannerOptions,
        tasks: TaskTracker,
        snapshots: Snapshots,
    ) -> Self {
        Planner {
            substrate,
            dispatcher,
            options,
            stats: Arc::new(ServedStats::default()),
            tasks,
            snapshots,
        }
    }

    pub fn served(&self) -> &ServedStats {
        &self.stats
    }

    /// Records what one GetFeatures call was served, once per call: hits, computes and
    /// joined computes as its first plan found them (`first`, one per result), ages and
    /// failures as it answered. Watches and ticket reads are not counted.
    pub fn record(&self, request: &ValidRequest, first: &[Origin], answer: &Plan) {
        let ids: Vec<&str> = request
            .features
            .iter()
            .map(|w| w.node.id.as_str())
            .collect();
        let joined = first.iter().filter(|o| **o == Origin::Joined).count();
        fstore_substrate::metrics::global()
            .coalesced
            .inc_by(joined as u64);
        self.stats.record(&ids, first, &answer.results);
    }

    /// Plans every requested node of every entity, as `how` says.
    #[tracing::instrument(name = "plan", skip_all, fields(entities = request.entities.len(), features = request.features.len()))]
    pub async fn plan(&self, request: &ValidRequest, how: Planning) -> Result<Plan> {
        let join = how == Planning::First;
        let now = now_ms();
        let n = request.entities.len() * request.features.len();
        let mut plan = Plan {
            results: Vec::with_capacity(n),
            origins: Vec::with_capacity(n),
            pending_keys: Vec::new(),
            claimed: Vec::new(),
            joined: Vec::new(),
        };
        for entity in &request.entities {
            let mut states: NodeStates = HashMap::new();
            // Snapshot-served features the published generation answers need no walk.
            let published: Vec<Option<Held>> = request
                .features
                .iter()
                .map(|w| self.published(request, entity, w))
                .collect();
            for (wanted, _) in request
                .features
                .iter()
                .zip(&published)
                .filter(|(_, p)| p.is_none())
            {
                for node in wanted
                    .node
                    .upstream
                    .iter()
                    .chain(std::iter::once(&wanted.node))
                {
                    let id = Arc::as_ptr(node) as usize;
                    if states.contains_key(&id) {
                        continue;
                    }
                    let min = if Arc::ptr_eq(node, &wanted.node) {
                        wanted.min_planned_at_ms
                    } else {
                        request
                            .dependency_min_planned_at_ms
                            .get(&node.name)
                            .copied()
                            .unwrap_or(0)
                    };
                    let planned = self
                        .node(request, entity, node, min, &states, Pass { how, now })
                        .await?;
                    if let Some(generation) = planned.generation {
                        let claim = ClaimRef {
                            key: planned.key.to_string(),
                            generation,
                        };
                        match planned.origin {
                            Origin::Computed => plan.claimed.push(claim),
                            Origin::Joined if join => {
                                self.substrate
                                    .claims
                                    .join(
                                        &claim.key,
                                        generation,
                                        &request.id,
                                        self.options.claim_ttl,
                                    )
                                    .await?;
                                plan.joined.push(claim);
                            }
                            _ => {}
                        }
                    }
                    states.insert(id, planned);
                }
            }
            for (wanted, published) in request.features.iter().zip(published) {
                if let Some(held) = published {
                    plan.results.push(from_snapshot(entity, wanted, held, now));
                    plan.origins.push(Origin::Published);
                    continue;
                }
                let id = Arc::as_ptr(&wanted.node) as usize;
                let Some(planned) = states.get(&id) else {
                    continue;
                };
                if matches!(planned.state, NodeState::Pending { .. }) {
                    plan.pending_keys.push(planned.key.clone());
                }
                plan.results.push(result(
                    entity,
                    wanted,
                    &planned.state,
                    request.started_at_ms,
                    now,
                ));
                plan.origins.push(planned.origin);
            }
        }
        plan.pending_keys.sort();
        plan.pending_keys.dedup();
        Ok(plan)
    }

    /// The published value answering `wanted` for `entity`, if the feature is served
    /// from snapshots, the generation in memory holds the entity, and the value is as
    /// fresh as the call asks.
    fn published(
        &self,
        request: &ValidRequest,
        entity: &api::EntityRequest,
        wanted: &Wanted,
    ) -> Option<Held> {
        let node = &wanted.node;
        if !request.from_snapshots || node.definition.serving() != api::Serving::Snapshot {
            return None;
        }
        self.snapshots
            .get(&request.tenant, &node.name, node.version, &entity.entity_id)
            .filter(|h| h.computed_at_ms >= wanted.min_planned_at_ms)
    }

    async fn node(
        &self,
        request: &ValidRequest,
        entity: &api::EntityRequest,
        node: &Arc<Node>,
        min_planned_at_ms: i64,
        states: &NodeStates,
        pass: Pass,
    ) -> Result<Planned> {
        let Pass { how, now } = pass;
        let dep = |n: &Node| states.get(&(std::ptr::from_ref(n) as usize));
        let key = value_key(&request.tenant, node, entity, |n| dep(n).map(|p| &p.key))?;
        let watermark = self
            .substrate
            .watermarks
            .get(&request.tenant, &node.id, &entity.entity_id)
            .await?;
        let fresh_from = watermark.max(min_planned_at_ms);
        let metrics = fstore_substrate::metrics::global();
        let stale = match self.lookup(&key, watermark, fresh_from, now).await? {
            Lookup::Final(state) => {
                metrics
                    .cache
                    .get_or_create(&fstore_substrate::metrics::cache("store", true))
                    .inc();
                return Ok(Planned {
                    key,
                    state,
                    origin: Origin::Stored,
                    generation: None,
                });
            }
            Lookup::Missing { older } => {
                metrics
                    .cache
                    .get_or_create(&fstore_substrate::metrics::cache("store", false))
                    .inc();
                older.filter(|_| request.allow_stale)
            }
        };
        if how == Planning::Look {
            return Ok(Planned {
                key,
                state: NodeState::Pending { stale },
                origin: Origin::Joined,
                generation: None,
            });
        }
        // Missing: refuse to compute behind a failed input, else claim and submit.
        let mut job_inputs = Vec::with_capacity(node.inputs.len());
        for i in &node.inputs {
            match i {
                NodeInput::Feature {
                    input: name,
                    node: dep_node,
                } => {
                    let Some(dep_planned) = dep(dep_node) else {
                        return Err(Error::Internal(format!(
                            "planning order broke: `{}` was planned before its input `{}`",
                            node.id, dep_node.id
                        )));
                    };
                    let source = match &dep_planned.state {
                        NodeState::Ready(env) => env.value.clone().map(job_input::Source::Value),
                        NodeState::Pending { .. } => {
                            Some(job_input::Source::ValueKey(dep_planned.key.to_string()))
                        }
                        NodeState::Failed { error, attempts } => {
                            return Ok(Planned {
                                key,
                                state: NodeState::Failed {
                                    error: format!(
                                        "input `{name}` ({}) failed: {error}",
                                        dep_node.id
                                    ),
                                    attempts: *attempts,
                                },
                                origin: Origin::Stored,
                                generation: None,
                            });
                        }
                    };
                    job_inputs.push(JobInput {
                        name: name.clone(),
                        source,
                        request_input: String::new(),
                        key: dep_planned.key.to_string(),
                    });
                }
                NodeInput::Request {
                    input: name,
                    name: request_input,
                    ..
                } => {
                    let value = entity
                        .inputs
                        .get(request_input)
                        .cloned()
                        .ok_or_else(|| missing_input(node, request_input, &entity.entity_id))?;
                    job_inputs.push(JobInput {
                        name: name.clone(),
                        source: Some(job_input::Source::Value(value)),
                        request_input: request_input.clone(),
                        key: String::new(),
                    });
                }
            }
        }
        let job = |generation| ComputeJob {
            value_key: key.to_string(),
            generation,
            tenant: request.tenant.clone(),
            entity_id: entity.entity_id.clone(),
            feature: node.name.clone(),
            feature_version: node.version,
            lineage_hash: node.lineage.to_string(),
            flow: node.flow.name.clone(),
            flow_version: node.flow.version,
            params: node.definition.params.clone(),
            inputs: job_inputs,
            ttl_ms: node.ttl_ms,
            planned_at_ms: now,
            tickets: vec![request.id.clone()],
            lane: request.lane as i32,
        };
        // The value may have landed between the look-up and the claim (its computer
        // stores it before releasing its claim): look again before computing it twice.
        let recheck = async || match self.lookup(&key, watermark, fresh_from, now_ms()).await? {
            Lookup::Final(state) => Ok(Some(state)),
            Lookup::Missing { .. } => Ok(None),
        };
        let (state, origin, generation) = match self.claim_and_submit(&key, recheck, job).await? {
            Claimed::Coalesced(g) => (NodeState::Pending { stale }, Origin::Joined, Some(g)),
            Claimed::Found(state) => (state, Origin::Stored, None),
            Claimed::Submitted(Submitted::Enqueued | Submitted::Waiting, g) => {
                (NodeState::Pending { stale }, Origin::Computed, Some(g))
            }
            Claimed::Submitted(Submitted::Failed(error), _) => (
                NodeState::Failed { error, attempts: 0 },
                Origin::Computed,
                None,
            ),
        };
        Ok(Planned {
            key,
            state,
            origin,
            generation,
        })
    }

    /// Claims `key`; if the claim is won and `recheck` finds nothing, submits the job
    /// `job(generation)` makes. Whenever nothing ends up enqueued under the won claim — the
    /// re-check found the value, the submission failed, or the call was cancelled in
    /// between — the claim is given back, so later callers never coalesce onto a compute
    /// that is not running. The one way into the queue for planned computes and
    /// dead-letter replays alike.
    pub async fn claim_and_submit<T>(
        &self,
        key: &ValueKey,
        recheck: impl AsyncFnOnce() -> Result<Option<T>>,
        job: impl FnOnce(u64) -> ComputeJob,
    ) -> Result<Claimed<T>> {
        let claims = &self.substrate.claims;
        let generation = match claims.claim(key.as_str(), self.options.claim_ttl).await? {
            Claim::Won(g) => g,
            Claim::Held(g) => return Ok(Claimed::Coalesced(g)),
        };
        let guard = ClaimGuard {
            planner: self,
            key,
            generation,
            armed: true,
        };
        let found = match recheck().await {
            Ok(found) => found,
            Err(e) => {
                if let Err(release) = guard.release().await {
                    tracing::warn!(key = %key, error = %release, "could not give a claim back; it expires with its ttl");
                }
                return Err(e);
            }
        };
        if let Some(found) = found {
            guard.release().await?;
            return Ok(Claimed::Found(found));
        }
        fstore_substrate::fault::point(fstore_substrate::fault::BEFORE_SUBMIT).await;
        match self.dispatcher.submit(&job(generation)).await {
            Ok(submitted) => {
                guard.keep();
                if matches!(submitted, Submitted::Enqueued | Submitted::Waiting) {
                    // The claim holds for its TTL from now on. Without the mark it is
                    // taken over once `cache.claim_orphan_after` passes: at worst the
                    // key is computed twice, so a failed mark is no failed call.
                    let marked = claims
                        .submitted(key.as_str(), generation, self.options.claim_ttl)
                        .await;
                    if let Err(e) = marked {
                        tracing::warn!(key = %key, error = %e, "could not mark a claim submitted; it may be taken over");
                    }
                }
                Ok(Claimed::Submitted(submitted, generation))
            }
            Err(e) => {
                // Nothing was enqueued: give the claim back so a later call can retry.
                if let Err(release) = guard.release().await {
                    tracing::warn!(key = %key, error = %release, "could not give a claim back; it expires with its ttl");
                }
                Err(e.into())
            }
        }
    }
}

/// What the result store holds for a key, judged against a call's freshness.
enum Lookup {
    /// A fresh value or a fresh failure: nothing to compute.
    Final(NodeState),
    /// Nothing usable; `older` is a value that is valid but older than the call allows.
    Missing { older: Option<Arc<ValueEnvelope>> },
}

impl Planner {
    async fn lookup(
        &self,
        key: &ValueKey,
        watermark: i64,
        fresh_from: i64,
        now: i64,
    ) -> Result<Lookup> {
        let stored = self
            .substrate
            .results
            .get(key.as_str(), fresh_from)
            .await?
            .filter(|env| env.expires_at_ms > now && env.planned_at_ms >= watermark);
        let Some(env) = stored else {
            return Ok(Lookup::Missing { older: None });
        };
        if env.planned_at_ms >= fresh_from {
            return Ok(Lookup::Final(if env.error.is_empty() {
                NodeState::Ready(env)
            } else {
                NodeState::Failed {
                    error: env.error.clone(),
                    attempts: env.attempts,
                }
            }));
        }
        Ok(Lookup::Missing {
            older: env.error.is_empty().then_some(env),
        })
    }
}

/// A request input the validated request should have had: a broken invariant.
fn missing_input(node: &Node, name: &str, entity_id: &str) -> Error {
    Error::Internal(format!(
        "feature `{}` reads request input `{name}`, which entity `{}` lacks after validation",
        node.id,
        crate::names::truncate(entity_id, 80)
    ))
}

/// The value key of a node for an entity: tenant, lineage, entity, the request inputs
/// the node reads and the keys of its direct dependencies (which cover theirs).
fn value_key<'a>(
    tenant: &str,
    node: &Node,
    entity: &api::EntityRequest,
    dep_key: impl Fn(&Node) -> Option<&'a ValueKey>,
) -> Result<ValueKey> {
    let mut h = FieldHasher::new(ValueKey::DOMAIN);
    h.text(tenant)
        .text(&node.name)
        .text(node.lineage.as_str())
        .text(&entity.entity_id);
    for i in &node.inputs {
        match i {
            NodeInput::Request { input, name, .. } => {
                let value = entity
                    .inputs
                    .get(name)
                    .ok_or_else(|| missing_input(node, name, &entity.entity_id))?;
                h.text(input).field(&prost::Message::encode_to_vec(value));
            }
            NodeInput::Feature { input, node: dep } => {
                let key = dep_key(dep).ok_or_else(|| {
                    Error::Internal(format!(
                        "planning order broke: no key for `{}` under `{}`",
                        dep.id, node.id
                    ))
                })?;
                h.text(input).text(key.as_str());
            }
        }
    }
    Ok(ValueKey::from(&h))
}

fn from_snapshot(
    entity: &api::EntityRequest,
    wanted: &Wanted,
    held: Held,
    now: i64,
) -> FeatureResult {
    let mut r = FeatureResult {
        entity_id: entity.entity_id.clone(),
        feature: wanted.requested.clone(),
        version: wanted.node.version,
        value: Some(held.value),
        computed_at_ms: held.computed_at_ms,
        age_ms: (now - held.computed_at_ms).max(0) as u64,
        from_cache: true,
        generation: held.generation,
        ..Default::default()
    };
    r.set_status(Status::Ready);
    r
}

fn result(
    entity: &api::EntityRequest,
    wanted: &Wanted,
    state: &NodeState,
    started_at_ms: i64,
    now: i64,
) -> FeatureResult {
    let mut r = FeatureResult {
        entity_id: entity.entity_id.clone(),
        feature: wanted.requested.clone(),
        version: wanted.node.version,
        ..Default::default()
    };
    let fill = |r: &mut FeatureResult, env: &ValueEnvelope| {
        r.value = env.value.clone();
        r.computed_at_ms = env.computed_at_ms;
        r.age_ms = (now - env.computed_at_ms).max(0) as u64;
        r.from_cache = env.computed_at_ms < started_at_ms;
        r.attempts = env.attempts;
    };
    match state {
        NodeState::Ready(env) => {
            r.set_status(Status::Ready);
            fill(&mut r, env);
        }
        NodeState::Pending { stale: Some(env) } => {
            r.set_status(Status::Stale);
            fill(&mut r, env);
        }
        NodeState::Pending { stale: None } => r.set_status(Status::Pending),
        NodeState::Failed { error, attempts } => {
            r.set_status(Status::Failed);
            r.error = error.clone();
            r.attempts = *attempts;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fstore_flows::FlowId;
    use fstore_substrate::queue::Enqueued;
    use fstore_substrate::{Delivery, Headers, JobQueue};

    use super::*;

    /// A queue whose enqueue never answers: a call submitting to it is cancelled mid-way.
    struct StuckQueue;

    #[async_trait::async_trait]
    impl JobQueue for StuckQueue {
        async fn enqueue(
            &self,
            _job: &ComputeJob,
            _headers: &Headers,
        ) -> Result<Enqueued, fstore_substrate::Error> {
            futures::future::pending().await
        }

        async fn pull(
            &self,
            _flow: &FlowId,
            _lanes: &[fstore_substrate::Lane],
            _max: usize,
            _wait: Duration,
        ) -> Result<Vec<Delivery>, fstore_substrate::Error> {
            Ok(Vec::new())
        }

        async fn depth(&self, _flow: &FlowId) -> Result<u64, fstore_substrate::Error> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_cancelled_call_gives_its_claim_back() {
        let mut substrate =
            fstore_substrate::embedded::substrate(&crate::Config::default().embedded_options())
                .expect("substrate");
        substrate.queue = Arc::new(StuckQueue);
        let tasks = TaskTracker::new();
        let planner = Planner::new(
            substrate.clone(),
            Dispatcher::new(substrate.clone(), Duration::from_secs(1)),
            PlannerOptions {
                claim_ttl: Duration::from_secs(600),
            },
            tasks.clone(),
            Snapshots::default(),
        );
        let key = ValueKey::from_wire("k".into());
        let job = |generation| ComputeJob {
            value_key: "k".into(),
            generation,
            ..Default::default()
        };
        // The caller goes away while the submission hangs.
        let call = planner.claim_and_submit(&key, async || Ok(None::<()>), job);
        let cancelled = tokio::time::timeout(Duration::from_millis(50), call).await;
        assert!(cancelled.is_err(), "the submission should still hang");
        tasks.close();
        tasks.wait().await;
        // The abandoned claim is free again: a later caller wins it.
        let again = substrate
            .claims
            .claim("k", Duration::from_secs(600))
            .await
            .expect("claim");
        assert!(
            matches!(again, Claim::Won(_)),
            "the cancelled call's claim was given back"
        );
    }
}
