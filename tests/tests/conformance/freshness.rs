//! Conformance, how fresh a value is: TTL expiry, staleness bounds and stale serving.

use super::*;

pub(crate) async fn ttl_expiry_recomputes(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    // Long enough that a loaded machine still reads it back before expiry.
    h.register(feature("short", "test.probe@1", &[], &[], 1_000))
        .await?;
    let r = h.client.get(build::sync(&["d"], &["short"], 5_000)).await?;
    assert_eq!(statuses(&r), vec![Status::Ready]);
    let r = h.client.get(build::get(&["d"], &["short"])).await?;
    assert!(r.results[0].from_cache);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = h.client.get(build::get(&["d"], &["short"])).await?;
    assert_eq!(
        statuses(&r),
        vec![Status::Pending],
        "an expired value counts as missing"
    );
    let r = h.client.until_done(&r.ticket, LONG).await?;
    assert!(!r.results[0].from_cache);
    assert_eq!(h.computes("short@1"), 2);
    h.stop().await;
    Ok(())
}

pub(crate) async fn staleness_bounds_and_stale_serving(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("s", &[("delay_ms", "150")])).await?;
    h.client.get(build::sync(&["d"], &["s"], 5_000)).await?;
    let mut req = build::get(&["d"], &["s"]);
    req.max_staleness_ms = Some(0);
    req.allow_stale = true;
    let r = h.client.get(req.clone()).await?;
    assert_eq!(
        statuses(&r),
        vec![Status::Stale],
        "older value served while it recomputes"
    );
    assert_eq!(f64_of(&r.results[0]), Some(1.0));
    let done = h.client.until_done(&r.ticket, LONG).await?;
    assert_eq!(statuses(&done), vec![Status::Ready]);
    assert_eq!(
        h.computes("s@1"),
        2,
        "max_staleness 0 bypasses the cache once"
    );

    req.allow_stale = false;
    req.max_staleness_ms = Some(60_000);
    let r = h.client.get(req).await?;
    assert_eq!(
        statuses(&r),
        vec![Status::Ready],
        "a recent value satisfies a loose bound"
    );
    h.stop().await;
    Ok(())
}
