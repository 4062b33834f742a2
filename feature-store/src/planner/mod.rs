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

use fstore_proto::api;
use fstore_proto::wire::ClaimRef;
use fstore_substrate::time::now_ms;
use fstore_substrate::{ComputeJob, Dispatcher, Submitted, Substrate, ValueEnvelope};
use tokio_util::task::TaskTracker;

use crate::Result;
use crate::keys::ValueKey;
pub use crate::plan::{Origin, Plan};
use crate::publish::snapshots::{Held, Snapshots};
use crate::registry::{Node, NodeInput};
use crate::request::{ValidRequest, Wanted};
use crate::served::ServedStats;

mod job;
mod refresh;
mod related;

pub use fstore_substrate::Claimed;
use job::{from_snapshot, job, job_inputs, result, value_key};
use related::Related;

/// The state of one planned node.
#[derive(Debug, Clone)]
enum NodeState {
    Ready(Arc<ValueEnvelope>),
    Pending {
        stale: Option<Arc<ValueEnvelope>>,
    },
    Failed {
        error: String,
        attempts: u32,
        /// When the failure was stored (0: decided by this plan).
        computed_at_ms: i64,
    },
    /// Cannot be submitted yet: a related input needs these values first (its key is
    /// not known until they are).
    Awaiting(Vec<ValueKey>),
}

/// A planned node: its key, state and origin, the generation of the compute it
/// claimed or joined, and, while pending, the job that computes it (which its
/// dependents' jobs carry, so a worker can compute it again if it expires before they
/// run).
#[derive(Debug, Clone)]
struct Planned {
    key: ValueKey,
    state: NodeState,
    origin: Origin,
    generation: Option<u64>,
    recipe: Option<Arc<ComputeJob>>,
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
    /// `cache.refresh_ahead`: the share of a value's TTL left under which a read sends
    /// it to be recomputed on the batch lane (0: never).
    pub refresh_ahead: f64,
    /// `limits.max_related`: entities a related input may reach.
    pub max_related: usize,
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
    /// Keys this replica sent for refresh, with the expiry of the value read then: one
    /// refresh per value, not one per read.
    refreshing: Arc<std::sync::Mutex<HashMap<String, i64>>>,
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
            refreshing: Arc::default(),
        }
    }

    pub fn served(&self) -> &ServedStats {
        &self.stats
    }

    /// Claims `key` and, if won and `recheck` finds nothing, submits `job(generation)`:
    /// [`Dispatcher::claim_and_submit`], the one way into the queue.
    pub async fn claim_and_submit<T>(
        &self,
        key: &ValueKey,
        recheck: impl AsyncFnOnce() -> Result<Option<T>>,
        job: impl FnOnce(u64) -> ComputeJob,
    ) -> Result<Claimed<T>> {
        self.dispatcher
            .claim_and_submit(key.as_str(), recheck, job)
            .await
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
        self.stats
            .record(&request.tenant, &ids, first, &answer.results);
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
            awaiting: false,
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
                match &planned.state {
                    NodeState::Pending { .. } => plan.pending_keys.push(planned.key.clone()),
                    NodeState::Awaiting(waits) => {
                        plan.pending_keys.extend(waits.iter().cloned());
                        plan.awaiting = true;
                    }
                    _ => {}
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
            .get(&request.tenant, &node.id, &entity.entity_id)
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
        // Related inputs first: the key covers the keys of the related values read.
        let mut resolved = Vec::new();
        for i in &node.inputs {
            if !matches!(i, NodeInput::Related { .. }) {
                continue;
            }
            // Awaiting is a miss this call drives; a failed related input is answered
            // like any failed input.
            let (unresolved, origin) = match self.related(request, i, states, pass).await? {
                Related::Ready(r) => {
                    resolved.push(r);
                    continue;
                }
                Related::Awaiting(waits) => (NodeState::Awaiting(waits), Origin::Computed),
                Related::Failed(error) => (
                    NodeState::Failed {
                        error,
                        attempts: 0,
                        computed_at_ms: 0,
                    },
                    Origin::Stored,
                ),
            };
            return Ok(Planned {
                key: value_key(
                    &request.tenant,
                    node,
                    entity,
                    |n| dep(n).map(|p| &p.key),
                    &[],
                )?,
                state: unresolved,
                origin,
                generation: None,
                recipe: None,
            });
        }
        let key = value_key(
            &request.tenant,
            node,
            entity,
            |n| dep(n).map(|p| &p.key),
            &resolved,
        )?;
        let watermark = self
            .substrate
            .watermarks
            .get(&request.tenant, &node.id, &entity.entity_id)
            .await?;
        let fresh_from = watermark.max(min_planned_at_ms);
        let metrics = fstore_substrate::metrics::global();
        let judge = Judge {
            watermark,
            fresh_from,
            started_at_ms: request.started_at_ms,
        };
        let stale = match self.lookup(&key, judge, now).await? {
            Lookup::Final(state) => {
                metrics
                    .cache
                    .get_or_create(&fstore_substrate::metrics::cache("store", true))
                    .inc();
                if let NodeState::Ready(env) = &state
                    && how != Planning::Look
                    && self.due_for_refresh(node, env, &key, now)
                {
                    self.refresh(request, entity, node, &key, states, (watermark, now));
                }
                return Ok(Planned {
                    key,
                    state,
                    origin: Origin::Stored,
                    generation: None,
                    recipe: None,
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
                recipe: None,
            });
        }
        // Missing: refuse to compute behind a failed input, else claim and submit.
        // References that arrived before their entity: planned again when it does.
        if how != Planning::Look {
            self.park_absent(request, entity, node, &resolved).await;
        }
        let job_inputs = match job_inputs(entity, node, states, &resolved)? {
            Ok(inputs) => inputs,
            Err(failed) => {
                return Ok(Planned {
                    key,
                    state: failed,
                    origin: Origin::Stored,
                    generation: None,
                    recipe: None,
                });
            }
        };
        let recipe = Arc::new(ComputeJob {
            coverage: related::coverage(&resolved),
            ..job(request, entity, node, &key, job_inputs, now)
        });
        let job = |generation| ComputeJob {
            generation,
            ..ComputeJob::clone(&recipe)
        };
        // The value may have landed between the look-up and the claim (its computer
        // stores it before releasing its claim): look again before computing it twice.
        let recheck = async || match self.lookup(&key, judge, now_ms()).await? {
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
                NodeState::Failed {
                    error,
                    attempts: 0,
                    computed_at_ms: 0,
                },
                Origin::Computed,
                None,
            ),
        };
        let recipe = matches!(state, NodeState::Pending { .. }).then_some(recipe);
        Ok(Planned {
            key,
            state,
            origin,
            generation,
            recipe,
        })
    }
}

/// What a stored envelope is judged against: the invalidation watermark, the oldest
/// plan the call accepts, and when the call started (a retryable failure stored before
/// it does not answer it).
#[derive(Debug, Clone, Copy)]
struct Judge {
    watermark: i64,
    fresh_from: i64,
    started_at_ms: i64,
}

/// What the result store holds for a key, judged against a call's freshness.
enum Lookup {
    /// A fresh value or a fresh failure: nothing to compute.
    Final(NodeState),
    /// Nothing usable; `older` is a value that is valid but older than the call allows.
    Missing { older: Option<Arc<ValueEnvelope>> },
}

impl Planner {
    async fn lookup(&self, key: &ValueKey, judge: Judge, now: i64) -> Result<Lookup> {
        let Judge {
            watermark,
            fresh_from,
            started_at_ms,
        } = judge;
        let stored = self
            .substrate
            .results
            .get(key.as_str(), fresh_from)
            .await?
            .filter(|env| env.expires_at_ms > now && env.planned_at_ms >= watermark)
            // A failure of timing or of a transient condition answers the calls that
            // were waiting for it, never a call made after it: that one computes again.
            .filter(|env| !(env.retryable && env.computed_at_ms < started_at_ms));
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
                    computed_at_ms: env.computed_at_ms,
                }
            }));
        }
        Ok(Lookup::Missing {
            older: env.error.is_empty().then_some(env),
        })
    }
}
