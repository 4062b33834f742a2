//! Conformance, listing and describing features and flows.

use super::*;

pub(crate) async fn lists_and_describes(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    let reg = h.register(probe("p", &[])).await?;
    assert!(reg.created);
    let same = h.register(probe("p", &[])).await?;
    assert!(
        !same.created,
        "an identical definition is not a new version"
    );
    h.register(feature("q", "num.affine@1", &[], &[("x", "p")], 600_000))
        .await?;
    let mut raw = h.client.raw.clone();
    let flows = raw
        .list_flows(h.client.req(api::ListFlowsRequest {}))
        .await?
        .into_inner();
    let probe_flow = flows
        .flows
        .iter()
        .find(|f| f.name == "test.probe")
        .ok_or_else(|| anyhow::anyhow!("no probe flow"))?;
    assert!(probe_flow.live_workers >= 1);
    let list = raw
        .list_features(h.client.req(api::ListFeaturesRequest {
            prefix: String::new(),
        }))
        .await?
        .into_inner();
    assert_eq!(
        list.features
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        vec!["p", "q"]
    );
    let d = h.client.describe("q@1").await?;
    assert_eq!(d.dependencies, vec!["p@1"]);
    assert_eq!(d.lineage_hash.len(), 32);
    assert_eq!(d.value_type(), api::ValueType::F64);
    // The operator's view: one miss, then two hits, all fresh.
    h.client.get(build::sync(&["s"], &["q"], 5_000)).await?;
    h.client.get(build::get(&["s"], &["q"])).await?;
    h.client.get(build::get(&["s"], &["q"])).await?;
    let d = h.client.describe("q").await?;
    let stats = d.stats.unwrap_or_default();
    assert_eq!(
        (stats.hits, stats.misses, stats.failures),
        (2, 1, 0),
        "{stats:?}"
    );
    assert!((stats.hit_rate - 2.0 / 3.0).abs() < 1e-9);
    assert!(stats.last_computed_at_ms > 0);
    assert_eq!(
        stats.ages.first().map(|b| (b.le.as_str(), b.count)),
        Some(("1s", 3))
    );
    h.stop().await;
    Ok(())
}

/// ListFlows shows a flow's jobs in all and the caller's tenant's (never another
/// tenant's), and the slots serving it, as they change.
pub(crate) async fn flows_show_the_callers_jobs_and_the_slots(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    let (acme, globex) = (h.client.with_tenant("acme"), h.client.with_tenant("globex"));
    for c in [&acme, &globex] {
        c.register(probe("slow", &[("delay_ms", "4000")])).await?;
    }
    acme.get(build::get(&["a1", "a2", "a3"], &["slow"])).await?;
    globex
        .get(build::get(&["g1", "g2", "g3", "g4", "g5"], &["slow"]))
        .await?;
    let probe_of = |c: &TestClient| {
        let c = c.clone();
        async move {
            c.list_flows()
                .await
                .ok()?
                .into_iter()
                .find(|f| f.name == "test.probe")
        }
    };
    let (a, g) = wait_until(LONG, "each tenant's jobs and the slots", || async {
        let (a, g) = (probe_of(&acme).await?, probe_of(&globex).await?);
        (a.tenant_queued == 3 && g.tenant_queued == 5 && a.slots >= 1).then_some((a, g))
    })
    .await?;
    assert_eq!((a.queued, g.queued), (8, 8), "all tenants: {a:?} {g:?}");
    wait_until(LONG, "the jobs to finish", || async {
        let (a, g) = (probe_of(&acme).await?, probe_of(&globex).await?);
        (a.tenant_queued == 0 && g.tenant_queued == 0 && a.queued == 0).then_some(())
    })
    .await?;
    h.stop().await;
    Ok(())
}
