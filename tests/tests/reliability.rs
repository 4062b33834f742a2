//! Reliability properties on every backend: fairness between tenants, back-pressure
//! that refuses new work without dropping accepted work, SYNC under a backlog, poison
//! at volume, (NATS) leases extended by long computations, and no waiting job lost when
//! continuing it fails halfway.

use std::time::{Duration, Instant};

use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, entity, f64_of, feature};
use fstore_tests::harness::{Backend, Harness};
use fstore_tests::{TestClient, test_config, wait_until};
use tonic::Code;

const LONG: Duration = Duration::from_secs(60);

fn probe(name: &str, params: &[(&str, &str)]) -> api::FeatureDefinition {
    feature(name, "test.probe@1", params, &[], 600_000)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn get_many(entities: &[String], feature: &str) -> api::GetFeaturesRequest {
    let refs: Vec<&str> = entities.iter().map(String::as_str).collect();
    build::get(&refs, &[feature])
}

async fn all_ready(c: &TestClient, ticket: &str) -> anyhow::Result<()> {
    let done = c.until_done(ticket, LONG).await?;
    let bad: Vec<_> = done
        .results
        .iter()
        .filter(|r| r.status() != Status::Ready)
        .collect();
    anyhow::ensure!(bad.is_empty(), "not READY: {:?}", bad.first());
    Ok(())
}

/// Tenant B's 20 jobs, sent after A's 5,000, finish in under 20% of A's drain time.
async fn a_flooding_tenant_does_not_hold_back_another(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.slots = 2;
    config.worker.max_batch = 16;
    let h = Harness::with_config(b, config).await?;
    let a = h.client.with_tenant("flood");
    let b_client = h.client.with_tenant("quiet");
    for c in [&a, &b_client] {
        c.register(probe("work", &[("delay_ms", "5")])).await?;
    }
    let started = Instant::now();
    let mut tickets = Vec::new();
    let calls = (0..5).map(|k| {
        let a = a.clone();
        async move { a.get(get_many(&ids(&format!("a{k}-"), 1000), "work")).await }
    });
    for r in futures::future::join_all(calls).await {
        tickets.push(r?.ticket);
    }
    let b_sent = Instant::now();
    let rb = b_client.get(get_many(&ids("b", 20), "work")).await?;
    all_ready(&b_client, &rb.ticket).await?;
    let b_took = b_sent.elapsed();
    for t in &tickets {
        all_ready(&a, t).await?;
    }
    let a_took = started.elapsed();
    println!(
        "{b:?}: tenant A drained 5000 jobs in {a_took:?}; tenant B's 20 jobs took {b_took:?} ({:.1}%)",
        100.0 * b_took.as_secs_f64() / a_took.as_secs_f64()
    );
    assert!(
        b_took.as_secs_f64() < 0.2 * a_took.as_secs_f64(),
        "B waited {b_took:?} of A's {a_took:?}"
    );
    h.stop().await;
    Ok(())
}

/// Past the bound, GetFeatures answers RESOURCE_EXHAUSTED with a retry hint; the jobs it
/// accepted still complete.
async fn a_full_queue_refuses_and_keeps_what_it_accepted(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.queue.max_queued_per_tenant = 10;
    config.worker.slots = 1;
    config.worker.max_batch = 1;
    let h = Harness::with_config(b, config).await?;
    h.register(probe("slow", &[("delay_ms", "100")])).await?;
    let entities = ids("e", 40);
    let err = h
        .client
        .get(get_many(&entities, "slow"))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("40 jobs fit a queue of 10"))?;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("is full") && err.metadata().get("retry-after-ms").is_some(),
        "{err:?}"
    );
    // Every job the store accepted completes; asking again finds them, none recomputed.
    let accepted = wait_until(LONG, "the accepted jobs to drain", || async {
        let stats = h.running.worker_stats.as_ref()?;
        let done = stats.computes_of("slow@1");
        (done >= 10
            && h.running
                .substrate
                .queue
                .depth(&fstore_flows::FlowId::new("test.probe", 1))
                .await
                .ok()?
                .total
                == 0)
            .then_some(done)
    })
    .await?;
    let first: Vec<String> = entities.iter().take(accepted as usize).cloned().collect();
    let r = h.client.get(get_many(&first, "slow")).await?;
    assert!(
        r.results.iter().all(|x| x.status() == Status::Ready),
        "accepted jobs were kept: {:?}",
        r.results.iter().map(|x| x.status()).collect::<Vec<_>>()
    );
    assert_eq!(h.computes("slow@1"), accepted);
    h.stop().await;
    Ok(())
}

/// With the queue backlogged, SYNC returns by its deadline (plus 100 ms) with the
/// pending features and a ticket.
async fn sync_under_backlog_keeps_its_deadline(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.slots = 1;
    config.worker.max_batch = 4;
    let h = Harness::with_config(b, config).await?;
    h.register(probe("busy", &[("delay_ms", "50")])).await?;
    let backlog = h.client.get(get_many(&ids("bg", 200), "busy")).await?;
    assert!(!backlog.ticket.is_empty());
    for wait_ms in [100u64, 300] {
        let started = Instant::now();
        let r = h
            .client
            .get(build::sync(
                &[&format!("late{wait_ms}")],
                &["busy"],
                wait_ms,
            ))
            .await?;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(wait_ms + 100),
            "SYNC({wait_ms} ms) took {took:?}"
        );
        assert_eq!(r.results[0].status(), Status::Pending);
        assert!(!r.ticket.is_empty());
    }
    h.stop().await;
    Ok(())
}

/// 1,000 requests mixing valid, malformed and poison inputs: every valid one READY,
/// every other FAILED or refused with a message, the workers keep serving, and the
/// dead-letter count equals the poison count.
async fn poison_and_bad_input_at_volume(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.max_attempts = 3;
    config.worker.retry_base = std::time::Duration::from_millis(5);
    let h = Harness::with_config(b, config).await?;
    let poison: Vec<String> = ids("poison", 50);
    h.register(probe(
        "p",
        &[("fail", "transient"), ("fail_entities", &poison.join(","))],
    ))
    .await?;
    h.register(feature(
        "len",
        "text.stats@1",
        &[],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    let mut calls = Vec::new();
    for i in 0..1000usize {
        let c = h.client.clone();
        let req = match i % 20 {
            // 50 poison entities
            0 => build::sync(&[&poison[i / 20]], &["p"], 20_000),
            // 50 malformed: a mistyped request input
            1 => {
                let mut r = build::sync(&[], &["len"], 20_000);
                r.entities = vec![entity(&format!("m{i}"), &[("text", build::f64(1.0))])];
                r
            }
            // 50 malformed: an unknown feature
            2 => build::sync(&[&format!("u{i}")], &["nope"], 20_000),
            // 850 valid
            _ => build::sync(&[&format!("v{i}")], &["p"], 20_000),
        };
        calls.push(async move { (i, c.get(req).await) });
    }
    let (mut ready, mut failed, mut refused) = (0, 0, 0);
    for (i, r) in futures::future::join_all(calls).await {
        match (i % 20, r) {
            (0, Ok(r)) => {
                assert_eq!(r.results[0].status(), Status::Failed, "{r:?}");
                assert!(
                    r.results[0].error.contains("gave up after 3 tries"),
                    "{}",
                    r.results[0].error
                );
                failed += 1;
            }
            (1, Err(s)) => {
                assert_eq!(s.code(), Code::InvalidArgument);
                assert!(s.message().contains("must be a string"), "{}", s.message());
                refused += 1;
            }
            (2, Err(s)) => {
                assert_eq!(s.code(), Code::NotFound);
                refused += 1;
            }
            (k, Ok(r)) if k > 2 => {
                assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
                assert_eq!(f64_of(&r.results[0]), Some(1.0));
                ready += 1;
            }
            (k, other) => anyhow::bail!("request {i} (kind {k}) answered {other:?}"),
        }
    }
    assert_eq!((ready, failed, refused), (850, 50, 100));
    let dlq = h
        .client
        .raw
        .clone()
        .list_dead_letters(h.client.req(api::ListDeadLettersRequest { limit: 1 }))
        .await?
        .into_inner();
    assert_eq!(dlq.total, 50, "one dead letter per poison input");
    // Still serving.
    let r = h.client.get(build::sync(&["after"], &["p"], 5_000)).await?;
    assert_eq!(r.results[0].status(), Status::Ready);
    println!(
        "{b:?}: 1000 requests -> {ready} READY, {failed} FAILED (poison), {refused} refused, {} dead letters",
        dlq.total
    );
    h.stop().await;
    Ok(())
}

fstore_tests::on_every_backend!(
    a_flooding_tenant_does_not_hold_back_another,
    a_full_queue_refuses_and_keeps_what_it_accepted,
    sync_under_backlog_keeps_its_deadline,
    poison_and_bad_input_at_volume,
);

/// A job that runs longer than the ack wait is not redelivered: the worker extends its
/// lease while it computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_jobs_extend_their_lease() -> anyhow::Result<()> {
    let mut config = test_config();
    config.nats.ack_wait = Duration::from_secs(1);
    let h = Harness::with_config(Backend::Nats, config).await?;
    h.register(probe("long", &[("delay_ms", "2500")])).await?;
    let r = h.client.get(build::sync(&["e"], &["long"], 10_000)).await?;
    assert_eq!(r.results[0].status(), Status::Ready);
    assert_eq!(r.results[0].attempts, 1, "delivered once");
    assert_eq!(h.computes("long@1"), 1);
    h.stop().await;
    Ok(())
}

/// Quotas: a tenant calling past its calls per second is refused at once with a retry
/// hint, while another tenant's calls pass and keep their latency (printed: p50 and p99
/// of the calm tenant's cached reads alone and during the flood).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_over_its_quota_is_refused_and_another_is_not_slowed() -> anyhow::Result<()> {
    const RATE: f64 = 100.0;
    const FLOOD: Duration = Duration::from_secs(2);
    let mut config = test_config();
    config.quotas.calls_per_second = 1000.0;
    config.quotas.burst = 50;
    config.quotas.tenants.insert(
        "greedy".into(),
        fstore::config::TenantQuota {
            calls_per_second: Some(RATE),
            burst: Some(10),
        },
    );
    let h = Harness::with_config(Backend::Embedded, config).await?;
    let greedy = h.client.with_tenant("greedy");
    let calm = h.client.with_tenant("calm");
    for c in [&greedy, &calm] {
        c.register(probe("q", &[])).await?;
        let r = c.get(build::sync(&["e"], &["q"], 10_000)).await?;
        assert_eq!(r.results[0].status(), Status::Ready);
    }
    // The calm tenant's cached reads: latencies in µs, sorted.
    let reads = |n: usize| {
        let calm = calm.clone();
        async move {
            let mut took = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = calm.get(build::get(&["e"], &["q"])).await?;
                took.push(t.elapsed().as_micros() as u64);
                anyhow::ensure!(r.results[0].status() == Status::Ready, "{r:?}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            took.sort_unstable();
            anyhow::Ok(took)
        }
    };
    let alone = reads(200).await?;

    let started = Instant::now();
    let floods = (0..8).map(|_| {
        let greedy = greedy.clone();
        async move {
            let (mut passed, mut refused, mut hinted) = (0u64, 0u64, 0u64);
            while started.elapsed() < FLOOD && passed + refused < 20_000 {
                match greedy.get(build::get(&["e"], &["q"])).await {
                    Ok(_) => passed += 1,
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        refused += 1;
                        hinted += u64::from(s.metadata().get("retry-after-ms").is_some());
                        assert!(s.message().contains("quotas.tenants"), "{}", s.message());
                    }
                    Err(s) => anyhow::bail!("unexpected {s:?}"),
                }
            }
            anyhow::Ok((passed, refused, hinted))
        }
    });
    let (flooded, during) = tokio::join!(futures::future::try_join_all(floods), reads(200));
    let during = during?;
    let (passed, refused, hinted) = flooded?
        .into_iter()
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let secs = started.elapsed().as_secs_f64();
    let pct = |v: &[u64], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    println!(
        "quota {RATE}/s: greedy passed {passed}, refused {refused} in {secs:.1} s; calm p50/p99 \
         {}/{} µs alone, {}/{} µs during the flood",
        pct(&alone, 0.5),
        pct(&alone, 0.99),
        pct(&during, 0.5),
        pct(&during, 0.99)
    );
    assert!(refused > 0, "the flood went past the quota");
    assert_eq!(hinted, refused, "every refusal says when to retry");
    let allowed = RATE * secs + 10.0;
    assert!(
        (passed as f64) <= allowed * 1.1,
        "passed {passed}, the quota allows about {allowed:.0}"
    );
    h.stop().await;
    Ok(())
}

/// Enqueues through the embedded queue, failing one chosen enqueue (the `fail_at`-th).
struct FailOneEnqueue {
    inner: std::sync::Arc<dyn fstore_substrate::JobQueue>,
    calls: std::sync::atomic::AtomicU32,
    fail_at: u32,
}

#[async_trait::async_trait]
impl fstore_substrate::JobQueue for FailOneEnqueue {
    async fn enqueue(
        &self,
        job: &fstore_substrate::ComputeJob,
        headers: &fstore_substrate::Headers,
    ) -> Result<fstore_substrate::queue::Enqueued, fstore_substrate::Error> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.fail_at {
            return Err(fstore_substrate::Error::Unavailable(
                "enqueue failed on purpose".into(),
            ));
        }
        self.inner.enqueue(job, headers).await
    }

    async fn pull(
        &self,
        flow: &fstore_flows::FlowId,
        lanes: &[fstore_substrate::Lane],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<fstore_substrate::Delivery>, fstore_substrate::Error> {
        self.inner.pull(flow, lanes, max, wait).await
    }

    async fn depth(
        &self,
        flow: &fstore_flows::FlowId,
    ) -> Result<fstore_substrate::Depth, fstore_substrate::Error> {
        self.inner.depth(flow).await
    }
}

/// A server on `substrate` with `a` (a probe answering 2) and `b` = 3 × `a`: `b`'s job
/// waits for `a`'s value, then is enqueued by `a`'s settling.
async fn serve_a_and_b(
    config: fstore::config::Config,
    substrate: fstore_substrate::Substrate,
) -> anyhow::Result<(fstore::server::Running, TestClient)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = fstore::server::start(
        config,
        substrate,
        fstore_flows::Catalog::builtins(),
        listener,
    )
    .await?;
    let c = TestClient::connect(&running.url(), None).await?;
    c.register(probe("a", &[("value", "2")])).await?;
    c.register(feature(
        "b",
        "num.affine@1",
        &[("scale", "3")],
        &[("x", "a")],
        600_000,
    ))
    .await?;
    Ok((running, c))
}

/// The soak's lost calls, made deterministic: when a value is stored and enqueueing a
/// job that waited for it fails (a timeout on a loaded machine), the job must not be
/// lost. Its input's job is delivered again and settles again; the waiting job, still
/// in the waiters (they are removed only once continued), is enqueued by that second
/// settling and the call ends READY (it used to stay PENDING for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dependent_whose_enqueue_failed_is_not_lost() -> anyhow::Result<()> {
    let config = test_config();
    let mut substrate = fstore::server::substrate(&config).await?;
    // Enqueue 1 is `a`'s job; enqueue 2 is `b`'s, after `a` is stored.
    substrate.queue = std::sync::Arc::new(FailOneEnqueue {
        inner: substrate.queue.clone(),
        calls: Default::default(),
        fail_at: 2,
    });
    let (running, c) = serve_a_and_b(config, substrate).await?;
    let r = c.get(build::sync(&["e"], &["b"], 10_000)).await?;
    assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
    assert_eq!(f64_of(&r.results[0]), Some(6.0));
    running.shutdown().await;
    Ok(())
}

/// Removes waiting jobs through the embedded store, but answers the first removal that
/// removes anything with an error after it landed: an acknowledgement lost on the way
/// back, as a NATS cluster's leader change can lose it.
struct LoseOneRemovalAnswer {
    inner: std::sync::Arc<dyn fstore_substrate::WaiterStore>,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl fstore_substrate::WaiterStore for LoseOneRemovalAnswer {
    async fn add(
        &self,
        input_key: &str,
        job: &fstore_substrate::ComputeJob,
    ) -> Result<(), fstore_substrate::Error> {
        self.inner.add(input_key, job).await
    }

    async fn waiting(
        &self,
        input_key: &str,
    ) -> Result<Vec<fstore_substrate::ComputeJob>, fstore_substrate::Error> {
        self.inner.waiting(input_key).await
    }

    async fn remove(
        &self,
        input_key: &str,
        jobs: &[fstore_substrate::ComputeJob],
    ) -> Result<(), fstore_substrate::Error> {
        self.inner.remove(input_key, jobs).await?;
        if !jobs.is_empty() && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(fstore_substrate::Error::Unavailable(
                "the removal's answer was lost on purpose".into(),
            ));
        }
        Ok(())
    }
}

/// The chaos run's lost calls: taking the jobs that wait on a stored value used to
/// remove them first and enqueue them after, so a removal that landed while its
/// answer was lost (a NATS node killed mid-write) made the settling fail, and its
/// redelivery found nothing left to enqueue. The jobs now leave the waiters only once
/// enqueued: the same lost answer delays nothing, and the call ends READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_to_removing_waiters_loses_no_job() -> anyhow::Result<()> {
    let config = test_config();
    let mut substrate = fstore::server::substrate(&config).await?;
    let lossy = std::sync::Arc::new(LoseOneRemovalAnswer {
        inner: substrate.waiters.clone(),
        lost: Default::default(),
    });
    substrate.waiters = lossy.clone();
    let (running, c) = serve_a_and_b(config, substrate).await?;
    let started = std::time::Instant::now();
    let r = c.get(build::sync(&["e"], &["b"], 10_000)).await?;
    assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
    assert_eq!(f64_of(&r.results[0]), Some(6.0));
    assert!(
        lossy.lost.load(std::sync::atomic::Ordering::SeqCst),
        "the test lost no answer: it tested nothing"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the waiting job waited for a redelivery: {:?}",
        started.elapsed()
    );
    running.shutdown().await;
    Ok(())
}
