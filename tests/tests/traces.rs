//! One trace per request: the gRPC call, the plan, and — through the job's NATS headers —
//! the worker's compute and store share a trace id, in one process and across a serve
//! and a worker process exporting over OTLP. Its own test binary, so the global
//! subscriber and propagator belong to this run.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fstore_proto::api::Status;
use fstore_tests::build::{self, feature};
use fstore_tests::nats::NatsServer;
use fstore_tests::{TestClient, test_config};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The spans this process finished, kept in memory. The SDK's `testing` feature has
/// such an exporter, but enabling it would build opentelemetry for the tests with
/// other features than for the binary, and so twice on a newcomer's machine.
#[derive(Debug, Clone, Default)]
struct Finished(Arc<Mutex<Vec<SpanData>>>);

impl Finished {
    fn spans(&self) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl SpanExporter for Finished {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_one_trace_from_call_to_compute() -> anyhow::Result<()> {
    let exporter = Finished::default();
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

    let spans = exporter.spans();
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

/// A span as the collector received it: its trace, its name, the pid of its process.
#[derive(Debug, Clone)]
struct Received {
    trace: Vec<u8>,
    name: String,
    pid: i64,
}

/// The spans an OTLP collector on a loopback port received, from any process.
#[derive(Default, Clone)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self
            .spans
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?;
        for resource in request.into_inner().resource_spans {
            let pid = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "process.pid")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    any_value::Value::IntValue(pid) => Some(*pid),
                    _ => None,
                })
                .unwrap_or(0);
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        trace: span.trace_id,
                        name: span.name,
                        pid,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serve and worker as two processes exporting over OTLP to a collector this test
/// runs: the call's span (serve) and the computes (worker, through the job's NATS
/// headers) are one trace, and they come from two different processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trace_crosses_from_the_serve_process_to_the_worker_process() -> anyhow::Result<()> {
    use fstore_tests::process::Proc;
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(incoming),
    );
    let nats = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let env = [
        ("FSTORE_OTLP_ENDPOINT", endpoint.as_str()),
        ("FSTORE_AUTH__ENABLED", "false"),
        ("FSTORE_SERVER__DEFAULT_TENANT", "traced"),
        ("FSTORE_LOG__MAX_BYTES", "268435456"),
    ];
    let url = nats.url();
    let mut worker = Proc::fstore("worker", &["worker", "--nats", &url], &env, dir.path())?;
    let args = ["serve", "--nats", &url, "--listen", "127.0.0.1:0"];
    let mut serve = Proc::fstore("serve", &args, &env, dir.path())?;
    let address = serve.listening(Duration::from_secs(30)).await?;
    let c = TestClient::connect(&address, None).await?;
    fstore_tests::wait_until(Duration::from_secs(30), "a live worker", || async {
        let flows = c
            .raw
            .clone()
            .list_flows(c.req(fstore_proto::api::ListFlowsRequest {}))
            .await
            .ok()?
            .into_inner();
        flows.flows.iter().any(|f| f.live_workers > 0).then_some(())
    })
    .await?;
    c.register(feature("root", "test.probe@1", &[], &[], 600_000))
        .await?;
    c.register(feature(
        "leaf",
        "num.affine@1",
        &[],
        &[("x", "root")],
        600_000,
    ))
    .await?;
    let r = c.get(build::sync(&["e"], &["leaf"], 10_000)).await?;
    assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
    // SIGTERM flushes each process's batch exporter.
    serve.terminate(Duration::from_secs(20))?;
    worker.terminate(Duration::from_secs(20))?;
    let spans = collector
        .spans
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    server.abort();
    let (trace, serve_pid) = spans
        .iter()
        .find(|s| s.name == "get_features")
        .map(|s| (s.trace.clone(), s.pid))
        .ok_or_else(|| anyhow::anyhow!("no get_features span among {} spans", spans.len()))?;
    let computes: Vec<i64> = spans
        .iter()
        .filter(|s| s.trace == trace && s.name == "compute")
        .map(|s| s.pid)
        .collect();
    println!(
        "{} spans collected; the call's trace has {} computes",
        spans.len(),
        computes.len()
    );
    assert!(
        computes.len() >= 2,
        "root and leaf computes in the call's trace"
    );
    assert!(serve_pid > 0);
    assert!(
        computes.iter().all(|pid| *pid != serve_pid && *pid > 0),
        "the computes ran in the worker process: serve {serve_pid}, computes {computes:?}"
    );
    Ok(())
}
