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
use fstore_proto::wire_v1::{self, JobInput, job_input};
use fstore_substrate::convert::wire_type;
use fstore_substrate::time::now_ms;
use fstore_substrate::{ComputeJob, Dispatcher, Submitted, Substrate, ValueEnvelope};

use crate::registry::{Node, NodeInput};
use crate::{Error, Result};

/// One requested feature of a plan.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// As the caller wrote it.
    pub requested: String,
    pub node: Arc<Node>,
    /// A value planned before this is not fresh enough.
    pub min_planned_at_ms: i64,
}

/// Everything a plan needs; built from a request or from a stored ticket.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub tenant: String,
    pub entities: Vec<api::EntityRequest>,
    pub features: Vec<Wanted>,
    /// Per feature name, for dependencies named in the request's staleness map.
    pub dependency_min_planned_at_ms: HashMap<String, i64>,
    pub allow_stale: bool,
    /// When the call (or the ticket's first call) started.
    pub started_at_ms: i64,
}

/// The state of one planned node.
#[derive(Debug, Clone)]
enum NodeState {
    Ready(Arc<ValueEnvelope>),
    Pending { stale: Option<Arc<ValueEnvelope>> },
    Failed { error: String, attempts: u32 },
}

/// Planned nodes of one entity, by node identity (the registry's `Arc<Node>` address).
type NodeStates = HashMap<usize, (String, NodeState)>;

/// The results of a plan, in request order (entity-major), and the keys still pending.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub results: Vec<FeatureResult>,
    pub pending_keys: Vec<String>,
}

impl Plan {
    pub fn is_pending(&self) -> bool {
        !self.pending_keys.is_empty()
    }
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
}

/// Upper bounds of the age buckets, in ms, and their labels.
const AGE_BUCKETS: [(i64, &str); 6] = [
    (1_000, "1s"),
    (10_000, "10s"),
    (60_000, "1m"),
    (600_000, "10m"),
    (3_600_000, "1h"),
    (i64::MAX, "+Inf"),
];

/// What this replica served, per feature version: the operator's staleness view.
#[derive(Debug, Default)]
pub struct ServedStats {
    by_feature: std::sync::Mutex<HashMap<String, Served>>,
}

#[derive(Debug, Default, Clone)]
struct Served {
    hits: u64,
    misses: u64,
    failures: u64,
    last_computed_at_ms: i64,
    ages: [u64; AGE_BUCKETS.len()],
}

impl ServedStats {
    fn record(&self, results: &[FeatureResult], ids: &[String]) {
        let mut map = self.by_feature.lock().unwrap_or_else(|p| p.into_inner());
        for (r, id) in results.iter().zip(ids.iter().cycle()) {
            let s = map.entry(id.clone()).or_default();
            match r.status() {
                Status::Ready if r.from_cache => s.hits += 1,
                Status::Failed => s.failures += 1,
                _ => s.misses += 1,
            }
            if matches!(r.status(), Status::Ready | Status::Stale) {
                let age = r.age_ms as i64;
                if let Some(i) = AGE_BUCKETS.iter().position(|(le, _)| age <= *le) {
                    s.ages[i] += 1;
                }
                s.last_computed_at_ms = s.last_computed_at_ms.max(r.computed_at_ms);
            }
        }
    }

    /// The view of one feature version (`name@version`).
    pub fn of(&self, id: &str) -> api::FeatureStats {
        let s = self
            .by_feature
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default();
        let served = s.hits + s.misses;
        api::FeatureStats {
            hits: s.hits,
            misses: s.misses,
            failures: s.failures,
            hit_rate: if served == 0 {
                0.0
            } else {
                s.hits as f64 / served as f64
            },
            last_computed_at_ms: s.last_computed_at_ms,
            ages: AGE_BUCKETS
                .iter()
                .zip(s.ages)
                .map(|((_, le), count)| api::AgeBucket {
                    le: (*le).to_string(),
                    count,
                })
                .collect(),
        }
    }
}

impl Planner {
    pub fn new(substrate: Substrate, dispatcher: Dispatcher, options: PlannerOptions) -> Self {
        Planner {
            substrate,
            dispatcher,
            options,
            stats: Arc::new(ServedStats::default()),
        }
    }

    pub fn served(&self) -> &ServedStats {
        &self.stats
    }

    /// Plans and records what was served, for the operator's view. Callers that re-plan
    /// while they wait record only their final answer.
    pub fn record(&self, input: &PlanInput, plan: &Plan) {
        let ids: Vec<String> = input.features.iter().map(|w| w.node.id.clone()).collect();
        self.stats.record(&plan.results, &ids);
    }

    #[tracing::instrument(name = "plan", skip_all, fields(entities = input.entities.len(), features = input.features.len()))]
    pub async fn plan(&self, input: &PlanInput) -> Result<Plan> {
        let now = now_ms();
        let mut plan = Plan::default();
        for entity in &input.entities {
            let mut states: NodeStates = HashMap::new();
            for wanted in &input.features {
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
                        input
                            .dependency_min_planned_at_ms
                            .get(&node.name)
                            .copied()
                            .unwrap_or(0)
                    };
                    let state = self.node(input, entity, node, min, &states, now).await?;
                    states.insert(id, state);
                }
            }
            for wanted in &input.features {
                let id = Arc::as_ptr(&wanted.node) as usize;
                let Some((key, state)) = states.get(&id) else {
                    continue;
                };
                if matches!(state, NodeState::Pending { .. }) {
                    plan.pending_keys.push(key.clone());
                }
                plan.results
                    .push(result(entity, wanted, state, input.started_at_ms, now));
            }
        }
        plan.pending_keys.sort();
        plan.pending_keys.dedup();
        Ok(plan)
    }

    async fn node(
        &self,
        input: &PlanInput,
        entity: &api::EntityRequest,
        node: &Arc<Node>,
        min_planned_at_ms: i64,
        states: &NodeStates,
        now: i64,
    ) -> Result<(String, NodeState)> {
        let dep = |n: &Node| states.get(&(std::ptr::from_ref(n) as usize));
        let key = value_key(&input.tenant, node, entity, |n| {
            dep(n).map(|(k, _)| k.as_str())
        })?;
        let watermark = self
            .substrate
            .watermarks
            .get(&input.tenant, &node.id, &entity.entity_id)
            .await?;
        let fresh_from = watermark.max(min_planned_at_ms);
        let metrics = fstore_substrate::metrics::global();
        let stale = match self.lookup(&key, watermark, fresh_from, now).await? {
            Lookup::Final(state) => {
                metrics
                    .cache
                    .get_or_create(&fstore_substrate::metrics::cache("store", true))
                    .inc();
                return Ok((key, state));
            }
            Lookup::Missing { older } => {
                metrics
                    .cache
                    .get_or_create(&fstore_substrate::metrics::cache("store", false))
                    .inc();
                older.filter(|_| input.allow_stale)
            }
        };
        // Missing: refuse to compute behind a failed input, else claim and submit.
        let mut job_inputs = Vec::with_capacity(node.inputs.len());
        for i in &node.inputs {
            match i {
                NodeInput::Feature {
                    input: name,
                    node: dep_node,
                } => {
                    let Some((dep_key, dep_state)) = dep(dep_node) else {
                        return Err(Error::InvalidArgument(format!(
                            "internal planning order broke at `{}`",
                            dep_node.id()
                        )));
                    };
                    let source = match dep_state {
                        NodeState::Ready(env) => env.value.clone().map(job_input::Source::Value),
                        NodeState::Pending { .. } => {
                            Some(job_input::Source::ValueKey(dep_key.clone()))
                        }
                        NodeState::Failed { error, attempts } => {
                            return Ok((
                                key,
                                NodeState::Failed {
                                    error: format!(
                                        "input `{name}` ({}) failed: {error}",
                                        dep_node.id()
                                    ),
                                    attempts: *attempts,
                                },
                            ));
                        }
                    };
                    job_inputs.push(JobInput {
                        name: name.clone(),
                        source,
                    });
                }
                NodeInput::Request {
                    input: name,
                    name: request,
                    ..
                } => {
                    let value = entity.inputs.get(request).cloned().ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "feature `{}` needs request input `{request}` for entity `{}`",
                            node.id(),
                            entity.entity_id
                        ))
                    })?;
                    job_inputs.push(JobInput {
                        name: name.clone(),
                        source: Some(job_input::Source::Value(value)),
                    });
                }
            }
        }
        let Some(generation) = self
            .substrate
            .claims
            .claim(&key, self.options.claim_ttl)
            .await?
        else {
            metrics.coalesced.inc();
            return Ok((key, NodeState::Pending { stale }));
        };
        // The value may have landed between the look-up and the claim (its computer
        // stores it before releasing its claim): look again before computing it twice.
        if let Lookup::Final(state) = self.lookup(&key, watermark, fresh_from, now_ms()).await? {
            self.substrate.claims.release(&key, generation).await?;
            return Ok((key, state));
        }
        let job = ComputeJob {
            value_key: key.clone(),
            generation,
            tenant: input.tenant.clone(),
            entity_id: entity.entity_id.clone(),
            feature: node.name.clone(),
            feature_version: node.version,
            lineage_hash: node.lineage.clone(),
            flow: node.flow.name.clone(),
            flow_version: node.flow.version,
            params: node.definition.params.clone(),
            inputs: job_inputs,
            ttl_ms: node.ttl_ms,
            planned_at_ms: now,
        };
        match self.dispatcher.submit(&job).await {
            Ok(Submitted::Enqueued | Submitted::Waiting) => Ok((key, NodeState::Pending { stale })),
            Ok(Submitted::Failed(error)) => Ok((key, NodeState::Failed { error, attempts: 0 })),
            Err(e) => {
                // Nothing was enqueued: give the claim back so a later call can retry.
                let _ = self.substrate.claims.release(&key, generation).await;
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
    async fn lookup(&self, key: &str, watermark: i64, fresh_from: i64, now: i64) -> Result<Lookup> {
        let stored = self
            .substrate
            .results
            .get(key, fresh_from)
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

/// The value key of a node for an entity: tenant, lineage, entity, the request inputs
/// the node reads and the keys of its direct dependencies (which cover theirs).
fn value_key<'a>(
    tenant: &str,
    node: &Node,
    entity: &api::EntityRequest,
    dep_key: impl Fn(&Node) -> Option<&'a str>,
) -> Result<String> {
    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(b"fstore.key.v1");
    field(tenant.as_bytes());
    field(node.name.as_bytes());
    field(node.lineage.as_bytes());
    field(entity.entity_id.as_bytes());
    for i in &node.inputs {
        match i {
            NodeInput::Request {
                input,
                name,
                value_type,
            } => {
                let value = entity.inputs.get(name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "feature `{}` needs request input `{name}` for entity `{}`",
                        node.id(),
                        entity.entity_id
                    ))
                })?;
                if wire_type(value) != Some(*value_type) {
                    return Err(Error::InvalidArgument(format!(
                        "request input `{name}` of entity `{}` must be a {value_type} value for feature `{}`",
                        entity.entity_id,
                        node.id()
                    )));
                }
                field(input.as_bytes());
                field(&prost::Message::encode_to_vec(value));
            }
            NodeInput::Feature { input, node: dep } => {
                field(input.as_bytes());
                field(dep_key(dep).unwrap_or_default().as_bytes());
            }
        }
    }
    Ok(h.finalize().to_hex()[..32].to_string())
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

/// The ticket that lets any replica re-plan a request later.
pub fn ticket(id: String, input: &PlanInput) -> wire_v1::Ticket {
    wire_v1::Ticket {
        id,
        tenant: input.tenant.clone(),
        created_at_ms: input.started_at_ms,
        entities: input.entities.clone(),
        features: input
            .features
            .iter()
            .map(|w| wire_v1::TicketFeature {
                requested: w.requested.clone(),
                name: w.node.name.clone(),
                version: w.node.version,
                min_planned_at_ms: w.min_planned_at_ms,
            })
            .collect(),
        allow_stale: input.allow_stale,
    }
}
