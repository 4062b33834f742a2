//! The Prometheus `/metrics` endpoint: `GET /metrics` answers the process-wide registry
//! (`fstore_substrate::metrics`) in the text format, served with axum on its own listener
//! (`server.metrics_listen`) beside the gRPC server, until the shutdown token fires.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::Error;

/// The content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `at`, on a task of `tasks`, until `shutdown`, then finishes
/// the scrapes in flight; returns the address it bound (`at` may name port 0).
pub async fn serve(
    at: &str,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    let listen_error = |source| Error::Listen {
        addr: at.to_string(),
        source,
    };
    let listener = TcpListener::bind(at).await.map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found);
    fstore_substrate::task::spawn_named(tasks, "metrics-endpoint", async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(%addr, error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(addr)
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        fstore_substrate::metrics::global().encode(),
    )
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "try GET /metrics\n")
}
