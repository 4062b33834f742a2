//! Real processes on one nats-server: two `fstore serve` replicas and two `fstore
//! worker` processes. Registration on one replica is live on the other; a ticket planned
//! on one is answered by the other, also after the first is killed with SIGKILL; and
//! 1,000 identical concurrent requests spread over both replicas enqueue one job per
//! node; a backfill whose replica is killed is continued by the other, computing no
//! node twice.

use std::time::{Duration, Instant};

use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, f64_of, feature};
use fstore_tests::nats::NatsServer;
use fstore_tests::process::Proc;
use fstore_tests::{TestClient, wait_until};

const LONG: Duration = Duration::from_secs(30);

struct Cluster {
    nats: NatsServer,
    dir: tempfile::TempDir,
    replicas: Vec<(Proc, String)>,
    workers: Vec<Proc>,
    /// An API key of tenant `acme`: the replicas require one.
    key: tokio::sync::OnceCell<String>,
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FSTORE_SERVER__RECHECK_INTERVAL", "100ms"),
        ("FSTORE_NATS__HEARTBEAT", "500ms"),
        ("FSTORE_WORKER__RETRY_BASE", "20ms"),
        ("FSTORE_BACKFILL__LEASE", "1500ms"),
        ("FSTORE_BACKFILL__SCAN_INTERVAL", "200ms"),
        ("FSTORE_BACKFILL__CHUNK_ENTITIES", "10"),
        ("FSTORE_BACKFILL__WINDOW", "2"),
        ("FSTORE_SERVER__STATS_INTERVAL", "200ms"),
        // JetStream reserves the log's max bytes from the free disk (default 10 GiB).
        ("FSTORE_LOG__MAX_BYTES", "268435456"),
    ]
}

impl Cluster {
    async fn start(replicas: usize, workers: usize) -> anyhow::Result<Cluster> {
        let nats = NatsServer::start()?;
        let dir = tempfile::tempdir()?;
        let mut c = Cluster {
            nats,
            dir,
            replicas: Vec::new(),
            workers: Vec::new(),
            key: tokio::sync::OnceCell::new(),
        };
        for i in 0..workers {
            let url = c.nats.url();
            let p = Proc::fstore(
                &format!("worker{i}"),
                &["worker", "--nats", &url],
                &env(),
                c.dir.path(),
            )?;
            c.workers.push(p);
        }
        for i in 0..replicas {
            let url = c.nats.url();
            let mut p = Proc::fstore(
                &format!("serve{i}"),
                &["serve", "--nats", &url, "--listen", "127.0.0.1:0"],
                &env(),
                c.dir.path(),
            )?;
            let address = p.listening(LONG).await?;
            c.replicas.push((p, address));
        }
        Ok(c)
    }

    /// The first admin key of tenant `acme`, made as an operator makes it: `fstore auth
    /// create-key --nats` on the shared store (the replicas require keys).
    async fn key(&self) -> anyhow::Result<String> {
        let url = self.nats.url();
        let key = self
            .key
            .get_or_try_init(|| async {
                let out = std::process::Command::new(fstore_tests::process::fstore_binary()?)
                    .args(["auth", "create-key", "--nats", &url, "--for", "acme"])
                    .args(["--role", "admin", "--role", "write", "--role", "read"])
                    .env("FSTORE_LOG__MAX_BYTES", "268435456")
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                anyhow::Ok(String::from_utf8(out.stdout)?.trim().to_string())
            })
            .await?;
        Ok(key.clone())
    }

    async fn client(&self, i: usize) -> anyhow::Result<TestClient> {
        let url = self.replicas[i].1.clone();
        let logs = self.replicas[i].0.log.clone();
        let key = self.key().await?;
        wait_until(
            LONG,
            &format!("replica {i} to accept calls (log: {})", logs.display()),
            || async { Some(TestClient::connect(&url, None).await.ok()?.with_key(&key)) },
        )
        .await
    }

    /// Jobs ever enqueued, and deliveries that were redeliveries, from JetStream itself.
    async fn job_counts(&self) -> anyhow::Result<(u64, u64)> {
        let client = async_nats::connect(self.nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("FSTORE_JOBS").await?;
        let enqueued = stream.info().await?.state.last_sequence;
        let mut redelivered = 0;
        let mut consumers = stream.consumers();
        while let Some(info) = futures::StreamExt::next(&mut consumers).await {
            redelivered += info?.num_redelivered as u64;
        }
        Ok((enqueued, redelivered))
    }
}

fn probe(name: &str, delay_ms: u64) -> api::FeatureDefinition {
    feature(
        name,
        "test.probe@1",
        &[("delay_ms", &delay_ms.to_string()), ("value", "5")],
        &[],
        600_000,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_and_workers_cooperate_through_nats() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2, 2).await?;
    let r1 = cluster.client(0).await?;
    let r2 = cluster.client(1).await?;

    // Both workers advertise; every replica sees them.
    wait_until(LONG, "two live workers for test.probe", || async {
        let flows = r2
            .raw
            .clone()
            .list_flows(r2.req(api::ListFlowsRequest {}))
            .await
            .ok()?
            .into_inner();
        flows
            .flows
            .iter()
            .any(|f| f.name == "test.probe" && f.live_workers == 2)
            .then_some(())
    })
    .await?;

    // Registered on replica 1, live on replica 2 within a second.
    r1.register(probe("mp.root", 300)).await?;
    r1.register(feature(
        "mp.leaf",
        "num.affine@1",
        &[("scale", "2")],
        &[("x", "mp.root")],
        600_000,
    ))
    .await?;
    let started = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "replica 2 to see mp.leaf",
        || async {
            r2.raw
                .clone()
                .describe_feature(r2.req(api::DescribeFeatureRequest {
                    feature: "mp.leaf".into(),
                }))
                .await
                .ok()
        },
    )
    .await?;
    let visible_after = started.elapsed();
    println!("registration visible on the other replica after {visible_after:?}");
    assert!(visible_after < Duration::from_secs(1));

    // Requested on replica 2, polled on replica 1.
    let r = r2.get(build::get(&["e1"], &["mp.leaf"])).await?;
    assert_eq!(r.results[0].status(), Status::Pending);
    let done = r1.until_done(&r.ticket, LONG).await?;
    assert_eq!(done.results[0].status(), Status::Ready);
    assert_eq!(f64_of(&done.results[0]), Some(10.0));

    // 1,000 identical concurrent requests over both replicas: one job per node.
    let (before, _) = cluster.job_counts().await?;
    let calls = (0..1000).map(|i| {
        let c = if i % 2 == 0 { r1.clone() } else { r2.clone() };
        async move { c.get(build::get(&["same"], &["mp.leaf"])).await }
    });
    let answers: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let ticket = answers
        .iter()
        .find(|a: &&api::GetFeaturesResponse| !a.ticket.is_empty())
        .map(|a| a.ticket.clone())
        .ok_or_else(|| anyhow::anyhow!("no pending answer"))?;
    let done = r2.until_done(&ticket, LONG).await?;
    assert_eq!(f64_of(&done.results[0]), Some(10.0));
    let (after, redelivered) = cluster.job_counts().await?;
    println!(
        "1000 concurrent identical requests over 2 replicas: {} jobs enqueued for 2 nodes, {redelivered} redeliveries",
        after - before
    );
    assert_eq!(after - before, 2, "one job per node (mp.root, mp.leaf)");
    assert_eq!(redelivered, 0);

    // The replica that planned a request dies before it completes: the other answers.
    let r = r1.get(build::get(&["e2"], &["mp.leaf"])).await?;
    assert_eq!(r.results[0].status(), Status::Pending);
    cluster.replicas[0].0.kill();
    let done = r2.until_done(&r.ticket, LONG).await?;
    assert_eq!(done.results[0].status(), Status::Ready);
    assert_eq!(f64_of(&done.results[0]), Some(10.0));

    // Workers shut down cleanly on SIGTERM.
    for w in &mut cluster.workers {
        w.terminate(Duration::from_secs(10))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_nats_says_how_to_run() -> anyhow::Result<()> {
    let out = std::process::Command::new(fstore_tests::process::fstore_binary()?)
        .arg("worker")
        .env_remove("FSTORE_NATS")
        .output()?;
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--nats"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_survives_the_death_of_its_replica() -> anyhow::Result<()> {
    use fstore_proto::api::BackfillState;
    let mut cluster = Cluster::start(2, 2).await?;
    let r1 = cluster.client(0).await?;
    cluster.client(1).await?;
    r1.register(probe("mp.bulk", 40)).await?;
    let key = Some(cluster.key().await?);
    let clients = [
        fstore::client::Client::connect(&cluster.replicas[0].1, None)
            .await?
            .with_api_key(key.clone()),
        fstore::client::Client::connect(&cluster.replicas[1].1, None)
            .await?
            .with_api_key(key),
    ];
    let entities: Vec<api::EntityRequest> = (0..300)
        .map(|i| api::EntityRequest {
            entity_id: format!("b{i}"),
            ..Default::default()
        })
        .collect();
    let b = clients[0]
        .start_backfill(vec!["mp.bulk".into()], None, entities)
        .await?;
    // Find the replica that runs it once some chunks are done, and kill it.
    let running = wait_until(LONG, "the backfill to make progress", || async {
        let b = clients[1].get_backfill(b.id.clone()).await.ok()?;
        (b.done >= 40 && !b.runner.is_empty()).then_some(b)
    })
    .await?;
    let holder = cluster
        .replicas
        .iter()
        .position(|(p, _)| {
            p.pid()
                .is_some_and(|pid| running.runner.contains(&format!("-{pid}-")))
        })
        .ok_or_else(|| anyhow::anyhow!("no replica runs {:?}", running.runner))?;
    cluster.replicas[holder].0.kill();
    let other = &clients[1 - holder];
    let done = wait_until(
        Duration::from_secs(60),
        "the other replica to finish it",
        || async {
            let b = other.get_backfill(b.id.clone()).await.ok()?;
            (b.state() != BackfillState::Running).then_some(b)
        },
    )
    .await?;
    println!(
        "backfill of 300 entities, its replica killed at {} done: {done:?}",
        running.done
    );
    assert_eq!(done.state(), BackfillState::Done);
    assert_eq!(done.failed, 0);
    assert_eq!(done.done + done.skipped, 300, "{done:?}");
    assert!(!done.runner.contains(&running.runner), "taken over");
    // One job per node: the survivor joins what the dead replica had queued. Its one
    // claim in flight, if any, is taken over: when the kill fell between that job's
    // enqueue and its claim's submitted mark (a millisecond), that node runs twice.
    let (enqueued, _) = cluster.job_counts().await?;
    assert!(
        (300..=301).contains(&enqueued),
        "{enqueued} jobs for 300 nodes"
    );
    let log = other
        .read_log(api::ReadLogRequest {
            features: vec!["mp.bulk".into()],
            ..Default::default()
        })
        .await?;
    let records: Vec<api::LogEvent> = futures::TryStreamExt::try_collect(log).await?;
    assert_eq!(records.len() as u64, enqueued, "one record per compute");
    Ok(())
}

/// A flow's rate limit is one budget for all its workers: two `fstore worker`
/// processes, each with `worker.rates."test.probe" = "20/s"`, together compute 20 jobs
/// a second, not 40.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_across_two_worker_processes() -> anyhow::Result<()> {
    const RATE: f64 = 20.0;
    const JOBS: usize = 100;
    let nats = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("workers.toml");
    std::fs::write(
        &config,
        "[worker]\nmax_batch = 1\n\n[worker.rates]\n\"test.probe\" = \"20/s\"\n",
    )?;
    let config = config.to_string_lossy().into_owned();
    let url = nats.url();
    let _workers = (0..2)
        .map(|i| {
            Proc::fstore(
                &format!("worker{i}"),
                &["worker", "--nats", &url, "--config", &config],
                &env(),
                dir.path(),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut serve = Proc::fstore(
        "serve",
        &["serve", "--nats", &url, "--listen", "127.0.0.1:0"],
        &env(),
        dir.path(),
    )?;
    let address = serve.listening(LONG).await?;
    let key = fstore_tests::api_key(&url, "acme").await?;
    let c = wait_until(LONG, "the replica to accept calls", || async {
        Some(
            TestClient::connect(&address, None)
                .await
                .ok()?
                .with_key(&key),
        )
    })
    .await?;
    wait_until(LONG, "both workers to advertise the flow", || async {
        let flows = c
            .raw
            .clone()
            .list_flows(c.req(api::ListFlowsRequest {}))
            .await
            .ok()?;
        let probe = flows
            .into_inner()
            .flows
            .into_iter()
            .find(|f| f.name == "test.probe")?;
        (probe.live_workers >= 2).then_some(())
    })
    .await?;
    c.register(probe("paced", 0)).await?;
    let ids: Vec<String> = (0..JOBS).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    c.get(build::get(&refs, &["paced"])).await?;
    let times = wait_until(
        Duration::from_secs(60),
        "every job to be computed",
        || async {
            let log = c.log(&["paced"], false).await.ok()?;
            let mut times: Vec<i64> = log
                .into_iter()
                .filter_map(|e| e.record)
                .map(|r| r.computed_at_ms)
                .collect();
            times.sort_unstable();
            (times.len() >= JOBS).then_some(times)
        },
    )
    .await?;
    let span_s = (times[JOBS - 1] - times[0]) as f64 / 1000.0;
    let rate = (JOBS - 1) as f64 / span_s;
    println!("{JOBS} jobs over two workers limited to {RATE}/s: {rate:.2} jobs/s");
    assert!(
        (rate - RATE).abs() / RATE <= 0.10,
        "{rate:.2} jobs/s is not within 10% of {RATE}/s"
    );
    Ok(())
}

/// The staleness view adds up every replica: calls served by replica 0 show in
/// DescribeFeature on replica 1, which says it adds up two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn describe_adds_up_what_every_replica_served() -> anyhow::Result<()> {
    let cluster = Cluster::start(2, 1).await?;
    let (a, b) = (cluster.client(0).await?, cluster.client(1).await?);
    a.register(probe("counted", 0)).await?;
    let r = a
        .get(build::sync(&["e1", "e2"], &["counted"], 10_000))
        .await?;
    assert!(
        r.results.iter().all(|x| x.status() == Status::Ready),
        "{r:?}"
    );
    let r = a.get(build::get(&["e1"], &["counted"])).await?;
    assert_eq!(r.results[0].status(), Status::Ready);
    let stats = wait_until(LONG, "replica 1 to see replica 0's figures", || async {
        let d = b.describe("counted").await.ok()?;
        let stats = d.stats?;
        (stats.misses == 2 && stats.hits == 1).then_some(stats)
    })
    .await?;
    assert_eq!(stats.replicas, 2, "{stats:?}");
    assert!((stats.hit_rate - 1.0 / 3.0).abs() < 1e-9, "{stats:?}");
    Ok(())
}
