//! W3C trace context across the queue: the span that enqueues a job writes its
//! `traceparent` into the job's headers; the worker reads it back as the parent of the
//! compute span, so one trace runs from the gRPC call through the queue to the compute.
//! Without a configured tracer this is a no-op.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Headers;

struct Inject<'a>(&'a mut Headers);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct Extract<'a>(&'a Headers);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the current span's context into `headers`.
pub fn inject(headers: &mut Headers) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Inject(headers)));
}

/// Makes `span` a child of the context carried in `headers`, if any.
pub fn adopt(span: &tracing::Span, headers: &Headers) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)));
    let _ = span.set_parent(cx);
}

/// Makes `span` a child of the context in string pairs (e.g. gRPC metadata).
pub fn adopt_pairs<'a>(span: &tracing::Span, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    let headers: Headers = pairs.map(|(k, v)| (k.to_string(), v.to_string())).collect();
    adopt(span, &headers);
}
