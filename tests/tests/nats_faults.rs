//! The NATS backend when things go wrong: ready notifications lost (the KV stays the
//! truth, so waiters only wait a little longer), and a NATS outage (calls get
//! UNAVAILABLE instead of hanging, and service resumes by itself).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fstore::server;
use fstore_flows::Catalog;
use fstore_proto::api::Status;
use fstore_substrate::{Error, Notifier};
use fstore_tests::build::{self, f64_of, feature};
use fstore_tests::nats::NatsServer;
use fstore_tests::{TestClient, test_config, wait_until};
use futures::stream::{BoxStream, StreamExt};
use tonic::Code;

/// Drops every notification on the floor.
struct Lossy;

#[async_trait]
impl Notifier for Lossy {
    async fn publish(&self, _key: &str) -> Result<(), Error> {
        Ok(())
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, String>, Error> {
        Ok(futures::stream::pending().boxed())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_notifications_only_delay() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut config = test_config();
    config.nats.url = Some(nats.url());
    config.server.recheck_interval = Duration::from_millis(300);
    let mut substrate = server::substrate(&config).await?;
    substrate.notifier = Arc::new(Lossy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = server::start(config, substrate, Catalog::builtins(), listener).await?;
    let client = TestClient::connect(&running.url(), None).await?;
    client
        .register(feature(
            "a",
            "test.probe@1",
            &[("value", "3")],
            &[],
            600_000,
        ))
        .await?;
    client
        .register(feature(
            "b",
            "num.affine@1",
            &[("scale", "2")],
            &[("x", "a")],
            600_000,
        ))
        .await?;
    client
        .register(feature(
            "c",
            "num.affine@1",
            &[("offset", "1")],
            &[("x", "b")],
            600_000,
        ))
        .await?;

    // Dependents are enqueued by completions, not notifications; SYNC falls back to its
    // periodic re-check, so it finishes, a little later than with notifications.
    let started = Instant::now();
    let r = client.get(build::sync(&["e"], &["c"], 10_000)).await?;
    let took = started.elapsed();
    assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
    assert_eq!(f64_of(&r.results[0]), Some(7.0));
    println!("SYNC with every notification lost took {took:?}");
    assert!(took < Duration::from_secs(3));
    running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_answers_unavailable_then_recovers() -> anyhow::Result<()> {
    let mut nats = NatsServer::start()?;
    let mut config = test_config();
    config.nats.url = Some(nats.url());
    let running = fstore_tests::start_on_nats(config, &nats.url()).await?;
    let client = TestClient::connect(&running.url(), None).await?;
    client
        .register(feature("p", "test.probe@1", &[], &[], 600_000))
        .await?;
    let r = client.get(build::sync(&["before"], &["p"], 5_000)).await?;
    assert_eq!(r.results[0].status(), Status::Ready);

    nats.kill();
    let started = Instant::now();
    let r = client.get(build::get(&["during"], &["p"])).await;
    let took = started.elapsed();
    let status = r
        .err()
        .ok_or_else(|| anyhow::anyhow!("a call during the outage succeeded"))?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("NATS"), "{}", status.message());
    println!(
        "during the outage: {:?} after {took:?}: {}",
        status.code(),
        status.message()
    );
    assert!(took < Duration::from_secs(5), "no hang: {took:?}");

    // A cached value is still served from the replica's L1.
    let cached = client.get(build::get(&["before"], &["p"])).await?;
    assert_eq!(cached.results[0].status(), Status::Ready, "{cached:?}");

    nats.restart()?;
    let restarted = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "service to resume after the restart",
        || async {
            let r = client.get(build::sync(&["after"], &["p"], 2_000)).await;
            println!(
                "  +{:?}: {:?}",
                restarted.elapsed(),
                r.as_ref()
                    .map(|r| r.results[0].status())
                    .map_err(|e| e.message().to_string())
            );
            let r = r.ok()?;
            (r.results[0].status() == Status::Ready).then_some(())
        },
    )
    .await?;
    println!(
        "a new value was computed {:?} after nats-server came back",
        restarted.elapsed()
    );
    running.shutdown().await;
    Ok(())
}
