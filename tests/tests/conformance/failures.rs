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
