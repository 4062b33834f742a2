//! The resolved registry: [`Node`]s (a feature version with its flow, bound inputs,
//! lineage hash and topologically sorted closure) and the immutable [`Snapshot`] that
//! holds them with the petgraph DAG, for look-ups in both directions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fstore_flows::{FlowId, ValueType};
use fstore_proto::api;
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::keys::LineageHash;
use crate::names::FeatureRef;
use crate::{Error, Result};

/// `(name, version)` of a registered feature.
pub type FeatureId = (String, u32);

/// Where a resolved flow input comes from.
#[derive(Debug, Clone)]
pub enum NodeInput {
    Feature {
        input: String,
        node: Arc<Node>,
    },
    Request {
        input: String,
        name: String,
        value_type: ValueType,
    },
    /// A feature of related entities: the relation features hop by hop (the first of
    /// this node's entity), then `target` of every entity reached (None: the entities
    /// themselves), aggregated.
    Related {
        input: String,
        via: Vec<Arc<Node>>,
        target: Option<Arc<Node>>,
        aggregate: Aggregate,
        truncate: bool,
    },
}

/// How the values of related entities become one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Mean,
    Sum,
    Min,
    Max,
    Count,
    /// The values themselves, as one batch the flow receives: numbers as a tensor of
    /// `[n]`, tensors of `[d]` stacked into `[n, d]`.
    List,
    /// The entities reached, as a relation (a materialized edge).
    Ids,
}

impl Aggregate {
    pub fn parse(s: &str) -> Option<Aggregate> {
        Some(match s {
            "mean" => Aggregate::Mean,
            "sum" => Aggregate::Sum,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "count" => Aggregate::Count,
            "list" => Aggregate::List,
            "ids" => Aggregate::Ids,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Mean => "mean",
            Aggregate::Sum => "sum",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Count => "count",
            Aggregate::List => "list",
            Aggregate::Ids => "ids",
        }
    }

    /// The type it makes of values of type `of` (None: the entities themselves), or
    /// None when it cannot aggregate them.
    pub fn output(self, of: Option<ValueType>) -> Option<ValueType> {
        use ValueType as T;
        match (self, of) {
            (Aggregate::Ids, None) => Some(T::Relation),
            (Aggregate::Count, Some(_)) => Some(T::I64),
            (
                Aggregate::Mean | Aggregate::Sum | Aggregate::Min | Aggregate::Max,
                Some(T::F64 | T::I64),
            ) => Some(T::F64),
            (Aggregate::Mean | Aggregate::Sum, Some(T::Tensor)) => Some(T::Tensor),
            (Aggregate::List, Some(T::F64 | T::I64 | T::Tensor)) => Some(T::Tensor),
            _ => None,
        }
    }
}

/// A feature version resolved against the current registry.
#[derive(Debug)]
pub struct Node {
    /// `name@version`.
    pub id: String,
    pub name: String,
    pub version: u32,
    pub definition: api::FeatureDefinition,
    pub flow: FlowId,
    pub value_type: ValueType,
    pub lineage: LineageHash,
    pub inputs: Vec<NodeInput>,
    pub ttl_ms: u64,
    /// Everything this node reads, directly or not, dependencies first.
    pub upstream: Vec<Arc<Node>>,
}

/// An immutable view of the registry.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(super) definitions: BTreeMap<String, Vec<api::FeatureDefinition>>,
    pub(super) nodes: HashMap<FeatureId, Arc<Node>>,
    pub(super) graph: DiGraph<FeatureId, ()>,
    pub(super) index: HashMap<FeatureId, NodeIndex>,
}

impl Snapshot {
    /// The node a reference names: a pinned version, or the latest.
    pub fn resolve(&self, r: &FeatureRef) -> Result<Arc<Node>> {
        let versions = self.definitions.get(&r.name).ok_or_else(|| {
            Error::NotFound(format!(
                "no feature named `{}`; `fstore ls` lists them",
                r.name
            ))
        })?;
        let version = match r.version {
            Some(v) => v,
            None => versions.len() as u32,
        };
        self.nodes
            .get(&(r.name.clone(), version))
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "feature `{}` has no version {version} (latest is {})",
                    r.name,
                    versions.len()
                ))
            })
    }

    pub fn versions(&self, name: &str) -> &[api::FeatureDefinition] {
        self.definitions.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn latest(&self) -> impl Iterator<Item = Arc<Node>> + '_ {
        self.definitions.iter().filter_map(|(name, versions)| {
            self.nodes
                .get(&(name.clone(), versions.len() as u32))
                .cloned()
        })
    }

    /// Every feature version that reads `id`, directly or not (not `id` itself).
    pub fn downstream(&self, id: &FeatureId) -> Vec<Arc<Node>> {
        let Some(start) = self.index.get(id) else {
            return Vec::new();
        };
        let mut seen = vec![*start];
        let mut stack = vec![*start];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            for d in self.graph.neighbors_directed(n, Direction::Outgoing) {
                if !seen.contains(&d) {
                    seen.push(d);
                    stack.push(d);
                    if let Some(node) = self.nodes.get(&self.graph[d]) {
                        out.push(node.clone());
                    }
                }
            }
        }
        out
    }

    /// Direct dependents of `id`, as `name@version`.
    pub fn dependents(&self, id: &FeatureId) -> Vec<String> {
        let Some(n) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .graph
            .neighbors_directed(*n, Direction::Outgoing)
            .map(|d| format!("{}@{}", self.graph[d].0, self.graph[d].1))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
