//! One trace per request: the gRPC call, the plan, and — through the job's NATS headers —
//! the worker's compute and store share a trace id. Its own test binary, so the global
//! subscriber and propagator belong to this run.

use std::time::Duration;

use fstore_proto::api::Status;
use fstore_tests::build::{self, feature};
use fstore_tests::nats::NatsServer;
use fstore_tests::{TestClient, test_config};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_one_trace_from_call_to_compute() -> anyhow::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(fstore::telemetry::layer(&provider))
        .try_init()?;

    let nats = NatsServer::start()?;
    let running = fstore_tests::start_on_nats(test_config(), &nats.url()).await?;
    let c = TestClient::connect(&running.url(), None).await?;
    c.register(feature(
        "root",
        "test.probe@1",
        &[("delay_ms", "20")],
        &[],
        600_000,
    ))
    .await?;
    c.register(feature(
        "leaf",
        "num.affine@1",
        &[],
        &[("x", "root")],
        600_000,
    ))
    .await?;
    let r = c.get(build::sync(&["e"], &["leaf"], 5_000)).await?;
    assert_eq!(r.results[0].status(), Status::Ready);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = provider.force_flush();

    let spans = exporter.get_finished_spans()?;
    let of = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let calls: Vec<_> = of("get_features");
    let call = calls
        .first()
        .ok_or_else(|| anyhow::anyhow!("no get_features span"))?;
    let trace = call.span_context.trace_id();
    let computes = of("compute");
    let stores = of("store");
    for (name, list) in [
        ("plan", of("plan")),
        ("compute", computes.clone()),
        ("store", stores.clone()),
    ] {
        assert!(
            list.iter().any(|s| s.span_context.trace_id() == trace),
            "no {name} span in the call's trace: {:?}",
            spans
                .iter()
                .map(|s| (s.name.to_string(), s.span_context.trace_id()))
                .collect::<Vec<_>>()
        );
    }
    let in_trace: Vec<String> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .map(|s| {
            format!(
                "{} {:?}",
                s.name,
                s.end_time.duration_since(s.start_time).unwrap_or_default()
            )
        })
        .collect();
    println!("trace {trace}: {}", in_trace.join(", "));
    // Both computes (root, then leaf enqueued by root's completion) are in the trace.
    assert!(
        computes
            .iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .count()
            >= 2
    );
    running.shutdown().await;
    Ok(())
}
