//! Building a [`Snapshot`] from definitions: each definition is checked on its own
//! (names, TTL, size, sources), then all are resolved together into the DAG, refusing
//! cycles (with the cycle's path), unknown dependencies and flows, and type or entity
//! mismatches; each node gets its lineage hash.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fstore_flows::{FlowId, FlowSpec, Params, ValueType};
use fstore_proto::api;
use petgraph::Direction;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use prost::Message;

use super::snapshot::{Aggregate, FeatureId, Node, NodeInput, Snapshot};
use crate::keys::{FieldHasher, LineageHash};
use crate::names::{FeatureRef, check_name, check_tenant};
use crate::request::MAX_DURATION_MS;
use crate::{Error, Result};

/// The largest encoded definition the registry takes, on every backend (a NATS message
/// must hold it, with room to spare under the default 1 MiB payload).
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;

/// Checks the fields a definition must have and clears the ones the registry assigns.
pub(super) fn normalise(mut def: api::FeatureDefinition) -> Result<api::FeatureDefinition> {
    def.version = 0;
    check_name("feature", &def.name)?;
    check_name("entity type", &def.entity_type)
        .map_err(|e| Error::Definition(format!("feature `{}`: {e}", def.name)))?;
    if def.ttl_ms == 0 {
        return Err(Error::Definition(format!(
            "feature `{}` needs a ttl greater than zero",
            def.name
        )));
    }
    if def.ttl_ms > MAX_DURATION_MS {
        return Err(Error::Definition(format!(
            "feature `{}`: ttl_ms {} is more than the limit of {MAX_DURATION_MS} ms (100 years)",
            def.name, def.ttl_ms
        )));
    }
    let size = def.encoded_len();
    if size > MAX_DEFINITION_BYTES {
        return Err(Error::Definition(format!(
            "feature `{}`: the definition is {size} bytes, more than the limit of \
             {MAX_DEFINITION_BYTES}; shorten its description or params",
            def.name
        )));
    }
    if let Some(gate) = &def.gate {
        check_gate(&def.name, gate)?;
    }
    for t in &def.shared_with {
        check_tenant(t)
            .map_err(|e| Error::Definition(format!("feature `{}`: shared_with: {e}", def.name)))?;
    }
    def.shared_with.sort();
    def.shared_with.dedup();
    def.flow
        .parse::<FlowId>()
        .map_err(|e| Error::Definition(format!("feature `{}`: {e}", def.name)))?;
    for (input, binding) in &def.inputs {
        match &binding.source {
            Some(api::input_binding::Source::Feature(f)) => {
                FeatureRef::parse(f).map_err(|e| {
                    Error::Definition(format!("feature `{}`, input `{input}`: {e}", def.name))
                })?;
            }
            Some(api::input_binding::Source::Request(r)) => {
                check_name("request input", r).map_err(|e| {
                    Error::Definition(format!("feature `{}`, input `{input}`: {e}", def.name))
                })?;
            }
            Some(api::input_binding::Source::Related(r)) => check_related(&def.name, input, r)?,
            None => {
                return Err(Error::Definition(format!(
                    "feature `{}`, input `{input}` needs a source: a feature or a request input",
                    def.name
                )));
            }
        }
    }
    if !def.relates_to.is_empty() {
        check_name("entity type", &def.relates_to)
            .map_err(|e| Error::Definition(format!("feature `{}`, relates_to: {e}", def.name)))?;
    }
    Ok(def)
}

/// Relations a path may take at most.
pub const MAX_HOPS: usize = 4;

/// The shape of a related input: a path of 1 to [`MAX_HOPS`] relation features, a known
/// aggregate, a feature to read unless the aggregate is `ids`.
fn check_related(feature: &str, input: &str, r: &api::Related) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::Definition(format!(
            "feature `{feature}`, input `{input}`: {why}"
        )))
    };
    if r.via.is_empty() || r.via.len() > MAX_HOPS {
        return refuse(format!(
            "`via` names 1 to {MAX_HOPS} relation features, not {}",
            r.via.len()
        ));
    }
    for v in &r.via {
        FeatureRef::parse(v).map_err(|e| {
            Error::Definition(format!("feature `{feature}`, input `{input}`, via: {e}"))
        })?;
    }
    let Some(aggregate) = Aggregate::parse(&r.aggregate) else {
        return refuse(format!(
            "aggregate `{}` is unknown: use mean, sum, min, max, count, list or ids",
            r.aggregate
        ));
    };
    match (aggregate, r.feature.is_empty()) {
        (Aggregate::Ids, false) => {
            refuse("aggregate `ids` reads no feature: drop `feature`".to_string())
        }
        (Aggregate::Ids, true) => Ok(()),
        (_, true) => refuse(format!(
            "aggregate `{}` needs the `feature` to read of each related entity",
            aggregate.name()
        )),
        (_, false) => FeatureRef::parse(&r.feature)
            .map(|_| ())
            .map_err(|e| Error::Definition(format!("feature `{feature}`, input `{input}`: {e}"))),
    }
}

/// Refuses gate thresholds that no generation could be measured against: rates outside
/// 0..=1, negative or non-finite bounds, a cosine outside -1..=1.
fn check_gate(feature: &str, g: &api::GateThresholds) -> Result<()> {
    let checks = [
        ("max_row_change", g.max_row_change, 0.0, f64::MAX),
        ("max_failure_rate", g.max_failure_rate, 0.0, 1.0),
        ("max_null_rate", g.max_null_rate, 0.0, 1.0),
        ("max_psi", g.max_psi, 0.0, f64::MAX),
        ("max_ks", g.max_ks, 0.0, 1.0),
        ("max_norm_change", g.max_norm_change, 0.0, f64::MAX),
        ("min_cosine", g.min_cosine, -1.0, 1.0),
    ];
    for (name, value, min, max) in checks {
        if let Some(v) = value
            && !(v.is_finite() && (min..=max).contains(&v))
        {
            let range = if max == f64::MAX {
                format!("a finite number of at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            return Err(Error::Definition(format!(
                "feature `{feature}`: gate.{name} is {v}; give {range}"
            )));
        }
    }
    Ok(())
}

/// Resolves every definition into the graph and nodes, refusing cycles, unknown
/// dependencies and flows, and type mismatches.
pub(super) fn build(
    definitions: BTreeMap<String, Vec<api::FeatureDefinition>>,
    flows: &[FlowSpec],
) -> Result<Snapshot> {
    let flow_specs: HashMap<FlowId, &FlowSpec> = flows.iter().map(|s| (s.id.clone(), s)).collect();
    let latest = |name: &str| definitions.get(name).map(|v| v.len() as u32);
    let mut graph = DiGraph::<FeatureId, ()>::new();
    let mut index = HashMap::new();
    for (name, versions) in &definitions {
        for d in versions {
            let id = (name.clone(), d.version);
            index.insert(id.clone(), graph.add_node(id));
        }
    }
    // Edges dependency -> dependent, with floating references resolved to the latest.
    // A related input depends on each relation of its path and on the feature it reads.
    let mut deps_of: HashMap<FeatureId, Vec<(String, FeatureId)>> = HashMap::new();
    for (name, versions) in &definitions {
        for d in versions {
            let me = (name.clone(), d.version);
            for (input, binding) in &d.inputs {
                let read: Vec<&String> = match &binding.source {
                    Some(api::input_binding::Source::Feature(f)) => vec![f],
                    Some(api::input_binding::Source::Related(r)) => r
                        .via
                        .iter()
                        .chain(Some(&r.feature).filter(|f| !f.is_empty()))
                        .collect(),
                    _ => Vec::new(),
                };
                for f in read {
                    let r = FeatureRef::parse(f)?;
                    let Some(latest_version) = latest(&r.name) else {
                        return Err(Error::Definition(format!(
                            "feature `{name}`: input `{input}` reads unknown feature `{}`; register it first",
                            r.name
                        )));
                    };
                    let v = r.version.unwrap_or(latest_version);
                    let dep = (r.name.clone(), v);
                    let Some(from) = index.get(&dep) else {
                        return Err(Error::Definition(format!(
                            "feature `{name}`: input `{input}` reads `{}@{v}`, which does not exist (latest is {latest_version})",
                            r.name
                        )));
                    };
                    graph.add_edge(*from, index[&me], ());
                    deps_of
                        .entry(me.clone())
                        .or_default()
                        .push((input.clone(), dep));
                }
            }
        }
    }
    let order = toposort(&graph, None).map_err(|_| Error::Definition(cycle_message(&graph)))?;

    let mut nodes: HashMap<FeatureId, Arc<Node>> = HashMap::new();
    for ix in order {
        let id = graph[ix].clone();
        let def = &definitions[&id.0][(id.1 - 1) as usize];
        let node = resolve_node(
            def,
            &flow_specs,
            &nodes,
            deps_of.get(&id).map_or(&[], Vec::as_slice),
        )?;
        nodes.insert(id, Arc::new(node));
    }
    Ok(Snapshot {
        definitions,
        nodes,
        graph,
        index,
    })
}

fn resolve_node(
    def: &api::FeatureDefinition,
    flows: &HashMap<FlowId, &FlowSpec>,
    nodes: &HashMap<FeatureId, Arc<Node>>,
    deps: &[(String, FeatureId)],
) -> Result<Node> {
    let name = &def.name;
    let flow_id: FlowId = def
        .flow
        .parse()
        .map_err(|e| Error::Definition(format!("feature `{name}`: {e}")))?;
    let spec = flows.get(&flow_id).ok_or_else(|| {
        let mut known: Vec<String> = flows.keys().map(ToString::to_string).collect();
        known.sort();
        Error::Definition(format!(
            "feature `{name}`: unknown flow `{flow_id}`; flows served now: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })?;
    if !spec.entity_types.is_empty() && !spec.entity_types.contains(&def.entity_type) {
        return Err(Error::Definition(format!(
            "feature `{name}`: flow {flow_id} computes entity types {:?}, not `{}`",
            spec.entity_types, def.entity_type
        )));
    }
    let params = Params::new(def.params.clone().into_iter().collect());
    spec.check_params(&params)
        .map_err(|e| Error::Definition(format!("feature `{name}`: {e}")))?;

    let mut inputs = Vec::new();
    for (input, binding) in &def.inputs {
        let declared = spec.input(input).ok_or_else(|| {
            let known: Vec<&str> = spec.inputs.iter().map(|i| i.name.as_str()).collect();
            Error::Definition(format!(
                "feature `{name}`: flow {flow_id} has no input `{input}` (inputs: {})",
                known.join(", ")
            ))
        })?;
        match &binding.source {
            Some(api::input_binding::Source::Feature(_)) => {
                let dep_id = deps
                    .iter()
                    .find(|(i, _)| i == input)
                    .map(|(_, d)| d)
                    .ok_or_else(|| {
                        Error::Definition(format!(
                            "feature `{name}`: input `{input}` is unresolved"
                        ))
                    })?;
                let dep = nodes.get(dep_id).ok_or_else(|| {
                    Error::Definition(format!(
                        "feature `{name}`: dependency `{}@{}` is unresolved",
                        dep_id.0, dep_id.1
                    ))
                })?;
                if dep.definition.entity_type != def.entity_type {
                    return Err(Error::Definition(format!(
                        "feature `{name}` is about `{}` entities but input `{input}` reads `{}`, about `{}` entities",
                        def.entity_type, dep.id, dep.definition.entity_type
                    )));
                }
                if dep.value_type != declared.value_type {
                    return Err(Error::Definition(format!(
                        "feature `{name}`: flow {flow_id} input `{input}` takes {} but `{}` is {}",
                        declared.value_type, dep.id, dep.value_type
                    )));
                }
                inputs.push(NodeInput::Feature {
                    input: input.clone(),
                    node: dep.clone(),
                });
            }
            Some(api::input_binding::Source::Request(r)) => inputs.push(NodeInput::Request {
                input: input.clone(),
                name: r.clone(),
                value_type: declared.value_type,
            }),
            Some(api::input_binding::Source::Related(r)) => {
                let read: Vec<Arc<Node>> = deps
                    .iter()
                    .filter(|(i, _)| i == input)
                    .map(|(_, d)| {
                        nodes.get(d).cloned().ok_or_else(|| {
                            Error::Definition(format!(
                                "feature `{name}`: dependency `{}@{}` is unresolved",
                                d.0, d.1
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                let (via, target) = read.split_at(r.via.len().min(read.len()));
                inputs.push(related_input(
                    def,
                    input,
                    r,
                    via,
                    target.first(),
                    declared.value_type,
                )?);
            }
            None => {
                return Err(Error::Definition(format!(
                    "feature `{name}`: input `{input}` has no source"
                )));
            }
        }
    }
    for declared in &spec.inputs {
        if !declared.optional && !def.inputs.contains_key(&declared.name) {
            return Err(Error::Definition(format!(
                "feature `{name}`: flow {flow_id} needs input `{}` ({}) bound to a feature or a request input",
                declared.name, declared.value_type
            )));
        }
    }

    if spec.output == ValueType::Relation && def.relates_to.is_empty() {
        return Err(Error::Definition(format!(
            "feature `{name}`: flow {flow_id} makes a relation; say which entity type its ids are of with `relates_to`"
        )));
    }
    let lineage = lineage_hash(def, &flow_id, &inputs);
    let mut upstream: Vec<Arc<Node>> = Vec::new();
    for i in &inputs {
        // Same-entity dependencies: a feature input, and the first relation of a path.
        let same_entity = match i {
            NodeInput::Feature { node, .. } => Some(node),
            NodeInput::Related { via, .. } => via.first(),
            NodeInput::Request { .. } => None,
        };
        if let Some(node) = same_entity {
            for n in node.upstream.iter().chain(std::iter::once(node)) {
                if !upstream.iter().any(|c| Arc::ptr_eq(c, n)) {
                    upstream.push(n.clone());
                }
            }
        }
    }
    Ok(Node {
        id: format!("{name}@{}", def.version),
        name: name.clone(),
        version: def.version,
        definition: def.clone(),
        flow: flow_id,
        value_type: spec.output,
        lineage,
        inputs,
        ttl_ms: def.ttl_ms,
        upstream,
    })
}

fn lineage_hash(def: &api::FeatureDefinition, flow: &FlowId, inputs: &[NodeInput]) -> LineageHash {
    let mut h = FieldHasher::new(LineageHash::DOMAIN);
    h.text(&def.name)
        .text(&def.version.to_string())
        .text(&def.entity_type)
        .text(&flow.to_string());
    let params: BTreeMap<_, _> = def.params.iter().collect();
    for (k, v) in params {
        h.text(k).text(v);
    }
    let mut bound: Vec<(String, String)> = inputs
        .iter()
        .map(|i| match i {
            NodeInput::Feature { input, node } => {
                (input.clone(), format!("feature:{}", node.lineage))
            }
            NodeInput::Request { input, name, .. } => (input.clone(), format!("request:{name}")),
            NodeInput::Related {
                input,
                via,
                target,
                aggregate,
                truncate,
            } => {
                let path: Vec<&str> = via.iter().map(|n| n.lineage.as_str()).collect();
                let read = target.as_ref().map_or("", |t| t.lineage.as_str());
                (
                    input.clone(),
                    format!(
                        "related:{}:{read}:{}:{truncate}",
                        path.join(">"),
                        aggregate.name()
                    ),
                )
            }
        })
        .collect();
    bound.sort();
    for (k, v) in bound {
        h.text(&k).text(&v);
    }
    LineageHash::from(&h)
}

/// Checks a related input hop by hop — each relation of the entity type the one before
/// relates to, the feature read of the entity type the last relates to, the aggregate
/// able to take its values and giving the flow input's type — and resolves it.
fn related_input(
    def: &api::FeatureDefinition,
    input: &str,
    r: &api::Related,
    via: &[Arc<Node>],
    target: Option<&Arc<Node>>,
    declared: ValueType,
) -> Result<NodeInput> {
    let name = &def.name;
    let refuse = |why: String| {
        Err(Error::Definition(format!(
            "feature `{name}`, input `{input}`: {why}"
        )))
    };
    let aggregate = Aggregate::parse(&r.aggregate).ok_or_else(|| {
        Error::Definition(format!(
            "feature `{name}`, input `{input}`: aggregate `{}` is unknown",
            r.aggregate
        ))
    })?;
    let mut at = def.entity_type.as_str();
    let mut path = vec![format!("`{at}`")];
    for hop in via {
        if hop.value_type != ValueType::Relation {
            return refuse(format!(
                "`{}` is {}, not a relation",
                hop.id, hop.value_type
            ));
        }
        if hop.definition.entity_type != at {
            return refuse(format!(
                "the path {} -> `{}` breaks: `{}` is about `{}` entities, not `{at}`",
                path.join(" -> "),
                hop.id,
                hop.id,
                hop.definition.entity_type
            ));
        }
        at = &hop.definition.relates_to;
        path.push(format!("`{}` -> `{at}`", hop.id));
    }
    if let Some(t) = target
        && t.definition.entity_type != at
    {
        return refuse(format!(
            "the path {} ends at `{at}` entities, but `{}` is about `{}` entities",
            path.join(" -> "),
            t.id,
            t.definition.entity_type
        ));
    }
    let of = target.map(|t| t.value_type);
    let Some(output) = aggregate.output(of) else {
        return refuse(format!(
            "aggregate `{}` cannot take {} values{}: mean, sum and list take numbers or tensors, min and max numbers, count anything",
            aggregate.name(),
            of.map_or("entity".to_string(), |t| t.to_string()),
            target.map_or(String::new(), |t| format!(" (`{}`)", t.id))
        ));
    };
    if output != declared {
        return refuse(format!(
            "aggregate `{}` gives {output}, but the flow's input takes {declared}",
            aggregate.name()
        ));
    }
    Ok(NodeInput::Related {
        input: input.to_string(),
        via: via.to_vec(),
        target: target.cloned(),
        aggregate,
        truncate: r.truncate,
    })
}

/// Names one cycle of the graph: `a@1 -> b@1 -> a@1`.
fn cycle_message(graph: &DiGraph<FeatureId, ()>) -> String {
    let name = |ix: NodeIndex| format!("{}@{}", graph[ix].0, graph[ix].1);
    for scc in tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        // Breadth-first inside the component from its first node back to itself: the
        // shortest cycle through that node.
        let start = scc[0];
        let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        while let Some(at) = queue.pop_front() {
            for next in graph.neighbors_directed(at, Direction::Outgoing) {
                if next == start {
                    closing = Some(at);
                    break;
                }
                if scc.contains(&next) && !parent.contains_key(&next) {
                    parent.insert(next, at);
                    queue.push_back(next);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let mut path = vec![start];
        let mut at = closing.unwrap_or(start);
        while at != start {
            path.push(at);
            at = parent.get(&at).copied().unwrap_or(start);
        }
        path.push(start);
        let last = path.len() - 1;
        path[1..last].reverse();
        let text: Vec<String> = path.into_iter().map(name).collect();
        return format!("dependency cycle: {}", text.join(" -> "));
    }
    "dependency cycle".to_string()
}
