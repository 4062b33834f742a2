//! The registry: feature definitions by name and version, resolved into a dependency
//! DAG (petgraph) whose nodes carry everything the planner needs: the flow, the bound
//! inputs, the lineage hash and the topologically sorted closure.
//!
//! A dependency written `name` follows the latest version of `name`; `name@v` pins it.
//! The lineage hash covers a feature's version, flow, params and its dependencies'
//! lineage hashes, so a new upstream version gives every downstream feature new value
//! keys. Every change builds a new immutable [`Snapshot`]; readers never wait.
//! Definitions live in the substrate, so every replica sees every registration.
//!
//! Each tenant has its own namespace: its own features, versions and DAG (one snapshot
//! per tenant). A feature reads only features of its own tenant, so no tenant can
//! change what another's features compute.
//!
//! - [`snapshot`]: nodes and the immutable snapshot
//! - [`build`]: checking definitions and resolving them into the DAG

mod build;
mod snapshot;

use std::collections::{BTreeMap, HashMap, HashSet};

use std::sync::{Arc, RwLock};

use fstore_flows::{FlowId, FlowSpec};
use fstore_proto::api;
use fstore_substrate::{Definitions, FlowDirectory, Substrate};

pub use build::MAX_DEFINITION_BYTES;
pub use snapshot::{Aggregate, FeatureId, Node, NodeInput, Snapshot};

use crate::names::FeatureRef;
use crate::{Error, Result};

/// The most definitions one registration call may carry.
pub const MAX_DEFINITIONS_PER_CALL: usize = 1000;

/// The registry. Cheap to clone; all clones share state. Definitions are kept in the
/// substrate's [`Definitions`] store, so every replica sees every registration.
#[derive(Clone)]
pub struct Registry {
    /// Per tenant, its current snapshot.
    snapshots: Arc<RwLock<HashMap<String, Arc<Snapshot>>>>,
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
            snapshots: Arc::new(RwLock::new(HashMap::new())),
            write: Arc::new(tokio::sync::Mutex::new(())),
            definitions: substrate.definitions.clone(),
            directory: substrate.directory.clone(),
        };
        let _writer = r.write.lock().await;
        r.reload(None).await?;
        drop(_writer);
        Ok(r)
    }

    /// The current snapshot of `tenant`'s features (empty for a tenant without any).
    pub fn snapshot(&self, tenant: &str) -> Arc<Snapshot> {
        self.snapshots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Every tenant with features.
    pub fn tenants(&self) -> Vec<String> {
        let snapshots = self.snapshots.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = snapshots.keys().cloned().collect();
        out.sort();
        out
    }

    fn set_snapshot(&self, tenant: &str, next: Snapshot) {
        self.snapshots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string(), Arc::new(next));
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

    /// Rebuilds the snapshots of `only` that tenant (None: every tenant) from the
    /// stored definitions. Callers hold the write lock. A tenant whose definitions do
    /// not resolve keeps its snapshot: one tenant never blocks another.
    pub(crate) async fn reload(&self, only: Option<&str>) -> Result<()> {
        let mut tenants: BTreeMap<String, BTreeMap<String, Vec<api::FeatureDefinition>>> =
            BTreeMap::new();
        let stored = self.definitions.list().await?;
        for d in stored
            .into_iter()
            .filter(|d| only.is_none_or(|t| t == d.tenant))
        {
            tenants
                .entry(d.tenant.clone())
                .or_default()
                .entry(d.name.clone())
                .or_default()
                .push(d);
        }
        let flows = self.flows().await?;
        for (tenant, mut definitions) in tenants {
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
            match build::build(definitions, &flows) {
                Ok(next) => self.set_snapshot(&tenant, next),
                Err(e) => tracing::warn!(%tenant, error = %e,
                    "the tenant's stored definitions do not resolve; it keeps its last snapshot"),
            }
        }
        Ok(())
    }

    /// Takes in a definition another replica registered.
    pub async fn apply(&self, def: api::FeatureDefinition) -> Result<()> {
        let _writer = self.write.lock().await;
        let known = self.snapshot(&def.tenant).versions(&def.name).len() as u32;
        if def.version <= known {
            return Ok(());
        }
        self.reload(Some(&def.tenant)).await
    }

    /// Registers `defs` in order, all or nothing: each is checked, then all are resolved
    /// together (a later one may read an earlier one), and only if every one is accepted
    /// are they stored. A definition identical to its feature's latest version is not a
    /// new version. A flow that no worker serves right now is refused unless `force`
    /// (and some worker advertised it once: its spec is needed to check types).
    ///
    /// Another replica registering the same feature at once can take a version first;
    /// then this call catches up and resolves again, so what it stores was always
    /// resolved against the registry it lands in.
    pub async fn register(
        &self,
        tenant: &str,
        defs: Vec<api::FeatureDefinition>,
        force: bool,
    ) -> Result<Vec<api::RegisterFeatureResponse>> {
        if defs.is_empty() {
            return Err(Error::InvalidArgument(
                "no definitions: send at least one".into(),
            ));
        }
        if defs.len() > MAX_DEFINITIONS_PER_CALL {
            return Err(Error::InvalidArgument(format!(
                "{} definitions is more than the limit of {MAX_DEFINITIONS_PER_CALL} per call; split the file",
                defs.len()
            )));
        }
        let defs = defs
            .into_iter()
            .map(|d| {
                let mut d = build::normalise(d)?;
                d.tenant = tenant.to_string();
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        let _writer = self.write.lock().await;
        let entries = self.directory.list().await?;
        if !force {
            for def in &defs {
                let Ok(id) = def.flow.parse::<FlowId>() else {
                    continue;
                };
                if entries
                    .iter()
                    .any(|f| f.spec.id == id && f.live_workers == 0)
                {
                    return Err(Error::NoWorker {
                        feature: def.name.clone(),
                        flow: id.to_string(),
                    });
                }
            }
        }
        let flows: Vec<_> = entries.into_iter().map(|f| f.spec).collect();
        // Versions this call stored, across catch-up rounds.
        let mut stored: HashSet<FeatureId> = HashSet::new();
        for _ in 0..16 {
            let current = self.snapshot(tenant);
            let mut definitions = current.definitions.clone();
            let mut ids = Vec::with_capacity(defs.len());
            let mut new = Vec::new();
            for def in &defs {
                let versions = definitions.entry(def.name.clone()).or_default();
                let unchanged = versions.last().is_some_and(|latest| {
                    let mut unversioned = latest.clone();
                    unversioned.version = 0;
                    unversioned == *def
                });
                if !unchanged {
                    let mut versioned = def.clone();
                    versioned.version = versions.len() as u32 + 1;
                    versions.push(versioned.clone());
                    new.push(versioned);
                }
                let latest = versions.len() as u32;
                ids.push((def.name.clone(), latest));
            }
            // Every definition is resolved before any is stored.
            let next = build::build(definitions, &flows)?;
            let mut created = Vec::new();
            let mut outcome = Ok(true);
            for def in &new {
                match self.definitions.create(def).await {
                    Ok(true) => created.push(def),
                    other => {
                        outcome = other;
                        break;
                    }
                }
            }
            match outcome {
                Ok(true) => {}
                // Another replica took a version first, or the store failed: take back
                // what this round stored, so the batch lands whole or not at all.
                failed => {
                    self.take_back(&created).await;
                    failed?;
                    // A race: catch up and resolve again.
                    self.reload(Some(tenant)).await?;
                    continue;
                }
            }
            stored.extend(created.iter().map(|d| (d.name.clone(), d.version)));
            let answers = ids
                .into_iter()
                .map(|(name, version)| {
                    let node = next.resolve(&FeatureRef {
                        name: name.clone(),
                        version: Some(version),
                    })?;
                    Ok(api::RegisterFeatureResponse {
                        feature: Some(node.definition.clone()),
                        lineage_hash: node.lineage.to_string(),
                        created: stored.contains(&(name, version)),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            self.set_snapshot(tenant, next);
            return Ok(answers);
        }
        Err(Error::Substrate(fstore_substrate::Error::Unavailable(
            "could not take versions: too many concurrent registrations of the same features; retry"
                .into(),
        )))
    }

    /// Removes definitions this call created, newest first. Best effort: a replica that
    /// read them in between drops them at its next reload (versions after a gap are not
    /// taken), and a failure here is logged.
    async fn take_back(&self, created: &[&api::FeatureDefinition]) {
        for def in created.iter().rev() {
            if let Err(e) = self
                .definitions
                .remove(&def.tenant, &def.name, def.version)
                .await
            {
                tracing::warn!(feature = %def.name, version = def.version, error = %e,
                    "could not take back a definition of a batch that was not stored whole");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use fstore_flows::Catalog;

    /// The tenant the tests register as.
    const T: &str = "t";

    /// An embedded substrate whose directory lists the built-in flows.
    async fn substrate() -> Substrate {
        let substrate =
            fstore_substrate::embedded::substrate(&crate::Config::default().embedded_options())
                .expect("substrate");
        let adverts = fstore_substrate::worker::adverts(&Catalog::builtins());
        substrate
            .directory
            .advertise("w", &adverts)
            .await
            .expect("advertise");
        substrate
    }

    async fn registry() -> Registry {
        Registry::load(&substrate().await).await.expect("registry")
    }

    async fn one(r: &Registry, d: api::FeatureDefinition) -> Result<api::RegisterFeatureResponse> {
        let mut done = r.register(T, vec![d], false).await?;
        done.pop()
            .ok_or_else(|| Error::Internal("no answer".into()))
    }

    fn node(r: &Registry, feature: &str) -> Arc<Node> {
        r.snapshot(T)
            .resolve(&FeatureRef::parse(feature).expect("ref"))
            .expect("registered")
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
        let a = one(&r, def("a", "test.probe@1", &[])).await.expect("a");
        assert!(a.created);
        let b = one(&r, def("b", "num.affine@1", &[("x", "a")]))
            .await
            .expect("b");
        let again = one(&r, def("b", "num.affine@1", &[("x", "a")]))
            .await
            .expect("b again");
        assert!(!again.created, "identical definition is not a new version");
        assert_eq!(again.feature.map(|f| f.version), Some(1));
        let mut a2 = def("a", "test.probe@1", &[]);
        a2.params.insert("value".into(), "2".into());
        one(&r, a2).await.expect("a v2");
        let b_now = node(&r, "b");
        assert_ne!(
            b_now.lineage.as_str(),
            b.lineage_hash,
            "a new upstream version changes b's lineage"
        );
        assert_eq!(
            r.snapshot(T).dependents(&("a".into(), 2)),
            vec!["b@1".to_string()]
        );
        assert_eq!(
            b_now
                .upstream
                .iter()
                .map(|n| n.id.clone())
                .collect::<Vec<_>>(),
            vec!["a@2"]
        );
    }

    #[tokio::test]
    async fn refusals_name_the_problem() {
        let r = registry().await;
        let err = |e: Result<api::RegisterFeatureResponse>| {
            e.err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(
            err(one(&r, def("b", "num.affine@1", &[("x", "nope")])).await)
                .contains("unknown feature `nope`")
        );
        assert!(
            err(one(&r, def("b", "nope.flow@1", &[])).await).contains("unknown flow `nope.flow@1`")
        );
        one(
            &r,
            def("t", "text.hash_embed@1", &[("text", "request:text")]),
        )
        .await
        .expect("t");
        assert!(
            err(one(&r, def("b", "num.affine@1", &[("x", "t")])).await)
                .contains("takes f64 but `t@1` is tensor")
        );
        let mut other = def("u", "test.probe@1", &[]);
        other.entity_type = "user".into();
        one(&r, other).await.expect("u");
        assert!(
            err(one(&r, def("b", "num.affine@1", &[("x", "u")])).await)
                .contains("about `user` entities")
        );
        assert!(err(one(&r, def("b", "num.affine@1", &[])).await).contains("needs input `x`"));
        // A cycle through a floating reference: a@2 reads c, c reads a (latest).
        one(&r, def("a", "test.probe@1", &[])).await.expect("a");
        one(&r, def("c", "num.affine@1", &[("x", "a")]))
            .await
            .expect("c");
        let e = err(one(&r, def("a", "test.probe@1", &[("x", "c")])).await);
        assert!(e.contains("dependency cycle: "), "{e}");
        assert!(e.contains("a@2") && e.contains("c@1"), "{e}");
        assert_eq!(
            r.snapshot(T).versions("a").len(),
            1,
            "a refused definition is not stored"
        );
    }

    /// A flow whose workers are all away (restarting, cut off) is known but not served:
    /// the refusal says so and is worth retrying, unlike a definition that is wrong.
    #[tokio::test]
    async fn a_flow_no_worker_serves_now_is_refused_until_one_does() {
        let substrate = substrate().await;
        let r = Registry::load(&substrate).await.expect("registry");
        substrate.directory.withdraw("w").await.expect("withdraw");
        let affine = def("a", "num.affine@1", &[("x", "request:x")]);
        let refused = one(&r, affine.clone()).await.expect_err("no worker");
        assert!(
            matches!(&refused, Error::NoWorker { flow, .. } if flow == "num.affine@1"),
            "{refused:?}"
        );
        let status = tonic::Status::from(refused);
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("force"), "{status:?}");
        // With force, or once a worker serves the flow again, it is registered.
        let forced = r.register(T, vec![affine.clone()], true).await;
        assert!(forced.is_ok(), "{forced:?}");
        let adverts = fstore_substrate::worker::adverts(&Catalog::builtins());
        substrate
            .directory
            .advertise("w2", &adverts)
            .await
            .expect("advertise");
        let mut again = affine;
        again.ttl_ms = 30_000;
        assert!(one(&r, again).await.is_ok());
    }

    #[tokio::test]
    async fn a_batch_is_all_or_nothing() {
        let r = registry().await;
        // The third definition reads a feature that does not exist: none lands.
        let batch = vec![
            def("a", "test.probe@1", &[]),
            def("b", "num.affine@1", &[("x", "a")]),
            def("c", "num.affine@1", &[("x", "nope")]),
        ];
        let e = r
            .register(T, batch, false)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("unknown feature `nope`")));
        assert!(
            r.snapshot(T).versions("a").is_empty(),
            "nothing of a refused batch is stored"
        );
        assert!(r.snapshot(T).versions("b").is_empty());
        // A batch whose later definition reads an earlier one lands whole, in order.
        let done = r
            .register(
                T,
                vec![
                    def("a", "test.probe@1", &[]),
                    def("b", "num.affine@1", &[("x", "a")]),
                ],
                false,
            )
            .await
            .expect("batch");
        assert_eq!(done.len(), 2);
        assert!(done.iter().all(|d| d.created));
        assert_eq!(node(&r, "b").upstream.len(), 1);
    }

    #[tokio::test]
    async fn sizes_and_ttls_are_bounded() {
        let r = registry().await;
        let mut big = def("big", "test.probe@1", &[]);
        big.description = "x".repeat(5_000_000);
        let e = one(&r, big)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("more than the limit of 65536"), "{e}");
        let mut forever = def("forever", "test.probe@1", &[]);
        forever.ttl_ms = u64::MAX;
        let e = one(&r, forever)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("ttl_ms 18446744073709551615 is more than the limit"),
            "{e}"
        );
    }

    /// A definitions store that refuses its `fail_at`-th create as unreachable.
    struct FailingDefinitions {
        inner: Arc<dyn Definitions>,
        creates: std::sync::atomic::AtomicUsize,
        fail_at: usize,
    }

    #[async_trait::async_trait]
    impl Definitions for FailingDefinitions {
        async fn create(
            &self,
            def: &api::FeatureDefinition,
        ) -> Result<bool, fstore_substrate::Error> {
            let n = self
                .creates
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n + 1 == self.fail_at {
                return Err(fstore_substrate::Error::Unavailable("injected".into()));
            }
            self.inner.create(def).await
        }

        async fn list(&self) -> Result<Vec<api::FeatureDefinition>, fstore_substrate::Error> {
            self.inner.list().await
        }

        async fn remove(
            &self,
            tenant: &str,
            name: &str,
            version: u32,
        ) -> Result<bool, fstore_substrate::Error> {
            self.inner.remove(tenant, name, version).await
        }

        async fn watch(
            &self,
        ) -> Result<
            futures::stream::BoxStream<'static, api::FeatureDefinition>,
            fstore_substrate::Error,
        > {
            self.inner.watch().await
        }
    }

    #[tokio::test]
    async fn each_tenant_has_its_own_features() {
        let r = registry().await;
        one(&r, def("a", "test.probe@1", &[])).await.expect("t's a");
        let mut theirs = def("a", "test.probe@1", &[]);
        theirs.params.insert("value".into(), "666".into());
        let mut done = r.register("u", vec![theirs], false).await.expect("u's a");
        let theirs = done.pop().expect("answer");
        assert_eq!(
            theirs.feature.as_ref().map(|d| d.version),
            Some(1),
            "u's own first version"
        );
        assert_eq!(
            theirs.feature.as_ref().map(|d| d.tenant.as_str()),
            Some("u")
        );
        let mine = node(&r, "a");
        assert_eq!(mine.definition.version, 1, "t's a is untouched");
        assert!(!mine.definition.params.contains_key("value"));
        assert_ne!(mine.lineage.to_string(), theirs.lineage_hash);
        assert!(r.snapshot("nobody").versions("a").is_empty());
        // A replica loading the store sees both namespaces apart.
        let stored = r.definitions.list().await.expect("list");
        assert_eq!(stored.len(), 2);
    }

    #[tokio::test]
    async fn a_batch_the_store_fails_halfway_is_taken_back() {
        let mut substrate = substrate().await;
        let store = substrate.definitions.clone();
        substrate.definitions = Arc::new(FailingDefinitions {
            inner: store.clone(),
            creates: Default::default(),
            fail_at: 3,
        });
        let r = Registry::load(&substrate).await.expect("registry");
        let batch = vec![
            def("a", "test.probe@1", &[]),
            def("b", "num.affine@1", &[("x", "a")]),
            def("c", "num.affine@1", &[("x", "b")]),
        ];
        let e = r.register(T, batch.clone(), false).await;
        assert!(e.is_err_and(|e| e.to_string().contains("injected")));
        assert!(
            store.list().await.expect("list").is_empty(),
            "the two definitions stored before the failure are taken back"
        );
        assert!(r.snapshot(T).versions("a").is_empty());
        // The store is back: the same batch lands whole.
        let done = r.register(T, batch, false).await.expect("batch");
        assert_eq!(done.len(), 3);
        assert_eq!(store.list().await.expect("list").len(), 3);
    }
}
