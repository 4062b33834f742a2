//! What a planned node becomes: its value key, the job that computes it (ready inputs
//! inline, pending ones by key), and the result a caller reads.

use fstore_proto::api::{self, FeatureResult, Status};
use fstore_proto::wire::{JobInput, job_input};
use fstore_substrate::{ComputeJob, ValueEnvelope};

use super::related::Resolved;
use super::{NodeState, NodeStates};
use crate::keys::{FieldHasher, ValueKey};
use crate::publish::snapshots::Held;
use crate::registry::{Node, NodeInput};
use crate::request::{ValidRequest, Wanted};
use crate::{Error, Result};

/// The largest recipe (the job computing a pending input) a dependent's job carries;
/// past it the input is sent by key alone, and if it expires before the dependent runs
/// the dependent fails retryably instead of recomputing it.
const MAX_RECIPE_BYTES: usize = 16 * 1024;

/// A node's job inputs for `entity`: ready inputs inline, pending ones by key, related
/// ones as aggregated (`related`); the state to answer instead when an input failed or
/// cannot be submitted yet.
pub(super) fn job_inputs(
    entity: &api::EntityRequest,
    node: &Node,
    states: &NodeStates,
    related: &[Resolved],
) -> Result<std::result::Result<Vec<JobInput>, NodeState>> {
    let dep = |n: &Node| states.get(&(std::ptr::from_ref(n) as usize));
    let mut job_inputs = Vec::with_capacity(node.inputs.len());
    {
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
                    let (source, recipe) = match &dep_planned.state {
                        NodeState::Ready(env) => {
                            (env.value.clone().map(job_input::Source::Value), None)
                        }
                        NodeState::Pending { .. } => (
                            Some(job_input::Source::ValueKey(dep_planned.key.to_string())),
                            dep_planned
                                .recipe
                                .as_deref()
                                .filter(|r| prost::Message::encoded_len(*r) <= MAX_RECIPE_BYTES)
                                .cloned(),
                        ),
                        NodeState::Failed {
                            error,
                            attempts,
                            computed_at_ms,
                        } => {
                            return Ok(Err(NodeState::Failed {
                                error: format!("input `{name}` ({}) failed: {error}", dep_node.id),
                                attempts: *attempts,
                                computed_at_ms: *computed_at_ms,
                            }));
                        }
                        NodeState::Awaiting(waits) => {
                            return Ok(Err(NodeState::Awaiting(waits.clone())));
                        }
                    };
                    job_inputs.push(JobInput {
                        name: name.clone(),
                        source,
                        request_input: String::new(),
                        key: dep_planned.key.to_string(),
                        recipe,
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
                        recipe: None,
                    });
                }
                NodeInput::Related { input: name, .. } => {
                    let Some(r) = related.iter().find(|r| &r.input == name) else {
                        return Err(Error::Internal(format!(
                            "related input `{name}` of `{}` was not resolved before its job",
                            node.id
                        )));
                    };
                    job_inputs.push(JobInput {
                        name: name.clone(),
                        source: Some(job_input::Source::Value(r.value.clone())),
                        request_input: String::new(),
                        key: String::new(),
                        recipe: None,
                    });
                }
            }
        }
    }
    Ok(Ok(job_inputs))
}

/// The job that computes `node` for `entity` under `key` (generation 0: the claim's is
/// set when it is won).
pub(super) fn job(
    request: &ValidRequest,
    entity: &api::EntityRequest,
    node: &Node,
    key: &ValueKey,
    inputs: Vec<JobInput>,
    now: i64,
) -> ComputeJob {
    ComputeJob {
        value_key: key.to_string(),
        generation: 0,
        tenant: request.tenant.clone(),
        entity_id: entity.entity_id.clone(),
        feature: node.name.clone(),
        feature_version: node.version,
        lineage_hash: node.lineage.to_string(),
        flow: node.flow.name.clone(),
        flow_version: node.flow.version,
        params: node.definition.params.clone(),
        inputs,
        ttl_ms: node.ttl_ms,
        planned_at_ms: now,
        tickets: vec![request.id.clone()],
        lane: request.lane as i32,
        coverage: None,
        requeues: 0,
    }
}

/// A request input the validated request should have had: a broken invariant.
pub(super) fn missing_input(node: &Node, name: &str, entity_id: &str) -> Error {
    Error::Internal(format!(
        "feature `{}` reads request input `{name}`, which entity `{}` lacks after validation",
        node.id,
        crate::names::truncate(entity_id, 80)
    ))
}

/// The value key of a node for an entity: tenant, lineage, entity, the request inputs
/// the node reads and the keys of its direct dependencies (which cover theirs).
pub(super) fn value_key<'a>(
    tenant: &str,
    node: &Node,
    entity: &api::EntityRequest,
    dep_key: impl Fn(&Node) -> Option<&'a ValueKey>,
    related: &[Resolved],
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
            // The keys of the related values read (unresolved: none yet).
            NodeInput::Related { input, .. } => {
                h.text(input);
                for key in related
                    .iter()
                    .filter(|r| &r.input == input)
                    .flat_map(|r| &r.keys)
                {
                    h.text(key.as_str());
                }
            }
        }
    }
    Ok(ValueKey::from(&h))
}

pub(super) fn from_snapshot(
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

pub(super) fn result(
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
        r.coverage = env.coverage.clone();
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
        NodeState::Pending { stale: None } | NodeState::Awaiting(_) => {
            r.set_status(Status::Pending)
        }
        NodeState::Failed {
            error,
            attempts,
            computed_at_ms,
        } => {
            r.set_status(Status::Failed);
            r.error = error.clone();
            r.attempts = *attempts;
            // A stored failure answered to a call made after it is served from the store.
            r.from_cache = *computed_at_ms > 0 && *computed_at_ms < started_at_ms;
            if *computed_at_ms > 0 {
                r.computed_at_ms = *computed_at_ms;
            }
        }
    }
    r
}
