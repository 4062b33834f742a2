//! The behavioural suite every backend must pass: async/sync/watch, dependencies,
//! coalescing, TTL, versions and invalidation, failures, tenants and bad input — over a
//! real gRPC server on a loopback port.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, entity, f64_of, feature, text};
use fstore_tests::harness::{Backend, Harness};
use fstore_tests::{TestClient, test_config, wait_until};
use futures::StreamExt;
use tonic::Code;

const LONG: Duration = Duration::from_secs(20);

fn probe(name: &str, params: &[(&str, &str)]) -> api::FeatureDefinition {
    feature(name, "test.probe@1", params, &[], 600_000)
}

fn statuses(r: &api::GetFeaturesResponse) -> Vec<Status> {
    r.results.iter().map(|x| x.status()).collect()
}

async fn async_then_ticket_until_ready(b: Backend) -> anyhow::Result<()> {
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

async fn sync_waits_and_keeps_its_deadline(b: Backend) -> anyhow::Result<()> {
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

async fn watch_delivers_every_result_once(b: Backend) -> anyhow::Result<()> {
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

async fn chain_and_diamond_compute_in_order(b: Backend) -> anyhow::Result<()> {
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

async fn cycles_and_unknowns_are_refused(b: Backend) -> anyhow::Result<()> {
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

    let d = h
        .client
        .raw
        .clone()
        .describe_feature(h.client.req(api::DescribeFeatureRequest {
            feature: "a".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(
        d.versions,
        vec![1],
        "refused definitions leave no version behind"
    );
    assert_eq!(d.dependents, vec!["b@1".to_string()]);
    h.stop().await;
    Ok(())
}

async fn concurrent_identical_requests_compute_once(b: Backend) -> anyhow::Result<()> {
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

async fn ttl_expiry_recomputes(b: Backend) -> anyhow::Result<()> {
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

async fn version_bump_and_invalidate_recompute_downstream(b: Backend) -> anyhow::Result<()> {
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

async fn staleness_bounds_and_stale_serving(b: Backend) -> anyhow::Result<()> {
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

async fn failures_are_reported_and_retried(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("bad", &[("fail", "permanent")])).await?;
    h.register(feature(
        "after_bad",
        "num.affine@1",
        &[],
        &[("x", "bad")],
        600_000,
    ))
    .await?;
    h.register(probe(
        "flaky",
        &[("fail", "transient"), ("fail_attempts", "2")],
    ))
    .await?;
    h.register(probe("hopeless", &[("fail", "transient")]))
        .await?;
    let r = h
        .client
        .get(build::sync(
            &["e"],
            &["bad", "after_bad", "flaky", "hopeless"],
            10_000,
        ))
        .await?;
    let by: HashMap<&str, &api::FeatureResult> =
        r.results.iter().map(|x| (x.feature.as_str(), x)).collect();
    assert_eq!(by["bad"].status(), Status::Failed);
    assert!(
        by["bad"].error.contains("refuses entity e on purpose"),
        "{}",
        by["bad"].error
    );
    assert_eq!(by["bad"].attempts, 1, "permanent errors are not retried");
    assert_eq!(by["after_bad"].status(), Status::Failed);
    assert!(
        by["after_bad"].error.contains("input `x`"),
        "{}",
        by["after_bad"].error
    );
    assert_eq!(by["flaky"].status(), Status::Ready);
    assert_eq!(by["flaky"].attempts, 3);
    assert_eq!(by["hopeless"].status(), Status::Failed);
    assert_eq!(by["hopeless"].attempts, 5);
    assert!(
        by["hopeless"].error.contains("gave up after 5 tries"),
        "{}",
        by["hopeless"].error
    );
    assert_eq!(h.computes("bad@1"), 1);
    assert_eq!(
        h.computes("after_bad@1"),
        0,
        "nothing computes behind a failed input"
    );
    if let Some(stats) = &h.running.worker_stats {
        assert!(stats.retried.load(Ordering::Relaxed) >= 6);
    }
    h.stop().await;
    Ok(())
}

async fn failures_expire_and_recompute(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("once", &[("fail", "permanent")])).await?;
    let r = h.client.get(build::sync(&["e"], &["once"], 5_000)).await?;
    assert_eq!(statuses(&r), vec![Status::Failed]);
    let r = h.client.get(build::get(&["e"], &["once"])).await?;
    assert_eq!(
        statuses(&r),
        vec![Status::Failed],
        "a failure is answered for a while"
    );
    // After failure_ttl (2 s in tests) a request computes again (a new generation).
    wait_until(LONG, "the failure to expire", || async {
        let r = h.client.get(build::get(&["e"], &["once"])).await.ok()?;
        (r.results[0].status() != Status::Failed).then_some(())
    })
    .await?;
    wait_until(LONG, "the recompute", || async {
        (h.computes("once@1") == 2).then_some(())
    })
    .await?;
    h.stop().await;
    Ok(())
}

async fn request_inputs_are_part_of_the_key(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(feature(
        "words",
        "text.stats@1",
        &[("stat", "words")],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "emb",
        "text.hash_embed@1",
        &[("dim", "8")],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "qemb",
        "text.hash_embed@1",
        &[("dim", "8")],
        &[("text", "request:query")],
        600_000,
    ))
    .await?;
    h.register(feature(
        "match",
        "vec.cosine@1",
        &[],
        &[("a", "emb"), ("b", "qemb")],
        600_000,
    ))
    .await?;
    let ask = |t: &str, q: &str| {
        let mut r = build::sync(&[], &["words", "match"], 5_000);
        r.entities = vec![entity("doc", &[("text", text(t)), ("query", text(q))])];
        r
    };
    let r1 = h
        .client
        .get(ask("red green blue", "red green blue"))
        .await?;
    let r2 = h.client.get(ask("one two", "three four")).await?;
    assert_eq!(f64_of(&r1.results[0]), Some(3.0));
    assert_eq!(f64_of(&r2.results[0]), Some(2.0));
    let m1 = f64_of(&r1.results[1]).unwrap_or_default();
    assert!((m1 - 1.0).abs() < 1e-6, "identical texts: cosine {m1}");
    assert_ne!(
        f64_of(&r2.results[1]),
        Some(m1),
        "a different input is a different value"
    );
    let tensor = h
        .client
        .get({
            let mut r = build::sync(&[], &["emb"], 5_000);
            r.entities = vec![entity("doc", &[("text", text("red green blue"))])];
            r
        })
        .await?;
    match tensor.results[0]
        .value
        .as_ref()
        .and_then(|v| v.kind.as_ref())
    {
        Some(api::value::Kind::Tensor(t)) => assert_eq!(t.shape, vec![8]),
        other => anyhow::bail!("expected a tensor, got {other:?}"),
    }
    h.stop().await;
    Ok(())
}

async fn tenants_do_not_share(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("t", &[("delay_ms", "300")])).await?;
    let acme = h.client.with_tenant("acme");
    let other = h.client.with_tenant("globex");
    let r = acme.get(build::get(&["d"], &["t"])).await?;
    let missing = other.ticket(&r.ticket).await;
    assert!(
        missing.is_err_and(|s| s.code() == Code::NotFound),
        "another tenant's ticket is invisible"
    );
    acme.until_done(&r.ticket, LONG).await?;
    let theirs = other.get(build::get(&["d"], &["t"])).await?;
    assert_eq!(
        statuses(&theirs),
        vec![Status::Pending],
        "values are kept per tenant"
    );
    other.until_done(&theirs.ticket, LONG).await?;
    assert_eq!(h.computes("t@1"), 2);
    h.stop().await;
    Ok(())
}

async fn bad_input_gets_a_status_that_says_what_to_fix(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.limits.max_entities = 3;
    config.limits.max_features = 2;
    config.limits.max_input_bytes = 1024;
    let h = Harness::with_config(b, config).await?;
    h.register(probe("ok", &[])).await?;
    h.register(feature(
        "needs_text",
        "text.stats@1",
        &[],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    let check = |r: Result<api::GetFeaturesResponse, tonic::Status>, code: Code, needle: &str| {
        let s = r.err().unwrap_or_else(|| tonic::Status::ok("accepted"));
        assert_eq!(s.code(), code, "{needle}: {}", s.message());
        assert!(
            s.message().contains(needle),
            "`{}` should mention `{needle}`",
            s.message()
        );
    };
    check(
        h.client.get(build::get(&["e"], &["nope"])).await,
        Code::NotFound,
        "no feature named `nope`",
    );
    check(
        h.client.get(build::get(&["e"], &["ok@7"])).await,
        Code::NotFound,
        "no version 7",
    );
    check(
        h.client.get(build::get(&["e"], &["Bad Name"])).await,
        Code::InvalidArgument,
        "malformed",
    );
    check(
        h.client.get(build::get(&["e"], &["ok@x"])).await,
        Code::InvalidArgument,
        "version `x`",
    );
    check(
        h.client
            .get(build::get(&["a", "b", "c", "d"], &["ok"]))
            .await,
        Code::InvalidArgument,
        "limit of 3",
    );
    check(
        h.client.get(build::get(&["e"], &["ok", "ok", "ok"])).await,
        Code::InvalidArgument,
        "limit of 2",
    );
    check(
        h.client.get(build::get(&[], &["ok"])).await,
        Code::InvalidArgument,
        "no entities",
    );
    check(
        h.client.get(build::get(&["e"], &[])).await,
        Code::InvalidArgument,
        "no features",
    );
    check(
        h.client.get(build::get(&[""], &["ok"])).await,
        Code::InvalidArgument,
        "1 to 1024 bytes",
    );
    check(
        h.client.get(build::get(&["e"], &["needs_text"])).await,
        Code::InvalidArgument,
        "needs request input `text`",
    );
    let mut wrong = build::get(&[], &["needs_text"]);
    wrong.entities = vec![entity("e", &[("text", build::f64(1.0))])];
    check(
        h.client.get(wrong).await,
        Code::InvalidArgument,
        "must be a string value",
    );
    let mut big = build::get(&[], &["needs_text"]);
    big.entities = vec![entity("e", &[("text", text(&"x".repeat(2000)))])];
    check(
        h.client.get(big).await,
        Code::InvalidArgument,
        "limit of 1024",
    );
    let t = h.client.ticket("no-such-ticket").await;
    assert!(t.is_err_and(|s| s.code() == Code::NotFound));
    let bad_tenant = h.client.with_tenant("no.dots");
    check(
        bad_tenant.get(build::get(&["e"], &["ok"])).await,
        Code::InvalidArgument,
        "tenant `no.dots` is malformed",
    );
    // Odd bytes in ids and inputs never panic the server: it still answers afterwards.
    let mut odd = build::get(&["*", ">", "a.b c", "ünï\u{0}"], &["ok"]);
    odd.entities.truncate(3);
    assert!(h.client.get(odd).await.is_ok());
    assert!(h.client.get(build::get(&["e"], &["ok"])).await.is_ok());
    h.stop().await;

    // Without a default tenant, a call must name one.
    let mut strict = test_config();
    strict.server.default_tenant = None;
    let h = Harness::with_config(b, strict).await?;
    let r = h.client.get(build::get(&["e"], &["ok"])).await;
    assert!(r.is_err_and(
        |s| s.code() == Code::Unauthenticated && s.message().contains("x-fstore-tenant")
    ));
    h.stop().await;
    Ok(())
}

async fn lists_and_describes(b: Backend) -> anyhow::Result<()> {
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
    let d = raw
        .describe_feature(h.client.req(api::DescribeFeatureRequest {
            feature: "q@1".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(d.dependencies, vec!["p@1"]);
    assert_eq!(d.lineage_hash.len(), 32);
    assert_eq!(d.value_type(), api::ValueType::F64);
    // The operator's view: one miss, then two hits, all fresh.
    h.client.get(build::sync(&["s"], &["q"], 5_000)).await?;
    h.client.get(build::get(&["s"], &["q"])).await?;
    h.client.get(build::get(&["s"], &["q"])).await?;
    let d = raw
        .describe_feature(h.client.req(api::DescribeFeatureRequest {
            feature: "q".into(),
        }))
        .await?
        .into_inner();
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

async fn dead_letters_keep_exhausted_jobs_for_replay(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    let fixed_at = fstore_substrate::time::now_ms() + 1_500;
    let until = fixed_at.to_string();
    h.register(probe(
        "fragile",
        &[("fail", "transient"), ("fail_until_ms", &until)],
    ))
    .await?;
    h.register(feature(
        "after_fragile",
        "num.affine@1",
        &[],
        &[("x", "fragile")],
        600_000,
    ))
    .await?;
    let r = h
        .client
        .get(build::sync(&["e1", "e2"], &["after_fragile"], 10_000))
        .await?;
    assert_eq!(statuses(&r), vec![Status::Failed, Status::Failed], "{r:?}");
    assert!(
        r.results[0].error.contains("input `x`"),
        "{}",
        r.results[0].error
    );
    let mut raw = h.client.raw.clone();
    let list = raw
        .list_dead_letters(h.client.req(api::ListDeadLettersRequest { limit: 0 }))
        .await?
        .into_inner();
    assert_eq!(list.total, 2, "one dead letter per exhausted job: {list:?}");
    let first = list.dead_letters[0].clone();
    assert_eq!(first.feature, "fragile@1");
    assert_eq!(first.attempts, 5);
    assert!(
        first.error.contains("gave up after 5 tries"),
        "{}",
        first.error
    );
    // Another tenant sees none of them and cannot replay them.
    let other = h.client.with_tenant("globex");
    let theirs = other
        .raw
        .clone()
        .list_dead_letters(other.req(api::ListDeadLettersRequest { limit: 0 }))
        .await?
        .into_inner();
    assert_eq!(theirs.total, 0);
    let denied = other
        .raw
        .clone()
        .replay_dead_letter(other.req(api::ReplayDeadLetterRequest {
            id: first.id.clone(),
        }))
        .await;
    assert!(denied.is_err_and(|s| s.code() == Code::NotFound));

    // The cause is fixed: replaying computes the value (a new generation); the dead
    // letter is gone.
    let wait = (fixed_at - fstore_substrate::time::now_ms()).max(0) as u64 + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let replay = raw
        .replay_dead_letter(h.client.req(api::ReplayDeadLetterRequest {
            id: first.id.clone(),
        }))
        .await?
        .into_inner();
    assert!(replay.enqueued);
    let e = first.entity_id.clone();
    wait_until(LONG, "the replayed value", || async {
        let r = h
            .client
            .get(build::get(&[e.as_str()], &["fragile"]))
            .await
            .ok()?;
        (r.results[0].status() == Status::Ready).then_some(())
    })
    .await?;
    let purged = raw
        .purge_dead_letters(
            h.client
                .req(api::PurgeDeadLettersRequest { id: String::new() }),
        )
        .await?
        .into_inner();
    assert_eq!(purged.purged, 1, "the replayed one was dropped already");
    let list = raw
        .list_dead_letters(h.client.req(api::ListDeadLettersRequest { limit: 0 }))
        .await?
        .into_inner();
    assert_eq!(list.total, 0);
    h.stop().await;
    Ok(())
}

fstore_tests::on_every_backend!(
    async_then_ticket_until_ready,
    sync_waits_and_keeps_its_deadline,
    watch_delivers_every_result_once,
    chain_and_diamond_compute_in_order,
    cycles_and_unknowns_are_refused,
    concurrent_identical_requests_compute_once,
    ttl_expiry_recomputes,
    version_bump_and_invalidate_recompute_downstream,
    staleness_bounds_and_stale_serving,
    failures_are_reported_and_retried,
    failures_expire_and_recompute,
    request_inputs_are_part_of_the_key,
    tenants_do_not_share,
    bad_input_gets_a_status_that_says_what_to_fix,
    lists_and_describes,
    dead_letters_keep_exhausted_jobs_for_replay,
);
