//! The registry: feature definitions by name and version, resolved into a dependency
//! DAG (petgraph) whose nodes carry everything the planner needs: the flow, the bound
//! inputs, the lineage hash and the topologically sorted closure.
//!
//! A dependency written `name` follows the latest version of `name`; `name@v` pins it.
//! The lineage hash covers a feature's version, flow, params and its dependencies'
//! lineage hashes, so a new upstream version gives every downstream feature new value
//! keys. Every change builds a new immutable [`Snapshot`]; readers never wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use fstore_flows::{FlowId, FlowSpec, Params, ValueType};
use fstore_proto::api;
use fstore_substrate::{Definitions, FlowDirectory, Substrate};
use petgraph::Direction;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::names::{FeatureRef, check_name};
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
    /// Hex, 32 characters.
    pub lineage: String,
    pub inputs: Vec<NodeInput>,
    pub ttl_ms: u64,
    /// Everything this node reads, directly or not, dependencies first.
    pub upstream: Vec<Arc<Node>>,
}

impl Node {
    pub fn id(&self) -> String {
        self.id.clone()
    }
}

/// An immutable view of the registry.
#[derive(Debug, Default)]
pub struct Snapshot {
    definitions: BTreeMap<String, Vec<api::FeatureDefinition>>,
    nodes: HashMap<FeatureId, Arc<Node>>,
    graph: DiGraph<FeatureId, ()>,
    index: HashMap<FeatureId, NodeIndex>,
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

/// What registering a definition did.
#[derive(Debug)]
pub struct Registered {
    pub node: Arc<Node>,
    /// False when an identical definition was already the latest version.
    pub created: bool,
}

/// The registry. Cheap to clone; all clones share state. Definitions are kept in the
/// substrate's [`Definitions`] store, so every replica sees every registration.
#[derive(Clone)]
pub struct Registry {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    /// Serialises local writers; replicas race through the definitions store.
    write: Arc<tokio::sync::Mutex<()>>,
    definitions: Arc<dyn Definitions>,
    directory: Arc<dyn FlowDirectory>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry over the substrate's definitions, loaded with what is stored there.
    pub async fn load(substrate: &Substrate) -> Result<Self> {
        let r = Registry {
            snapshot: Arc::new(RwLock::new(Arc::new(Snapshot::default()))),
            write: Arc::new(tokio::sync::Mutex::new(())),
            definitions: substrate.definitions.clone(),
            directory: substrate.directory.clone(),
        };
        let _writer = r.write.lock().await;
        r.reload().await?;
        drop(_writer);
        Ok(r)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn flows(&self) -> Result<Vec<FlowSpec>> {
        Ok(self
            .directory
            .list()
            .await?
            .into_iter()
            .map(|f| f.spec)
            .collect())
    }

    /// Rebuilds the snapshot from every stored definition. Callers hold the write lock.
    async fn reload(&self) -> Result<()> {
        let mut definitions: BTreeMap<String, Vec<api::FeatureDefinition>> = BTreeMap::new();
        for d in self.definitions.list().await? {
            definitions.entry(d.name.clone()).or_default().push(d);
        }
        for versions in definitions.values_mut() {
            versions.sort_by_key(|d| d.version);
            // Versions are taken in order; a gap means a registration is still landing.
            let n = versions
                .iter()
                .enumerate()
                .take_while(|(i, d)| d.version as usize == i + 1)
                .count();
            versions.truncate(n);
        }
        let next = build(definitions, &self.flows().await?)?;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// Takes in a definition another replica registered.
    pub async fn apply(&self, def: api::FeatureDefinition) -> Result<()> {
        let _writer = self.write.lock().await;
        let known = self.snapshot().versions(&def.name).len() as u32;
        if def.version <= known {
            return Ok(());
        }
        self.reload().await
    }

    /// Validates `def` against the flows and the current features, and adds it as a new
    /// version unless the latest version is identical.
    pub async fn register(&self, def: api::FeatureDefinition) -> Result<Registered> {
        let _writer = self.write.lock().await;
        let mut def = normalise(def)?;
        let flows = self.flows().await?;
        for _ in 0..16 {
            let current = self.snapshot();
            let versions = current.versions(&def.name);
            if let Some(latest) = versions.last() {
                let mut unversioned = latest.clone();
                unversioned.version = 0;
                def.version = 0;
                if unversioned == def {
                    let node = current.resolve(&FeatureRef {
                        name: def.name.clone(),
                        version: Some(latest.version),
                    })?;
                    return Ok(Registered {
                        node,
                        created: false,
                    });
                }
            }
            def.version = versions.len() as u32 + 1;
            let mut definitions = current.definitions.clone();
            definitions
                .entry(def.name.clone())
                .or_default()
                .push(def.clone());
            let next = build(definitions, &flows)?;
            if !self.definitions.create(&def).await? {
                // Another replica took this version first: catch up and try again.
                self.reload().await?;
                continue;
            }
            let node = next.resolve(&FeatureRef {
                name: def.name.clone(),
                version: Some(def.version),
            })?;
            *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
            return Ok(Registered {
                node,
                created: true,
            });
        }
        Err(Error::Substrate(fstore_substrate::Error::Unavailable(
            format!(
                "could not take a version for `{}`: too many concurrent registrations",
                def.name
            ),
        )))
    }

    /// Applies definitions registered on other replicas until `shutdown`.
    pub async fn follow(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut stream = match self.definitions.watch().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the registry; other replicas' registrations arrive only on restart");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = futures::StreamExt::next(&mut stream) => match next {
                    Some(def) => {
                        if let Err(e) = self.apply(def).await {
                            tracing::warn!(error = %e, "applying a registration from another replica failed");
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

/// Checks the fields a definition must have and clears the ones the registry assigns.
fn normalise(mut def: api::FeatureDefinition) -> Result<api::FeatureDefinition> {
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
            None => {
                return Err(Error::Definition(format!(
                    "feature `{}`, input `{input}` needs a source: a feature or a request input",
                    def.name
                )));
            }
        }
    }
    Ok(def)
}

/// Resolves every definition into the graph and nodes, refusing cycles, unknown
/// dependencies and flows, and type mismatches.
fn build(
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
    let mut deps_of: HashMap<FeatureId, Vec<(String, FeatureId)>> = HashMap::new();
    for (name, versions) in &definitions {
        for d in versions {
            let me = (name.clone(), d.version);
            for (input, binding) in &d.inputs {
                if let Some(api::input_binding::Source::Feature(f)) = &binding.source {
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
                        def.entity_type,
                        dep.id(),
                        dep.definition.entity_type
                    )));
                }
                if dep.value_type != declared.value_type {
                    return Err(Error::Definition(format!(
                        "feature `{name}`: flow {flow_id} input `{input}` takes {} but `{}` is {}",
                        declared.value_type,
                        dep.id(),
                        dep.value_type
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

    let lineage = lineage_hash(def, &flow_id, &inputs);
    let mut upstream: Vec<Arc<Node>> = Vec::new();
    for i in &inputs {
        if let NodeInput::Feature { node, .. } = i {
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

fn lineage_hash(def: &api::FeatureDefinition, flow: &FlowId, inputs: &[NodeInput]) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field("fstore.lineage.v1");
    field(&def.name);
    field(&def.version.to_string());
    field(&def.entity_type);
    field(&flow.to_string());
    let params: BTreeMap<_, _> = def.params.iter().collect();
    for (k, v) in params {
        field(k);
        field(v);
    }
    let mut bound: Vec<(String, String)> = inputs
        .iter()
        .map(|i| match i {
            NodeInput::Feature { input, node } => {
                (input.clone(), format!("feature:{}", node.lineage))
            }
            NodeInput::Request { input, name, .. } => (input.clone(), format!("request:{name}")),
        })
        .collect();
    bound.sort();
    for (k, v) in bound {
        field(&k);
        field(&v);
    }
    h.finalize().to_hex()[..32].to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use fstore_flows::Catalog;

    async fn registry() -> Registry {
        let substrate = fstore_substrate::embedded::substrate(&Default::default());
        let adverts = fstore_substrate::worker::adverts(&Catalog::builtins());
        substrate
            .directory
            .advertise("w", &adverts)
            .await
            .expect("advertise");
        Registry::load(&substrate).await.expect("registry")
    }

    fn def(name: &str, flow: &str, inputs: &[(&str, &str)]) -> api::FeatureDefinition {
        api::FeatureDefinition {
            name: name.into(),
            entity_type: "doc".into(),
            flow: flow.into(),
            ttl_ms: 60_000,
            inputs: inputs
                .iter()
                .map(|(k, v)| {
                    let source = match v.strip_prefix("request:") {
                        Some(r) => api::input_binding::Source::Request(r.into()),
                        None => api::input_binding::Source::Feature((*v).into()),
                    };
                    (
                        k.to_string(),
                        api::InputBinding {
                            source: Some(source),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn versions_and_lineage_follow_upstream() {
        let r = registry().await;
        let a = r.register(def("a", "test.probe@1", &[])).await.expect("a");
        assert!(a.created);
        let b = r
            .register(def("b", "num.affine@1", &[("x", "a")]))
            .await
            .expect("b");
        let again = r
            .register(def("b", "num.affine@1", &[("x", "a")]))
            .await
            .expect("b again");
        assert!(!again.created, "identical definition is not a new version");
        assert_eq!(again.node.version, 1);
        let mut a2 = def("a", "test.probe@1", &[]);
        a2.params.insert("value".into(), "2".into());
        r.register(a2).await.expect("a v2");
        let snap = r.snapshot();
        let b_now = snap
            .resolve(&FeatureRef::parse("b").expect("ref"))
            .expect("b");
        assert_ne!(
            b_now.lineage, b.node.lineage,
            "a new upstream version changes b's lineage"
        );
        assert_eq!(snap.dependents(&("a".into(), 2)), vec!["b@1".to_string()]);
        assert_eq!(
            b_now.upstream.iter().map(|n| n.id()).collect::<Vec<_>>(),
            vec!["a@2"]
        );
    }

    #[tokio::test]
    async fn refusals_name_the_problem() {
        let r = registry().await;
        let err = |e: Result<Registered>| e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err(r.register(def("b", "num.affine@1", &[("x", "nope")])).await)
                .contains("unknown feature `nope`")
        );
        assert!(
            err(r.register(def("b", "nope.flow@1", &[])).await)
                .contains("unknown flow `nope.flow@1`")
        );
        r.register(def("t", "text.hash_embed@1", &[("text", "request:text")]))
            .await
            .expect("t");
        assert!(
            err(r.register(def("b", "num.affine@1", &[("x", "t")])).await)
                .contains("takes f64 but `t@1` is tensor")
        );
        let mut other = def("u", "test.probe@1", &[]);
        other.entity_type = "user".into();
        r.register(other).await.expect("u");
        assert!(
            err(r.register(def("b", "num.affine@1", &[("x", "u")])).await)
                .contains("about `user` entities")
        );
        assert!(err(r.register(def("b", "num.affine@1", &[])).await).contains("needs input `x`"));
        // A cycle through a floating reference: a@2 reads c, c reads a (latest).
        r.register(def("a", "test.probe@1", &[])).await.expect("a");
        r.register(def("c", "num.affine@1", &[("x", "a")]))
            .await
            .expect("c");
        let e = err(r.register(def("a", "test.probe@1", &[("x", "c")])).await);
        assert!(e.contains("dependency cycle: "), "{e}");
        assert!(e.contains("a@2") && e.contains("c@1"), "{e}");
        assert_eq!(
            r.snapshot().versions("a").len(),
            1,
            "a refused definition is not stored"
        );
    }
}
