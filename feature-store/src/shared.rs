//! Features shared read-only with named tenants. The owner lists readers in a feature's
//! `shared_with`; a reader asks for `<owner>/<name>[@version]` and is answered the
//! owner's values, computed from the owner's definitions in the owner's namespace (and
//! queue share), so it can read them and never change them. One call reads one
//! namespace: the caller's own features, or features one owner shared. A feature that
//! does not exist and one not shared with the caller answer alike.

use std::sync::Arc;

use fstore_proto::api;

use crate::names::{FeatureRef, check_tenant};
use crate::registry::{Node, Registry, Snapshot};
use crate::{Error, Result};

/// `owner/name` → (Some(owner), name); `name` → (None, name).
pub fn split(reference: &str) -> (Option<&str>, &str) {
    match reference.split_once('/') {
        Some((owner, name)) => (Some(owner), name),
        None => (None, reference),
    }
}

/// The owner whose shared features `features` name (None: the caller's own), refusing
/// a call that mixes namespaces.
pub(crate) fn owner_of(features: &[String]) -> Result<Option<String>> {
    let mut owners = features.iter().map(|f| split(f).0);
    let Some(first) = owners.next() else {
        return Ok(None);
    };
    if owners.any(|o| o != first) {
        return Err(Error::InvalidArgument(
            "a call reads one namespace: your own features, or features one owner shared \
             (`owner/name`); ask for the others in another call"
                .into(),
        ));
    }
    if let Some(o) = first {
        check_tenant(o)?;
    }
    Ok(first.map(str::to_string))
}

/// `req` as the owner names things: `owner/` taken off its features and staleness keys.
pub(crate) fn in_owner_terms(req: &api::GetFeaturesRequest) -> api::GetFeaturesRequest {
    let strip = |f: &String| split(f).1.to_string();
    api::GetFeaturesRequest {
        features: req.features.iter().map(strip).collect(),
        max_staleness_ms_by_feature: req
            .max_staleness_ms_by_feature
            .iter()
            .map(|(k, v)| (strip(k), *v))
            .collect(),
        ..req.clone()
    }
}

/// The node `name` (as the owner names it) of `owner`'s `snapshot`, if it is shared
/// with `caller`.
pub(crate) fn resolve(
    snapshot: &Snapshot,
    caller: &str,
    owner: &str,
    name: &str,
) -> Result<Arc<Node>> {
    let hidden = || {
        Error::NotFound(format!(
            "no feature `{owner}/{name}` is shared with this tenant; its owner lists readers in `shared_with`"
        ))
    };
    let node = snapshot
        .resolve(&FeatureRef::parse(name)?)
        .map_err(|_| hidden())?;
    if !node.definition.shared_with.iter().any(|t| t == caller) {
        return Err(hidden());
    }
    Ok(node)
}

/// A shared feature as its reader sees it: the definition and its dependencies, not
/// the owner's traffic (stats) or which of the owner's features read it.
pub(crate) async fn describe(
    substrate: &fstore_substrate::Substrate,
    owner: &str,
    snapshot: &Snapshot,
    node: &Node,
) -> Result<api::DescribeFeatureResponse> {
    let unseen = crate::served::ServedStats::default();
    let mut seen =
        crate::describe::describe_feature(substrate, owner, snapshot, &unseen, &[], &node.id)
            .await?;
    seen.stats = None;
    seen.dependents.clear();
    Ok(seen)
}

/// The features other tenants shared with `caller`, named `owner/name`, whose names
/// start with `prefix` (as the caller writes them).
pub(crate) fn listed(registry: &Registry, caller: &str, prefix: &str) -> Vec<api::FeatureSummary> {
    let mut out = Vec::new();
    for owner in registry.tenants() {
        if owner == caller {
            continue;
        }
        let snapshot = registry.snapshot(&owner);
        let theirs = crate::describe::list_features(&snapshot, "");
        for mut f in theirs.features {
            let shared = snapshot
                .versions(&f.name)
                .last()
                .is_some_and(|d| d.shared_with.iter().any(|t| t == caller));
            f.name = format!("{owner}/{}", f.name);
            if shared && f.name.starts_with(prefix) {
                out.push(f);
            }
        }
    }
    out
}
