//! What the store tells callers about itself: the feature list, one feature's
//! definition with its dependencies both ways, versions, flow and staleness view, and the
//! flows that workers serve with their models.

use fstore_proto::api;
use fstore_substrate::Substrate;
use fstore_substrate::convert::api_type;
use fstore_substrate::store::FlowEntry;

use crate::Result;
use crate::names::FeatureRef;
use crate::registry::{NodeInput, Snapshot};
use crate::served::ServedStats;
use fstore_proto::wire::ServedReport;

/// The latest version of every feature whose name starts with `prefix`.
pub fn list_features(snapshot: &Snapshot, prefix: &str) -> api::ListFeaturesResponse {
    let features = snapshot
        .latest()
        .filter(|n| n.name.starts_with(prefix))
        .map(|n| api::FeatureSummary {
            name: n.name.clone(),
            latest_version: n.version,
            entity_type: n.definition.entity_type.clone(),
            flow: n.flow.to_string(),
            value_type: api_type(n.value_type) as i32,
            ttl_ms: n.ttl_ms,
            owner: n.definition.owner.clone(),
            description: n.definition.description.clone(),
        })
        .collect();
    api::ListFeaturesResponse { features }
}

/// One feature version in full.
pub async fn describe_feature(
    substrate: &Substrate,
    tenant: &str,
    snapshot: &Snapshot,
    served: &ServedStats,
    others: &[ServedReport],
    feature: &str,
) -> Result<api::DescribeFeatureResponse> {
    let node = snapshot.resolve(&FeatureRef::parse(feature)?)?;
    let mut dependencies: Vec<String> = node
        .inputs
        .iter()
        .filter_map(|i| match i {
            NodeInput::Feature { node, .. } => Some(vec![node.id.clone()]),
            NodeInput::Related { via, target, .. } => Some(
                via.iter()
                    .chain(target.as_ref())
                    .map(|n| n.id.clone())
                    .collect(),
            ),
            NodeInput::Request { .. } => None,
        })
        .flatten()
        .collect();
    dependencies.sort();
    dependencies.dedup();
    let flow = substrate
        .directory
        .list()
        .await?
        .iter()
        .find(|f| f.spec.id == node.flow)
        .map(flow_info);
    Ok(api::DescribeFeatureResponse {
        definition: Some(node.definition.clone()),
        lineage_hash: node.lineage.to_string(),
        value_type: api_type(node.value_type) as i32,
        dependencies,
        dependents: snapshot.dependents(&(node.name.clone(), node.version)),
        versions: snapshot
            .versions(&node.name)
            .iter()
            .map(|d| d.version)
            .collect(),
        flow,
        stats: Some(crate::served::merge(
            std::iter::once(served.of(tenant, &node.id)).chain(
                others
                    .iter()
                    .filter_map(|r| r.features.get(&node.id).cloned()),
            ),
        )),
    })
}

/// Every flow some worker advertised, with its live workers, their slots and models,
/// and the jobs queued for it: in all, and `tenant`'s (a caller sees no other tenant's).
pub async fn list_flows(substrate: &Substrate, tenant: &str) -> Result<api::ListFlowsResponse> {
    let entries = substrate.directory.list().await?;
    let depths =
        futures::future::try_join_all(entries.iter().map(|e| substrate.queue.depth(&e.spec.id)))
            .await?;
    let flows = entries
        .iter()
        .zip(depths)
        .map(|(entry, depth)| api::FlowInfo {
            queued: depth.total,
            tenant_queued: depth.of(tenant),
            ..flow_info(entry)
        })
        .collect();
    Ok(api::ListFlowsResponse { flows })
}

/// The API view of a directory entry.
fn flow_info(f: &FlowEntry) -> api::FlowInfo {
    api::FlowInfo {
        name: f.spec.id.name.clone(),
        version: f.spec.id.version,
        inputs: f
            .spec
            .inputs
            .iter()
            .map(|i| api::FlowInput {
                name: i.name.clone(),
                value_type: api_type(i.value_type) as i32,
            })
            .collect(),
        output: api_type(f.spec.output) as i32,
        batchable: f.spec.batchable,
        description: f.spec.description.clone(),
        params: f.spec.params.iter().map(|p| p.name.clone()).collect(),
        entity_types: f.spec.entity_types.clone(),
        live_workers: f.live_workers,
        slots: f.slots,
        models: f
            .models
            .iter()
            .map(|(worker, m)| api::ModelStatus {
                worker: worker.clone(),
                name: m.name.clone(),
                path: m.path.clone(),
                sha256: m.sha256.clone(),
                loaded: m.loaded,
                load_ms: m.load_ms,
                loads: m.loads,
            })
            .collect(),
        queued: 0,
        tenant_queued: 0,
    }
}
