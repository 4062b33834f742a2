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

async fn health(
    url: &str,
) -> anyhow::Result<tonic_health::pb::health_check_response::ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "featurestore.v1.FeatureStore".into(),
        })
        .await?
        .into_inner();
    Ok(r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_nats_and_reflection_lists_the_services() -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut nats = NatsServer::start()?;
    let running = fstore_tests::start_on_nats(test_config(), &nats.url()).await?;
    let url = running.url();
    assert_eq!(health(&url).await?, ServingStatus::Serving);

    nats.kill();
    wait_until(
        Duration::from_secs(10),
        "NOT_SERVING while NATS is down",
        || async { (health(&url).await.ok()? == ServingStatus::NotServing).then_some(()) },
    )
    .await?;
    nats.restart()?;
    wait_until(
        Duration::from_secs(30),
        "SERVING once NATS is back",
        || async { (health(&url).await.ok()? == ServingStatus::Serving).then_some(()) },
    )
    .await?;

    // Server reflection: grpcurl works without the proto files.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await?;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await?
        .into_inner();
    let first = answers
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no reflection answer"))??;
    let services: Vec<String> = match first.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => anyhow::bail!("unexpected reflection answer {other:?}"),
    };
    assert!(
        services.contains(&"featurestore.v1.FeatureStore".to_string()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".to_string()),
        "{services:?}"
    );
    running.shutdown().await;
    Ok(())
}

/// A job consumer deleted by hand (an operator's slip, a botched migration) while jobs
/// wait: the queue notices the jobs with no consumer and creates it again, so every
/// call ends READY without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_consumer_is_created_again_without_a_restart() -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let nats = NatsServer::start()?;
    let mut config = test_config();
    config.nats.url = Some(nats.url());
    config.worker.slots = 1;
    config.worker.max_batch = 1;
    let running = fstore_tests::start_on_nats(config, &nats.url()).await?;
    let client = TestClient::connect(&running.url(), None).await?;
    client
        .register(feature(
            "slow",
            "test.probe@1",
            &[("value", "5"), ("delay_ms", "100")],
            &[],
            600_000,
        ))
        .await?;
    let entities: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = entities.iter().map(String::as_str).collect();
    let r = client.get(build::get(&refs, &["slow"])).await?;

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    let stream = js.get_stream("FSTORE_JOBS").await?;
    let names: Vec<String> = stream.consumer_names().try_collect().await?;
    let deleted: Vec<&String> = names.iter().filter(|n| n.starts_with("c__")).collect();
    anyhow::ensure!(!deleted.is_empty(), "no interactive consumer in {names:?}");
    for name in &deleted {
        stream.delete_consumer(name).await?;
    }
    let left = js
        .get_stream("FSTORE_JOBS")
        .await?
        .info()
        .await?
        .state
        .messages;
    println!("deleted {deleted:?} with {left} jobs left in the stream");

    let done = client
        .until_done(&r.ticket, Duration::from_secs(30))
        .await?;
    for x in &done.results {
        assert_eq!(x.status(), Status::Ready, "{x:?}");
        assert_eq!(f64_of(x), Some(5.0));
    }
    let names: Vec<String> = stream.consumer_names().try_collect().await?;
    assert!(names.iter().any(|n| n.starts_with("c__")), "{names:?}");
    running.shutdown().await;
    Ok(())
}

/// A replica keeps the flow specs it has seen: when the flows bucket cannot be listed
/// (a node stalled mid-listing, the chaos run found; here the bucket is gone), the
/// flows it knows are still listed and registrations that use them still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flows_seen_stay_known_when_the_flows_bucket_cannot_be_listed() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut config = test_config();
    config.nats.url = Some(nats.url());
    let running = fstore_tests::start_on_nats(config, &nats.url()).await?;
    let client = TestClient::connect(&running.url(), None).await?;
    let listed = wait_until(
        Duration::from_secs(10),
        "the probe flow to be listed",
        || async {
            let flows = client.list_flows().await.ok()?;
            flows
                .iter()
                .any(|f| f.name == "test.probe")
                .then_some(flows)
        },
    )
    .await?;

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    js.delete_key_value("fstore_flows").await?;

    let after = client.list_flows().await?;
    assert_eq!(after.len(), listed.len(), "{after:?}");
    assert!(after.iter().any(|f| f.name == "test.probe"));
    client
        .register(feature(
            "p",
            "test.probe@1",
            &[("value", "1")],
            &[],
            600_000,
        ))
        .await?;
    running.shutdown().await;
    Ok(())
}
