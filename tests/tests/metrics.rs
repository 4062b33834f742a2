//! `/metrics` after a scripted run, read with a real HTTP client: status 200, the
//! Prometheus text content type, and counts that match what the run did. Its own test
//! binary, so the process-wide registry holds only this run.

use std::time::Duration;

use fstore_proto::api::Status;
use fstore_tests::build::{self, feature};
use fstore_tests::metrics::{find, scrape, value};
use fstore_tests::{TestClient, test_config, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_a_scripted_run() -> anyhow::Result<()> {
    let mut config = test_config();
    config.server.metrics_listen = Some("127.0.0.1:0".into());
    config.worker.scale_tick = Duration::from_millis(50);
    let running = fstore_tests::start_embedded(config).await?;
    let addr = running
        .metrics_addr
        .ok_or_else(|| anyhow::anyhow!("no metrics address"))?;
    let c = TestClient::connect(&running.url(), None).await?;
    c.register(feature("a", "test.probe@1", &[], &[], 600_000))
        .await?;
    c.register(feature("b", "num.affine@1", &[], &[("x", "a")], 600_000))
        .await?;
    c.register(feature(
        "slow",
        "test.probe@1",
        &[("delay_ms", "1000")],
        &[],
        600_000,
    ))
    .await?;

    // 2 misses computing 4 jobs, then 2 hits, then one SYNC that runs out of time.
    let r = c.get(build::sync(&["e1", "e2"], &["b"], 5_000)).await?;
    assert!(r.results.iter().all(|x| x.status() == Status::Ready));
    let r = c.get(build::get(&["e1", "e2"], &["b"])).await?;
    assert!(r.results.iter().all(|x| x.status() == Status::Ready));
    let r = c.get(build::sync(&["e1"], &["slow"], 100)).await?;
    assert!(!r.ticket.is_empty());

    let text = wait_until(
        Duration::from_secs(10),
        "the slow job to complete",
        || async {
            let t = scrape(addr).await.ok()?;
            (find(&t, "fstore_jobs_completed_total{flow=\"test.probe@1\"}")? >= 3.0).then_some(t)
        },
    )
    .await?;
    let excerpt: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket{"))
        .collect();
    println!("{}", excerpt.join("\n"));
    assert!(
        text.contains("# TYPE fstore_requests counter"),
        "no fstore_requests family in {text}"
    );
    assert_eq!(value(&text, "fstore_requests_total{mode=\"sync\"}")?, 2.0);
    assert_eq!(value(&text, "fstore_requests_total{mode=\"async\"}")?, 1.0);
    assert_eq!(value(&text, "fstore_sync_timeouts_total")?, 1.0);
    assert_eq!(
        value(&text, "fstore_jobs_enqueued_total{flow=\"test.probe@1\"}")?,
        3.0
    );
    assert_eq!(
        value(&text, "fstore_jobs_enqueued_total{flow=\"num.affine@1\"}")?,
        2.0
    );
    assert_eq!(
        value(&text, "fstore_jobs_completed_total{flow=\"num.affine@1\"}")?,
        2.0
    );
    assert_eq!(
        find(&text, "fstore_jobs_failed_total{flow=\"num.affine@1\"}"),
        None,
        "no num.affine job failed, so its series was never made"
    );
    assert!(value(&text, "fstore_cache_total{tier=\"store\",result=\"hit\"}")? >= 4.0);
    assert!(value(&text, "fstore_cache_total{tier=\"store\",result=\"miss\"}")? >= 5.0);
    assert!(value(&text, "fstore_compute_seconds_count{flow=\"test.probe@1\"}")? >= 2.0);
    assert!(value(&text, "fstore_request_seconds_count{mode=\"sync\"}")? == 2.0);
    assert!(value(&text, "fstore_slots{flow=\"test.probe@1\"}")? >= 1.0);
    running.shutdown().await;
    Ok(())
}
