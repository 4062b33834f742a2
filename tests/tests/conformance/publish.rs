//! Conformance, staged generations: a staged backfill of a snapshot-served feature is
//! published when the gate passes it, and every replica (one without a worker here)
//! answers from it in memory; a corrupted run (shifted, 30% NaN) is refused with a
//! report and the good generation is still served; a rollback switches back; bad
//! publish calls are refused with nothing half-done.

use fstore_proto::api::{BackfillState, GenerationState};

use super::*;

/// `score = x`, served from the published generation.
fn score() -> api::FeatureDefinition {
    let mut def = feature("score", "num.affine@1", &[], &[("x", "request:x")], 600_000);
    def.set_serving(api::Serving::Snapshot);
    def
}

/// 200 entities `e<i>` whose `x` is `value(i)`.
fn population(value: impl Fn(usize) -> f64) -> Vec<api::EntityRequest> {
    (0..200)
        .map(|i| entity(&format!("e{i}"), &[("x", build::f64(value(i)))]))
        .collect()
}

fn good(i: usize) -> f64 {
    (i % 50) as f64 / 10.0
}

async fn staged(
    c: &fstore::client::Client,
    entities: Vec<api::EntityRequest>,
) -> anyhow::Result<api::Backfill> {
    let spec = api::StartBackfillRequest {
        features: vec!["score".into()],
        max_staleness_ms: Some(0),
        stage: true,
        ..Default::default()
    };
    let started = c.start_backfill_with(spec, entities).await?;
    let ended = wait_until(LONG, "the staged backfill to end", || async {
        let b = c.get_backfill(started.id.clone()).await.ok()?;
        (b.state() != BackfillState::Running).then_some(b)
    })
    .await?;
    assert_eq!(ended.state(), BackfillState::Done, "{ended:?}");
    Ok(ended)
}

/// What `client` answers for `score` of e3 (sending an `x` the generation never saw),
/// once it is generation `generation`.
async fn serves(client: &TestClient, generation: u64) -> anyhow::Result<api::FeatureResult> {
    wait_until(
        Duration::from_secs(2),
        &format!("generation {generation} to be served"),
        || async {
            let mut req = build::sync(&[], &["score"], 5_000);
            req.entities = vec![entity("e3", &[("x", build::f64(-1.0))])];
            let r = client.get(req).await.ok()?;
            let r = r.results.into_iter().next()?;
            (r.generation == generation).then_some(r)
        },
    )
    .await
}

pub(crate) async fn the_gate_publishes_refuses_and_rolls_back(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.backfill.chunk_entities = 32;
    config.backfill.scan_interval = Duration::from_millis(100);
    config.backfill.lease = Duration::from_millis(300);
    let h = Harness::with_config(b, config.clone()).await?;
    h.register(score()).await?;
    let (other, other_client) = h.replica(config).await?;
    let c = h.store_client(&h.running.url(), None).await?;

    // A good run is published, and the other replica serves it from memory.
    let first = staged(&c, population(good)).await?;
    assert_eq!(first.staged.len(), 1);
    assert_eq!(first.staged[0].generation, 1);
    let status = c.publish_status("score".into()).await?;
    let f = &status.features[0];
    assert_eq!(f.published, 1, "{f:?}");
    assert_eq!(f.generations[0].state(), GenerationState::Published);
    assert_eq!(f.generations[0].rows, 200);
    assert!(f.generations[0].checks.iter().all(|c| c.passed), "{f:?}");
    let r = serves(&other_client, 1).await?;
    assert_eq!(
        f64_of(&r),
        Some(0.3),
        "e3's published value, not one for x = -1"
    );
    assert!(r.from_cache);

    // A corrupted run: shifted by 5, 30% NaN. Refused; generation 1 is still served.
    let corrupted = staged(
        &c,
        population(|i| if i % 10 < 3 { f64::NAN } else { good(i) + 5.0 }),
    )
    .await?;
    assert_eq!(corrupted.staged[0].generation, 2);
    let status = c.publish_status("score@1".into()).await?;
    let f = &status.features[0];
    assert_eq!(f.published, 1, "{f:?}");
    let refused = &f.generations[0];
    assert_eq!(refused.generation, 2, "newest first");
    assert_eq!(refused.state(), GenerationState::Rejected);
    let failed: Vec<&str> = refused
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    // `num.affine` refuses a NaN input, so the NaN rows fail (a flow that let NaN
    // through would fail `null_rate` instead: the gate's unit tests cover that).
    for check in ["failure_rate", "psi", "ks"] {
        assert!(failed.contains(&check), "{check} should fail: {refused:?}");
    }
    assert_eq!((refused.rows, refused.failed), (140, 60));
    assert!(
        refused.reason.contains("failure_rate 0.3000"),
        "{}",
        refused.reason
    );
    for client in [&h.client, &other_client] {
        let r = serves(client, 1).await?;
        assert_eq!(f64_of(&r), Some(0.3));
    }

    // A third, slightly different run passes and is served everywhere.
    staged(&c, population(|i| good(i) + 0.01)).await?;
    let r = serves(&other_client, 3).await?;
    assert!(
        (f64_of(&r).unwrap_or_default() - 0.31).abs() < 1e-9,
        "{r:?}"
    );

    // Roll back: the generation published before (1), on every replica.
    let back = c.rollback("score".into(), None).await?;
    assert_eq!(back.published, 1);
    serves(&other_client, 1).await?;
    serves(&h.client, 1).await?;
    let again = c.rollback("score".into(), Some(3)).await?;
    assert_eq!(again.published, 3);
    serves(&other_client, 3).await?;

    // Refusals, and nothing changed by them.
    let e = c
        .rollback("score".into(), Some(2))
        .await
        .expect_err("rejected");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("rejected by the gate"), "{e:?}");
    let e = c
        .rollback("score".into(), Some(99))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("kept: 1, 2, 3"), "{e:?}");
    let e = c
        .rollback("nope".into(), None)
        .await
        .expect_err("no feature");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        c.publish_status("score".into()).await?.features[0].published,
        3
    );

    // An entity the generation lacks is computed on demand.
    let mut req = build::sync(&[], &["score"], 5_000);
    req.entities = vec![entity("newcomer", &[("x", build::f64(2.5))])];
    let r = h.client.get(req).await?;
    assert_eq!(r.results[0].status(), Status::Ready);
    assert_eq!(
        (f64_of(&r.results[0]), r.results[0].generation),
        (Some(2.5), 0)
    );

    h.stop().await;
    other.shutdown().await;
    Ok(())
}

pub(crate) async fn staging_an_online_feature_is_refused(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(words()).await?;
    let c = h.store_client(&h.running.url(), None).await?;
    let spec = api::StartBackfillRequest {
        features: vec!["words".into()],
        stage: true,
        ..Default::default()
    };
    let e = c
        .start_backfill_with(spec, vec![entity("a", &[("text", text("x y"))])])
        .await
        .expect_err("online features have no generations");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("serving = \"snapshot\""), "{e:?}");
    assert!(
        c.list_backfills().await?.backfills.is_empty(),
        "nothing started"
    );
    assert!(c.publish_status(String::new()).await?.features.is_empty());
    h.stop().await;
    Ok(())
}
