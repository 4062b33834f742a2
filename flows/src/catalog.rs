//! The flows a process can run, by `name@version`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Flow, FlowId, FlowSpec, builtin};

/// An immutable set of flows. Cheap to clone.
#[derive(Clone, Default)]
pub struct Catalog {
    flows: BTreeMap<FlowId, Arc<dyn Flow>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.flows.keys()).finish()
    }
}

impl Catalog {
    pub fn new() -> Self {
        Catalog::default()
    }

    /// The built-in flows of [`crate::builtin`].
    pub fn builtins() -> Self {
        let mut c = Catalog::new();
        for flow in builtin::all() {
            c.insert(flow);
        }
        c
    }

    /// Adds a flow, replacing one with the same id.
    pub fn insert(&mut self, flow: Arc<dyn Flow>) {
        self.flows.insert(flow.spec().id.clone(), flow);
    }

    pub fn with(mut self, flow: Arc<dyn Flow>) -> Self {
        self.insert(flow);
        self
    }

    pub fn get(&self, id: &FlowId) -> Option<&Arc<dyn Flow>> {
        self.flows.get(id)
    }

    pub fn specs(&self) -> impl Iterator<Item = &FlowSpec> {
        self.flows.values().map(|f| f.spec())
    }

    /// Keeps only the flows whose name or `name@version` is listed.
    pub fn only(&self, names: &[String]) -> Self {
        let flows = self
            .flows
            .iter()
            .filter(|(id, _)| names.iter().any(|n| *n == id.name || *n == id.to_string()))
            .map(|(id, f)| (id.clone(), f.clone()))
            .collect();
        Catalog { flows }
    }

    pub fn ids(&self) -> impl Iterator<Item = &FlowId> {
        self.flows.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}
