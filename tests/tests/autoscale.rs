//! The worker's autoscaler: slots follow the queue depth up at once, down after a
//! cooldown, and to zero for an idle flow, which unloads its model; the next job wakes
//! it (a recorded cold start).

use std::time::{Duration, Instant};

use fstore::Config;
use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, entity, feature, text};
use fstore_tests::{TestClient, test_config, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn scaling_config(max_slots: usize) -> Config {
    let mut c = test_config();
    c.worker.slots = max_slots;
    c.worker.min_slots = 1;
    c.worker.max_batch = 1;
    c.worker.jobs_per_slot = 1;
    c.worker.scale_tick = Duration::from_millis(50);
    c.worker.scale_down_after = Duration::from_millis(300);
    c
}

/// Drains 300 jobs of 20 ms; returns the drain time and the most slots seen.
async fn drain(config: Config) -> anyhow::Result<(Duration, u64, Duration)> {
    let running = fstore_tests::start_embedded(config).await?;
    let c = TestClient::connect(&running.url(), None).await?;
    c.register(feature(
        "burst",
        "test.probe@1",
        &[("delay_ms", "20")],
        &[],
        600_000,
    ))
    .await?;
    let ids: Vec<String> = (0..300).map(|i| format!("b{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let stats = running
        .worker_stats
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no worker"))?;
    let flow = stats.flow("test.probe@1");
    let started = Instant::now();
    let r = c.get(build::get(&refs, &["burst"])).await?;
    let mut most = 0;
    let mut to_max = None;
    let done = loop {
        let slots = flow.slots.load(std::sync::atomic::Ordering::Relaxed);
        if slots > most {
            most = slots;
            to_max = Some(started.elapsed());
        }
        let t = c.ticket(&r.ticket).await?;
        if t.results.iter().all(|x| x.status() == Status::Ready) {
            break started.elapsed();
        }
        anyhow::ensure!(started.elapsed() < LONG, "the burst did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    running.shutdown().await;
    Ok((done, most, to_max.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_raises_slots_to_max_and_drains_faster() -> anyhow::Result<()> {
    let (scaled, most, to_max) = drain(scaling_config(4)).await?;
    let (single, _, _) = drain(scaling_config(1)).await?;
    let ratio = single.as_secs_f64() / scaled.as_secs_f64();
    println!(
        "300 jobs of 20 ms: 1 slot drains in {single:?}; autoscaled to {most} slots (max reached after {to_max:?}) drains in {scaled:?}: {ratio:.2}x faster"
    );
    assert_eq!(most, 4, "slots reach the maximum");
    assert!(
        to_max < Duration::from_secs(2),
        "max slots after {to_max:?}"
    );
    assert!(ratio >= 2.0, "autoscaled drain only {ratio:.2}x faster");
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn model_loaded(c: &TestClient) -> Option<bool> {
    let flows = c
        .raw
        .clone()
        .list_flows(c.req(api::ListFlowsRequest {}))
        .await
        .ok()?
        .into_inner();
    let f = flows.flows.iter().find(|f| f.name == "text.minilm")?;
    Some(f.models.iter().any(|m| m.loaded))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_flow_scales_to_zero_unloads_its_model_and_wakes_for_the_next_job()
-> anyhow::Result<()> {
    let mut config = scaling_config(2);
    config.worker.flows.insert(
        "text.minilm".into(),
        fstore::config::FlowSlots {
            min_slots: 0,
            max_slots: 2,
        },
    );
    config.nats.heartbeat = Duration::from_millis(100);
    let running = fstore_tests::start_embedded(config).await?;
    let c = TestClient::connect(&running.url(), None).await?;
    let stats = running
        .worker_stats
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no worker"))?;
    let flow = stats.flow("text.minilm@1");
    assert_eq!(
        flow.slots.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "starts at zero"
    );
    c.register(feature(
        "doc.emb",
        "text.minilm@1",
        &[],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    let ask = |t: &str| {
        let mut r = build::sync(&[], &["doc.emb"], 30_000);
        r.entities = vec![entity(t, &[("text", text(t))])];
        r
    };

    let before = rss_kib();
    let r = c.get(ask("a job arriving at zero wakes the flow")).await?;
    assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
    assert_eq!(
        flow.cold_starts.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let cold = flow
        .last_cold_start_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    wait_until(LONG, "the loaded model to be advertised", || async {
        model_loaded(&c).await.filter(|l| *l)
    })
    .await?;
    let loaded = rss_kib();

    // Idle: zero slots after the cooldown, and the model is gone.
    wait_until(LONG, "zero slots", || async {
        (flow.slots.load(std::sync::atomic::Ordering::Relaxed) == 0).then_some(())
    })
    .await?;
    wait_until(LONG, "the model to be unloaded", || async {
        model_loaded(&c).await.filter(|l| !l)
    })
    .await?;
    let unloaded = rss_kib();
    println!(
        "scale to zero: RSS {} MiB before the first job, {} MiB with the model loaded, {} MiB after unloading; cold start {cold} ms",
        before / 1024,
        loaded / 1024,
        unloaded / 1024
    );

    // The next job wakes it again.
    let r = c.get(ask("and the next one too")).await?;
    assert_eq!(r.results[0].status(), Status::Ready);
    assert_eq!(
        flow.cold_starts.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    running.shutdown().await;
    Ok(())
}

/// Sends `n` SYNC misses of a 1.5 s flow, one every 200 ms, with the default slot
/// settings; returns each one's latency.
async fn lone_misses(n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut config = test_config();
    let defaults = fstore::config::WorkerConfig::default();
    config.worker.slots = defaults.slots;
    config.worker.jobs_per_slot = defaults.jobs_per_slot;
    config.worker.scale_tick = defaults.scale_tick;
    let running = fstore_tests::start_embedded(config).await?;
    let c = TestClient::connect(&running.url(), None).await?;
    c.register(feature(
        "slow",
        "test.probe@1",
        &[("delay_ms", "1500")],
        &[],
        600_000,
    ))
    .await?;
    let calls = (0..n).map(|i| {
        let c = c.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200) * i as u32).await;
            let started = Instant::now();
            let r = c
                .get(build::sync(&[&format!("lone{i}")], &["slow"], 20_000))
                .await?;
            anyhow::ensure!(r.results[0].status() == Status::Ready, "{r:?}");
            Ok(started.elapsed())
        }
    });
    let latencies = futures::future::try_join_all(calls).await?;
    running.shutdown().await;
    Ok(latencies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lone_slow_jobs_do_not_wait_for_each_other() -> anyhow::Result<()> {
    let two = lone_misses(2).await?;
    let eight = lone_misses(8).await?;
    let ms = |l: &[Duration]| l.iter().map(|d| d.as_millis()).collect::<Vec<_>>();
    println!(
        "lone misses of 1.5 s, 200 ms apart, default slots: 2 → {:?} ms; 8 → {:?} ms",
        ms(&two),
        ms(&eight)
    );
    // Waiting behind the first would take 1.3 s + 1.5 s.
    assert!(
        two[1] < Duration::from_millis(2_300),
        "the second waited for the first: {two:?}"
    );
    Ok(())
}
