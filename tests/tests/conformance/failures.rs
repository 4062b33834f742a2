//! Conformance, failures: reported and retried, expiring into a recompute, and dead letters
//! kept for replay.

use super::*;

pub(crate) async fn failures_are_reported_and_retried(b: Backend) -> anyhow::Result<()> {
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

pub(crate) async fn failures_expire_and_recompute(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("once", &[("fail", "permanent")])).await?;
    let r = h.client.get(build::sync(&["e"], &["once"], 5_000)).await?;
    assert_eq!(statuses(&r), vec![Status::Failed]);
    // `from_cache` compares Unix milliseconds: the next call starts in a later one.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = h.client.get(build::get(&["e"], &["once"])).await?;
    assert_eq!(
        statuses(&r),
        vec![Status::Failed],
        "a failure is answered for a while"
    );
    assert!(
        r.results[0].from_cache,
        "a stored failure is served from the store"
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

pub(crate) async fn dead_letters_keep_exhausted_jobs_for_replay(b: Backend) -> anyhow::Result<()> {
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

/// A job whose key input expired while it waited in the queue computes the input again
/// (claimed like a planner would) and then runs: the call ends READY, not FAILED with
/// "request again". One slot taking one job at a time makes the wait: the input is
/// computed, then a slow job queued before the dependent holds the slot past the
/// input's 200 ms TTL.
pub(crate) async fn expired_inputs_are_computed_again(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.slots = 1;
    config.worker.max_batch = 1;
    let h = Harness::with_config(b, config).await?;
    h.register(feature(
        "short",
        "test.probe@1",
        &[("value", "2")],
        &[],
        200,
    ))
    .await?;
    h.register(feature(
        "after_short",
        "test.probe@1",
        &[("value", "1")],
        &[("x", "short")],
        600_000,
    ))
    .await?;
    h.register(probe("blocker", &[("delay_ms", "700")])).await?;
    // The slot is busy with the first blocker while `short` and a second blocker queue.
    h.client.get(build::get(&["b1"], &["blocker"])).await?;
    let client = h.client.clone();
    let call = tokio::spawn(async move {
        client
            .get(build::sync(&["e"], &["after_short"], 15_000))
            .await
    });
    wait_until(LONG, "the call to plan", || async {
        let r = h.client.get(build::get(&["e"], &["short"])).await.ok()?;
        (r.results[0].status() == Status::Pending).then_some(())
    })
    .await?;
    h.client.get(build::get(&["b2"], &["blocker"])).await?;
    let r = call.await??;
    assert_eq!(statuses(&r), vec![Status::Ready], "{r:?}");
    assert_eq!(f64_of(&r.results[0]), Some(3.0));
    assert_eq!(
        h.computes("short@1"),
        2,
        "the expired input was computed again"
    );
    if let Some(stats) = &h.running.worker_stats {
        assert_eq!(stats.requeued.load(Ordering::Relaxed), 1);
    }
    h.stop().await;
    Ok(())
}

/// A failure of a transient condition (tries used up while a dependency was down)
/// answers the call that waited for it, and is never answered to a later call as if
/// it were the feature's value: that call computes again, long before
/// `cache.failure_ttl` would have let it.
pub(crate) async fn transient_failures_are_not_cached(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.cache.failure_ttl = Duration::from_secs(600);
    let h = Harness::with_config(b, config).await?;
    let fixed_at = fstore_substrate::time::now_ms() + 1_000;
    let until = fixed_at.to_string();
    h.register(probe(
        "flaky",
        &[("fail", "transient"), ("fail_until_ms", &until)],
    ))
    .await?;
    let r = h
        .client
        .get(build::sync(&["e"], &["flaky"], 10_000))
        .await?;
    assert_eq!(statuses(&r), vec![Status::Failed], "{r:?}");
    assert!(
        r.results[0].error.contains("gave up after 5 tries"),
        "{r:?}"
    );
    let wait = (fixed_at - fstore_substrate::time::now_ms()).max(0) as u64 + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let r = h
        .client
        .get(build::sync(&["e"], &["flaky"], 10_000))
        .await?;
    assert_eq!(statuses(&r), vec![Status::Ready], "{r:?}");
    assert!(!r.results[0].from_cache, "computed again for this call");
    assert_eq!(h.computes("flaky@1"), 6, "5 failed tries, then one compute");
    h.stop().await;
    Ok(())
}
