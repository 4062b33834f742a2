//! Conformance, the dependency graph: chains and diamonds in order, cycles and unknowns
//! refused, versions and invalidation reaching downstream.

use super::*;

pub(crate) async fn chain_and_diamond_compute_in_order(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("a", &[("value", "2"), ("delay_ms", "20")]))
        .await?;
    h.register(feature(
        "b",
        "num.affine@1",
        &[("scale", "3"), ("offset", "1")],
        &[("x", "a")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "c",
        "num.affine@1",
        &[("fn", "square")],
        &[("x", "b")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "d",
        "num.combine@1",
        &[("op", "mul")],
        &[("x", "b"), ("y", "a")],
        600_000,
    ))
    .await?;
    let r = h
        .client
        .get(build::sync(&["x"], &["c", "d", "a", "b"], 10_000))
        .await?;
    assert_eq!(statuses(&r), vec![Status::Ready; 4], "{r:?}");
    let by: HashMap<&str, &api::FeatureResult> =
        r.results.iter().map(|x| (x.feature.as_str(), x)).collect();
    assert_eq!(f64_of(by["a"]), Some(2.0));
    assert_eq!(f64_of(by["b"]), Some(7.0));
    assert_eq!(f64_of(by["c"]), Some(49.0));
    assert_eq!(f64_of(by["d"]), Some(14.0));
    let at = |f: &str| by[f].computed_at_ms;
    assert!(at("a") <= at("b") && at("b") <= at("c"), "chain order");
    assert!(at("b") <= at("d") && at("a") <= at("d"), "diamond order");
    for f in ["a@1", "b@1", "c@1", "d@1"] {
        assert_eq!(h.computes(f), 1, "{f} computed once");
    }
    h.stop().await;
    Ok(())
}

pub(crate) async fn cycles_and_unknowns_are_refused(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("a", &[])).await?;
    h.register(feature("b", "num.affine@1", &[], &[("x", "a")], 600_000))
        .await?;
    let cycle = h
        .client
        .register(feature("a", "num.affine@1", &[], &[("x", "b")], 600_000))
        .await;
    let s = cycle
        .err()
        .ok_or_else(|| anyhow::anyhow!("a cycle was accepted"))?;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("dependency cycle: ")
            && s.message().contains("a@2")
            && s.message().contains("b@1"),
        "{}",
        s.message()
    );

    let unknown = h
        .client
        .register(feature("c", "num.affine@1", &[], &[("x", "nope")], 600_000))
        .await;
    let s = unknown
        .err()
        .ok_or_else(|| anyhow::anyhow!("unknown dependency accepted"))?;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("unknown feature `nope`"),
        "{}",
        s.message()
    );

    let flow = h
        .client
        .register(feature("c", "no.such@1", &[], &[], 600_000))
        .await;
    assert!(
        flow.is_err_and(|s| s.code() == Code::InvalidArgument
            && s.message().contains("unknown flow `no.such@1`"))
    );

    let mismatch = h
        .client
        .register(feature(
            "c",
            "vec.cosine@1",
            &[],
            &[("a", "a"), ("b", "a")],
            600_000,
        ))
        .await;
    assert!(mismatch.is_err_and(|s| s.message().contains("takes tensor but `a@1` is f64")));

    let d = h.client.describe("a").await?;
    assert_eq!(
        d.versions,
        vec![1],
        "refused definitions leave no version behind"
    );
    assert_eq!(d.dependents, vec!["b@1".to_string()]);
    h.stop().await;
    Ok(())
}

pub(crate) async fn version_bump_and_invalidate_recompute_downstream(
    b: Backend,
) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("up", &[("value", "1")])).await?;
    h.register(feature(
        "down",
        "num.affine@1",
        &[("scale", "10")],
        &[("x", "up")],
        600_000,
    ))
    .await?;
    let r = h
        .client
        .get(build::sync(&["e1", "e2"], &["down"], 5_000))
        .await?;
    assert_eq!(
        r.results.iter().map(f64_of).collect::<Vec<_>>(),
        vec![Some(10.0), Some(10.0)]
    );

    // A new upstream version makes downstream keys new: recomputed, with the new value.
    let bumped = h.register(probe("up", &[("value", "2")])).await?;
    assert_eq!(bumped.feature.map(|f| f.version), Some(2));
    let r = h.client.get(build::sync(&["e1"], &["down"], 5_000)).await?;
    assert_eq!(f64_of(&r.results[0]), Some(20.0));
    assert!(!r.results[0].from_cache);
    assert_eq!(h.computes("down@1"), 3);

    // Invalidating upstream for one entity recomputes it and everything downstream.
    h.client.get(build::sync(&["e2"], &["down"], 5_000)).await?;
    let inv = h.client.invalidate("up", "e1").await?;
    assert_eq!(inv.invalidated, vec!["down@1", "up@1", "up@2"]);
    let before = (h.computes("up@2"), h.computes("down@1"));
    let r = h.client.get(build::get(&["e1", "e2"], &["down"])).await?;
    assert_eq!(
        statuses(&r),
        vec![Status::Pending, Status::Ready],
        "only e1 was invalidated"
    );
    h.client.until_done(&r.ticket, LONG).await?;
    assert_eq!(
        (h.computes("up@2"), h.computes("down@1")),
        (before.0 + 1, before.1 + 1)
    );

    // Invalidating for all entities.
    h.client.invalidate("down", "").await?;
    let r = h.client.get(build::get(&["e1", "e2"], &["down"])).await?;
    assert_eq!(statuses(&r), vec![Status::Pending, Status::Pending]);
    h.client.until_done(&r.ticket, LONG).await?;
    h.stop().await;
    Ok(())
}
