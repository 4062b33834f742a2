//! Conformance, the batch lane: a backfill computes every (entity, feature) once,
//! dependencies first, and a re-run skips what is fresh; it is refused whole when an
//! entity is bad; it can be cancelled; and interactive calls are served before a
//! backfill that fills the workers.

use fstore_proto::api::{BackfillState, log_record::Kind};

use super::*;

fn log_words() -> api::FeatureDefinition {
    feature(
        "log_words",
        "num.affine@1",
        &[("fn", "log1p")],
        &[("x", "words")],
        600_000,
    )
}

fn entities(n: usize) -> Vec<api::EntityRequest> {
    (0..n)
        .map(|i| entity(&format!("e{i}"), &[("text", text(&"w ".repeat(i % 7 + 1)))]))
        .collect()
}

async fn until_ended(c: &fstore::client::Client, id: &str) -> anyhow::Result<api::Backfill> {
    wait_until(LONG, "the backfill to end", || async {
        let b = c.get_backfill(id.to_string()).await.ok()?;
        (b.state() != BackfillState::Running).then_some(b)
    })
    .await
}

async fn client(h: &Harness) -> anyhow::Result<fstore::client::Client> {
    h.store_client(&h.running.url(), None).await
}

pub(crate) async fn a_backfill_computes_each_pair_once_and_a_rerun_skips_it(
    b: Backend,
) -> anyhow::Result<()> {
    let mut config = test_config();
    config.backfill.chunk_entities = 16;
    config.backfill.scan_interval = Duration::from_millis(100);
    let h = Harness::with_config(b, config).await?;
    h.register(words()).await?;
    h.register(log_words()).await?;
    let c = client(&h).await?;
    let features = vec!["words".to_string(), "log_words".to_string()];
    let started = c
        .start_backfill(features.clone(), None, entities(60))
        .await?;
    assert_eq!((started.total, started.entities), (120, 60));
    let done = until_ended(&c, &started.id).await?;
    assert_eq!(done.state(), BackfillState::Done);
    assert_eq!(
        (done.done, done.failed, done.skipped),
        (120, 0, 0),
        "{done:?}"
    );
    assert_eq!(h.computes("words@1"), 60, "one compute per pair");
    assert_eq!(h.computes("log_words@1"), 60);
    // The values are there for callers, and the log says the backfill computed them.
    let mut req = build::sync(&[], &["log_words"], 5_000);
    req.entities = entities(3);
    let r = h.client.get(req).await?;
    assert!(r.results.iter().all(|x| x.from_cache), "{r:?}");
    let log = h.client.log(&["words"], false).await?;
    let records: Vec<_> = log
        .iter()
        .filter_map(|e| e.record.as_ref())
        .filter(|r| r.kind() == Kind::Value)
        .collect();
    assert_eq!(records.len(), 60);
    assert!(records.iter().all(|r| r.tickets.contains(&started.id)));

    // The same backfill again: everything is fresh.
    let again = c.start_backfill(features, None, entities(60)).await?;
    let again = until_ended(&c, &again.id).await?;
    assert_eq!(
        (again.done, again.failed, again.skipped),
        (0, 0, 120),
        "{again:?}"
    );
    assert_eq!(h.computes("words@1"), 60, "nothing computed twice");
    let listed = c.list_backfills().await?;
    assert_eq!(listed.backfills.len(), 2);
    assert_eq!(listed.backfills[0].id, again.id, "newest first");
    h.stop().await;
    Ok(())
}

pub(crate) async fn a_bad_backfill_is_refused_whole(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(words()).await?;
    let c = client(&h).await?;
    let e = c
        .start_backfill(vec!["nope".into()], None, entities(3))
        .await
        .expect_err("an unknown feature");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut bad = entities(40);
    bad[33].inputs.clear();
    let e = c
        .start_backfill(vec!["words".into()], None, bad)
        .await
        .expect_err("an entity without its input");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("e33") && e.message().contains("text"),
        "{}",
        e.message()
    );
    let e = c
        .start_backfill(vec!["words".into()], None, Vec::new())
        .await
        .expect_err("no entities");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        c.list_backfills().await?.backfills.is_empty(),
        "nothing started"
    );
    let e = c
        .get_backfill("0123".into())
        .await
        .expect_err("an unknown backfill");
    assert_eq!(e.code(), Code::NotFound);
    // Another tenant's backfill reads as unknown.
    let mine = c
        .start_backfill(vec!["words".into()], None, entities(2))
        .await?;
    let other = h
        .store_client(&h.running.url(), Some("other".into()))
        .await?;
    let e = other
        .get_backfill(mine.id.clone())
        .await
        .expect_err("a foreign backfill");
    assert_eq!(e.code(), Code::NotFound);
    h.stop().await;
    Ok(())
}

pub(crate) async fn a_cancelled_backfill_submits_nothing_more(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.slots = 1;
    config.backfill.chunk_entities = 4;
    config.backfill.window = 1;
    config.backfill.scan_interval = Duration::from_millis(100);
    let h = Harness::with_config(b, config).await?;
    h.register(probe("slow", &[("delay_ms", "50")])).await?;
    let c = client(&h).await?;
    let ids: Vec<api::EntityRequest> = (0..200).map(|i| entity(&format!("s{i}"), &[])).collect();
    let b = c.start_backfill(vec!["slow".into()], None, ids).await?;
    wait_until(LONG, "a few computes", || async {
        (h.computes("slow@1") >= 4).then_some(())
    })
    .await?;
    let cancelled = c.cancel_backfill(b.id.clone()).await?;
    assert_eq!(cancelled.state(), BackfillState::Canceled);
    // What was queued drains; nothing more is submitted.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = h.computes("slow@1");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(h.computes("slow@1"), after, "no computes after the drain");
    assert!(after < 50, "cancelled early: {after} of 200 computed");
    let read = c.get_backfill(b.id).await?;
    assert_eq!(read.state(), BackfillState::Canceled);
    h.stop().await;
    Ok(())
}

pub(crate) async fn interactive_calls_go_before_a_backfill(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.slots = 1;
    config.worker.max_batch = 1;
    config.backfill.scan_interval = Duration::from_millis(100);
    let h = Harness::with_config(b, config).await?;
    h.register(probe("bulk", &[("delay_ms", "20")])).await?;
    h.register(probe("urgent", &[])).await?;
    let c = client(&h).await?;
    let ids: Vec<api::EntityRequest> = (0..300).map(|i| entity(&format!("b{i}"), &[])).collect();
    let bf = c.start_backfill(vec!["bulk".into()], None, ids).await?;
    wait_until(LONG, "the backfill to fill the slot", || async {
        (h.computes("bulk@1") >= 5).then_some(())
    })
    .await?;
    // With one slot busy on a 300-job backfill (≥ 6 s of work), an interactive call
    // waits at most for the batch job in hand.
    let started = Instant::now();
    let r = h
        .client
        .get(build::sync(&["now"], &["urgent"], 10_000))
        .await?;
    let took = started.elapsed();
    assert_eq!(statuses(&r), vec![Status::Ready]);
    assert!(
        took < Duration::from_secs(2),
        "the interactive call waited {took:?} behind the backfill"
    );
    let done = until_ended(&c, &bf.id).await?;
    assert_eq!(done.done, 300, "and the backfill still finishes: {done:?}");
    h.stop().await;
    Ok(())
}

pub(crate) async fn a_backfill_outlives_the_replica_running_it(b: Backend) -> anyhow::Result<()> {
    // The harness's replica hosts the worker and never looks for backfills (it scans
    // once, at start); two replicas without workers race for the backfill.
    let mut quiet = test_config();
    quiet.backfill.scan_interval = Duration::from_secs(3_600);
    quiet.backfill.lease = Duration::from_secs(3 * 3_600);
    let h = Harness::with_config(b, quiet).await?;
    h.register(probe("paced", &[("delay_ms", "60")])).await?;
    let mut config = test_config();
    config.backfill.chunk_entities = 8;
    config.backfill.window = 1;
    config.backfill.scan_interval = Duration::from_millis(100);
    config.backfill.lease = Duration::from_millis(400);
    let (one, one_client) = h.replica(config.clone()).await?;
    let (two, two_client) = h.replica(config).await?;
    let one_url = one.url();
    let c = h.store_client(&one_url, None).await?;
    let ids: Vec<api::EntityRequest> = (0..96).map(|i| entity(&format!("p{i}"), &[])).collect();
    let started = c.start_backfill(vec!["paced".into()], None, ids).await?;
    // Whichever replica runs it is stopped once it is under way.
    let (runner, done_then) = wait_until(LONG, "a replica to run it", || async {
        let b = c.get_backfill(started.id.clone()).await.ok()?;
        (!b.runner.is_empty() && b.done > 0).then_some((b.runner, b.done))
    })
    .await?;
    assert!(
        done_then < 96,
        "finished before its replica stopped: {done_then}"
    );
    let port = |r: &fstore::server::Running| r.addr.port().to_string();
    let (stopped, survivor, survivor_client) = if runner.ends_with(&format!("-{}", port(&one))) {
        (one, two, two_client)
    } else {
        (two, one, one_client)
    };
    stopped.shutdown().await;
    let c = h.store_client(&survivor.url(), None).await?;
    let done = until_ended(&c, &started.id).await?;
    assert_eq!(done.state(), BackfillState::Done, "{done:?}");
    // Only the survivor could finish it: the harness's replica scanned once, at start.
    assert_eq!(done.done + done.skipped, 96, "{done:?}");
    assert_eq!(h.computes("paced@1"), 96, "no node computed twice");
    drop(survivor_client);
    h.stop().await;
    survivor.shutdown().await;
    Ok(())
}
