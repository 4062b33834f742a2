//! Conformance, asking a request: ASYNC with a ticket, SYNC within its deadline, watch, and
//! 1,000 identical calls coalescing into one compute.

use super::*;

pub(crate) async fn async_then_ticket_until_ready(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("a", &[("delay_ms", "100"), ("value", "7")]))
        .await?;
    let first = h.client.get(build::get(&["d1", "d2"], &["a"])).await?;
    assert_eq!(statuses(&first), vec![Status::Pending, Status::Pending]);
    assert!(
        !first.ticket.is_empty(),
        "a pending response carries a ticket"
    );
    let done = h.client.until_done(&first.ticket, LONG).await?;
    assert!(done.ticket.is_empty(), "no ticket once nothing is pending");
    for r in &done.results {
        assert_eq!(r.status(), Status::Ready);
        assert_eq!(f64_of(r), Some(7.0));
        assert!(!r.from_cache, "computed for this call");
        assert_eq!(r.version, 1);
        assert!(r.computed_at_ms > 0);
    }
    let again = h.client.get(build::get(&["d1"], &["a"])).await?;
    assert_eq!(statuses(&again), vec![Status::Ready]);
    assert!(again.results[0].from_cache);
    assert!(again.ticket.is_empty());
    assert_eq!(h.computes("a@1"), 2);
    h.stop().await;
    Ok(())
}

pub(crate) async fn sync_waits_and_keeps_its_deadline(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("quick", &[("delay_ms", "50")])).await?;
    h.register(probe("slow", &[("delay_ms", "3000")])).await?;
    let r = h
        .client
        .get(build::sync(&["d1"], &["quick"], 5_000))
        .await?;
    assert_eq!(statuses(&r), vec![Status::Ready]);
    assert!(r.ticket.is_empty());

    let started = Instant::now();
    let r = h
        .client
        .get(build::sync(&["d1"], &["quick", "slow"], 300))
        .await?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(300 + 100),
        "SYNC held the caller {took:?}"
    );
    assert_eq!(statuses(&r), vec![Status::Ready, Status::Pending]);
    assert!(
        !r.ticket.is_empty(),
        "what is still pending comes with a ticket"
    );

    // The gRPC deadline bounds the wait too.
    let mut req = h.client.req(build::sync(&["d2"], &["slow"], 10_000));
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let r = h.client.raw.clone().get_features(req).await?.into_inner();
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(statuses(&r), vec![Status::Pending]);
    h.stop().await;
    Ok(())
}

pub(crate) async fn watch_delivers_every_result_once(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("base", &[("delay_ms", "30")])).await?;
    h.register(feature(
        "twice",
        "num.affine@1",
        &[("scale", "2")],
        &[("x", "base")],
        600_000,
    ))
    .await?;
    // One value cached before the watch starts.
    h.client.get(build::sync(&["e0"], &["base"], 5_000)).await?;
    let entities = ["e0", "e1", "e2"];
    let watch = api::WatchFeaturesRequest {
        target: Some(api::watch_features_request::Target::Request(build::get(
            &entities,
            &["base", "twice"],
        ))),
        wait_ms: 10_000,
    };
    let mut stream = h
        .client
        .raw
        .clone()
        .watch_features(h.client.req(watch))
        .await?
        .into_inner();
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    while let Some(event) = stream.next().await {
        let r = event?.result.unwrap_or_default();
        assert_eq!(r.status(), Status::Ready, "{r:?}");
        let expect = if r.feature == "base" { 1.0 } else { 2.0 };
        assert_eq!(f64_of(&r), Some(expect));
        *seen.entry((r.entity_id, r.feature)).or_default() += 1;
    }
    assert_eq!(seen.len(), 6, "every (entity, feature) arrives");
    assert!(
        seen.values().all(|n| *n == 1),
        "each exactly once: {seen:?}"
    );
    h.stop().await;
    Ok(())
}

pub(crate) async fn concurrent_identical_requests_compute_once(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("root", &[("delay_ms", "200")])).await?;
    h.register(feature(
        "leaf",
        "num.affine@1",
        &[("offset", "1")],
        &[("x", "root")],
        600_000,
    ))
    .await?;
    let url = h.running.url();
    let clients: Vec<TestClient> =
        futures::future::try_join_all((0..8).map(|_| TestClient::connect(&url, None))).await?;
    let calls = (0..1000).map(|i| {
        let c = clients[i % clients.len()].clone();
        async move { c.get(build::get(&["same"], &["leaf", "root"])).await }
    });
    let answers = futures::future::join_all(calls).await;
    let tickets: Vec<String> = answers
        .into_iter()
        .map(|a| a.map(|r| r.ticket))
        .collect::<Result<_, _>>()?;
    let done = h.client.until_done(&tickets[999], LONG).await?;
    assert_eq!(statuses(&done), vec![Status::Ready, Status::Ready]);
    let (root, leaf) = (h.computes("root@1"), h.computes("leaf@1"));
    println!("1000 concurrent identical requests: root computed {root}x, leaf computed {leaf}x");
    assert_eq!((root, leaf), (1, 1));
    h.stop().await;
    Ok(())
}
