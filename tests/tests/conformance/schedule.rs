//! Conformance, schedules: a staged backfill that repeats runs by itself, one run per
//! period across two replicas, each run gated and published, its history listed with
//! the gate's verdicts; a bad schedule is refused with nothing stored; a deleted one
//! starts no more runs.

use fstore_proto::api::{BackfillState, GenerationState};

use super::*;

fn score() -> api::FeatureDefinition {
    let mut def = feature("score", "num.affine@1", &[], &[("x", "request:x")], 600_000);
    def.set_serving(api::Serving::Snapshot);
    def
}

fn spec(every_ms: u64, name: &str) -> api::StartBackfillRequest {
    api::StartBackfillRequest {
        features: vec!["score".into()],
        stage: true,
        every_ms,
        schedule: name.to_string(),
        ..Default::default()
    }
}

fn population() -> Vec<api::EntityRequest> {
    (0..40)
        .map(|i| entity(&format!("e{i}"), &[("x", build::f64(i as f64))]))
        .collect()
}

pub(crate) async fn a_schedule_runs_by_itself_once_per_period(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.backfill.scan_interval = Duration::from_millis(100);
    config.backfill.lease = Duration::from_millis(300);
    let h = Harness::with_config(b, config.clone()).await?;
    h.register(score()).await?;
    let (other, _) = h.replica(config).await?;
    let c = h.store_client(&h.running.url(), None).await?;

    // Refused, and nothing stored.
    for (bad, code, says) in [
        (spec(500, "fast"), Code::InvalidArgument, "at least 1000 ms"),
        (
            spec(2_000, ""),
            Code::InvalidArgument,
            "needs a schedule name",
        ),
        (spec(0, "named"), Code::InvalidArgument, "needs every_ms"),
        (spec(2_000, "Bad Name"), Code::InvalidArgument, "schedule"),
    ] {
        let e = c
            .start_backfill_with(bad, population())
            .await
            .expect_err(says);
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(says), "{e:?}");
    }
    assert!(c.list_schedules().await?.schedules.is_empty());
    assert!(c.list_backfills().await?.backfills.is_empty());

    let every = Duration::from_millis(1_500);
    let first = c
        .start_backfill_with(spec(every.as_millis() as u64, "cycle"), population())
        .await?;
    assert_eq!(first.schedule, "cycle");
    let schedule = wait_until(Duration::from_secs(20), "three runs", || async {
        let s = c
            .list_schedules()
            .await
            .ok()?
            .schedules
            .into_iter()
            .next()?;
        let done = s
            .runs
            .iter()
            .filter(|r| {
                r.backfill
                    .as_ref()
                    .is_some_and(|b| b.state() == BackfillState::Done)
            })
            .count();
        (done >= 3).then_some(s)
    })
    .await?;
    assert_eq!(
        schedule.runs.last().map(|r| r.backfill_id.as_str()),
        Some(first.id.as_str()),
        "oldest last"
    );
    let starts: Vec<i64> = schedule
        .runs
        .iter()
        .rev()
        .map(|r| r.started_at_ms)
        .collect();
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= every.as_millis() as i64 - 100,
            "one run per period, whichever replica starts it: {starts:?}"
        );
    }
    let decided: Vec<GenerationState> = schedule
        .runs
        .iter()
        .filter_map(|r| r.generations.first())
        .map(|g| g.state())
        .collect();
    assert!(
        decided.contains(&GenerationState::Published)
            && decided.contains(&GenerationState::Superseded),
        "each run is gated and published: {decided:?}"
    );
    assert!(schedule.next_run_ms > fstore_substrate::time::now_ms() - 1_000);

    // Deleted: no run starts any more.
    c.delete_schedule("cycle".into()).await?;
    let runs = c.list_backfills().await?.backfills.len();
    tokio::time::sleep(every * 2).await;
    assert_eq!(
        c.list_backfills().await?.backfills.len(),
        runs,
        "no run after delete"
    );
    assert!(c.list_schedules().await?.schedules.is_empty());
    let e = c.delete_schedule("cycle".into()).await.expect_err("gone");
    assert_eq!(e.code(), Code::NotFound);
    h.stop().await;
    other.shutdown().await;
    Ok(())
}
