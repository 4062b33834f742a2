//! Logs and traces: a `tracing` subscriber writing logs to stderr and, when an OTLP
//! endpoint is configured, exporting spans with OpenTelemetry (W3C trace context,
//! propagated through job headers). No endpoint, no export.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the tracer provider alive; flushes spans when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the W3C propagator used for job headers (also without export).
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
}

/// The OpenTelemetry layer for a provider, for callers composing their own subscriber
/// (tests use an in-memory exporter).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("fstore"))
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot export traces to {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was set already (a second `init` in one process).
    #[error("a tracing subscriber is installed already: {0}")]
    Installed(#[from] tracing_subscriber::util::TryInitError),
}

/// Logs at `filter` to stderr; spans to `otlp_endpoint` (gRPC) when given.
pub fn init(filter: &str, otlp_endpoint: Option<&str>, service: &str) -> Result<Telemetry, Error> {
    install_propagator();
    let provider = match otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|source| Error::Exporter {
                    endpoint: endpoint.to_string(),
                    source,
                })?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service.to_string())
                            // Which process of the service: serve and worker processes
                            // share a trace, and this tells their spans apart.
                            .with_attribute(opentelemetry::KeyValue::new(
                                "process.pid",
                                i64::from(std::process::id()),
                            ))
                            .build(),
                    )
                    .build(),
            )
        }
        None => None,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    match &provider {
        Some(p) => registry.with(layer(p)).try_init()?,
        None => registry.try_init()?,
    }
    Ok(Telemetry { provider })
}
