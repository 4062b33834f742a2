//! Assembling a running server: a substrate, in-process workers, the ready hub and the
//! tonic service on a listener the caller bound (tests pass `127.0.0.1:0`, so no port
//! race exists). Every task it starts is named and tracked, and shutdown joins them all
//! in order: health NOT_SERVING → stop accepting and finish calls → workers stop pulling
//! and finish their batches (an unsettled job is handed back) → background tasks (health
//! watch, registry follower, ready hub, metrics) stop → the backend connection drains.

use std::net::SocketAddr;
use std::sync::Arc;

use fstore_flows::Catalog;
use fstore_proto::api::feature_store_server::FeatureStoreServer;
use fstore_substrate::task::spawn_named as spawn;
use fstore_substrate::{Substrate, Worker, WorkerStats, embedded};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::Error;
use crate::auth::{AuthLayer, Authenticator};
use crate::backfill::runner::Runner;
use crate::config::Config;
use crate::ready::ReadyHub;
use crate::registry::Registry;
use crate::service::Service;
use crate::store::Store;
use crate::tls::ServerTls;

/// A server running in this process.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub service: Service,
    pub substrate: Substrate,
    /// Counts of the in-process worker, when there is one.
    pub worker_stats: Option<Arc<WorkerStats>>,
    /// Where `/metrics` is served, when `server.metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    health: tonic_health::server::HealthReporter,
    draining: Arc<std::sync::atomic::AtomicBool>,
    serve_token: CancellationToken,
    work_token: CancellationToken,
    /// Stops the background tasks, after the worker.
    background_token: CancellationToken,
    /// Every task: the server, the worker and the background ones (health watch,
    /// registry follower, ready hub, metrics).
    tasks: TaskTracker,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Whether shutting down closes the substrate (not when another server in this
    /// process shares it: [`start_sharing`]).
    owns_substrate: bool,
    worker: Option<JoinHandle<Result<(), fstore_substrate::Error>>>,
}

impl Running {
    /// The address to give a client: `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Shuts down in order: health NOT_SERVING (load balancers stop sending), stop
    /// accepting and finish calls, workers stop pulling and finish their batches (an
    /// unsettled job is handed back), background tasks stop, then the backend
    /// connection drains.
    pub async fn shutdown(self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        set_health(&self.health, false).await;
        self.serve_token.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the gRPC server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "the gRPC server task failed"),
        }
        self.work_token.cancel();
        if let Some(w) = self.worker {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the worker ended with an error"),
                Err(e) => tracing::warn!(error = %e, "the worker task failed"),
            }
        }
        self.background_token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if self.owns_substrate {
            self.substrate.connection.close().await;
        }
    }
}

/// The health of the whole server ("") and of the feature store service.
async fn set_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status("featurestore.v1.FeatureStore", status)
        .await;
}

/// NOT_SERVING while the backend is unreachable or the server drains.
async fn watch_health(
    reporter: tonic_health::server::HealthReporter,
    substrate: Substrate,
    draining: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let serving =
            !draining.load(std::sync::atomic::Ordering::SeqCst) && substrate.connection.is_up();
        if last != Some(serving) {
            set_health(&reporter, serving).await;
            info!(serving, "health changed");
            last = Some(serving);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
}

/// Accepted connections with TCP_NODELAY: small gRPC frames must not wait for Nagle
/// (a 40 ms stall per call against delayed ACKs).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The substrate the configuration names: NATS JetStream when `nats.url` is set, else
/// the embedded one.
pub async fn substrate(config: &Config) -> Result<Substrate, Error> {
    match &config.nats.url {
        Some(url) => Ok(fstore_substrate::nats::connect(&config.nats_options(url)).await?),
        None => Ok(embedded::substrate(&config.embedded_options())?),
    }
}

/// A worker process without a gRPC server: serves `catalog` until `shutdown`, then
/// finishes its batches.
pub async fn run_worker(
    config: &Config,
    substrate: Substrate,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    crate::telemetry::install_propagator();
    let id = format!("worker-{}-{}", hostname(), std::process::id());
    let tasks = TaskTracker::new();
    // The metrics endpoint outlives the worker's drain, so its last figures can be read.
    let metrics_token = CancellationToken::new();
    if let Some(at) = &config.server.metrics_listen {
        let addr = crate::metrics::serve(at, &tasks, metrics_token.clone()).await?;
        info!("metrics on http://{addr}/metrics");
    }
    let worker = Worker::new(substrate.clone(), catalog, config.worker_options(id));
    let ran = worker.run(shutdown).await;
    // Then the metrics endpoint, and last the backend connection drains.
    metrics_token.cancel();
    tasks.close();
    tasks.wait().await;
    substrate.connection.close().await;
    Ok(ran?)
}

/// A step of the start, retried while the backend answers UNAVAILABLE (a NATS cluster
/// electing leaders), as opening the streams is.
async fn at_start<T, F, Fut>(what: &str, op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    fstore_substrate::startup::retry(what, op, |e| {
        matches!(e, Error::Substrate(fstore_substrate::Error::Unavailable(_)))
    })
    .await
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

/// Starts the service, the embedded substrate and a worker serving `catalog` (none if
/// `catalog` is empty), on `listener`.
pub async fn start_embedded(
    config: Config,
    catalog: Catalog,
    listener: TcpListener,
) -> Result<Running, Error> {
    let substrate = embedded::substrate(&config.embedded_options())?;
    start(config, substrate, catalog, listener).await
}

/// Starts a serve replica, without a worker, on a substrate that another server in
/// this process uses too (two replicas on one embedded substrate, in tests): stopping
/// it leaves the substrate open for the other.
pub async fn start_sharing(
    config: Config,
    substrate: Substrate,
    listener: TcpListener,
) -> Result<Running, Error> {
    let mut running = start(config, substrate, Catalog::new(), listener).await?;
    running.owns_substrate = false;
    Ok(running)
}

/// Starts the service on any substrate, with a worker in this process for `catalog`.
pub async fn start(
    config: Config,
    substrate: Substrate,
    catalog: Catalog,
    listener: TcpListener,
) -> Result<Running, Error> {
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: "the given listener".to_string(),
        source,
    })?;
    crate::telemetry::install_propagator();
    let serve_token = CancellationToken::new();
    let work_token = CancellationToken::new();
    let background_token = CancellationToken::new();
    let tasks = TaskTracker::new();
    // A start that fails halfway stops what it started: the guards cancel every token
    // unless the start completes.
    let guards = [
        serve_token.clone().drop_guard(),
        work_token.clone().drop_guard(),
        background_token.clone().drop_guard(),
    ];

    let (worker, worker_stats) = if catalog.is_empty() {
        (None, None)
    } else {
        let id = format!(
            "worker-{}-{}-{}",
            hostname(),
            std::process::id(),
            addr.port()
        );
        // Advertise before serving so a registration right after start sees the flows.
        let adverts = fstore_substrate::worker::adverts(&catalog);
        at_start("advertising the worker's flows", || async {
            Ok(substrate.directory.advertise(&id, &adverts).await?)
        })
        .await?;
        let w = Worker::new(substrate.clone(), catalog, config.worker_options(id));
        let stats = w.stats();
        let token = work_token.clone();
        (Some(spawn(&tasks, "worker", w.run(token))), Some(stats))
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    set_health(&health, substrate.connection.is_up()).await;
    spawn(
        &tasks,
        "health-watch",
        watch_health(
            health.clone(),
            substrate.clone(),
            draining.clone(),
            background_token.clone(),
        ),
    );
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fstore_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection descriptors: {e}")))?;
    let metrics_addr = match &config.server.metrics_listen {
        Some(at) => {
            let addr = crate::metrics::serve(at, &tasks, background_token.clone()).await?;
            info!("metrics on http://{addr}/metrics");
            Some(addr)
        }
        None => None,
    };
    let hub = at_start("subscribing to ready notifications", || async {
        Ok(ReadyHub::start(&substrate, &tasks, background_token.clone()).await?)
    })
    .await?;
    let registry = at_start("loading the registry", || Registry::load(&substrate)).await?;
    spawn(
        &tasks,
        "registry-follower",
        registry.clone().follow(background_token.clone()),
    );
    let max_request_bytes = config.limits.max_request_bytes;
    let (auth_required, auth_cache_ttl) = (config.auth.required(), config.auth.cache_ttl);
    let tls = ServerTls::from_config(&config.tls)?;
    let tls_reload = config.tls.reload_interval;
    // This replica's name: its backfill leases and its served figures carry it.
    let replica = format!(
        "replica-{}-{}-{}",
        hostname(),
        std::process::id(),
        addr.port()
    );
    let store = Store::new(
        substrate.clone(),
        registry,
        hub,
        config,
        replica.clone(),
        tasks.clone(),
        serve_token.clone(),
    );
    // Published generations are in memory before the first call, and follow publishes.
    at_start("loading the published generations", || {
        store.snapshots().load_all(substrate.publish.as_ref())
    })
    .await?;
    spawn(
        &tasks,
        "snapshot-follower",
        store
            .snapshots()
            .clone()
            .follow(substrate.publish.clone(), background_token.clone()),
    );
    spawn(
        &tasks,
        "enrichment-sweep",
        store.enricher().clone().sweep(background_token.clone()),
    );
    spawn(
        &tasks,
        "served-reporter",
        store.clone().report_served(background_token.clone()),
    );
    // Backfills stop with the calls: their leases run out and another replica (or this
    // one, started again) continues them.
    spawn(
        &tasks,
        "backfill-runner",
        Runner::new(store.backfills().clone(), replica).run(tasks.clone(), serve_token.clone()),
    );
    let authenticator =
        auth_required.then(|| Arc::new(Authenticator::new(substrate.keys.clone(), auth_cache_ttl)));
    let service = Service::new(store);
    let svc = FeatureStoreServer::new(service.clone())
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(64 * 1024 * 1024);
    let shutdown = serve_token.clone();
    // gRPC and the HTTP/JSON API on one listener (HTTP/1.1 accepted for the latter).
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(svc)
        .into_axum_router();
    let http_api = crate::http::router(service.clone(), max_request_bytes);
    let routes = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(crate::status::RequestSizeLayer::new(max_request_bytes))
        .layer(AuthLayer::new(authenticator))
        .add_routes(tonic::service::Routes::from(grpc.merge(http_api)));
    let secure = tls.is_some();
    let server = match tls {
        Some(tls) => {
            info!(mtls = tls.verifies_clients(), "TLS on the gRPC listener");
            let follow = tls.clone().follow(tls_reload, background_token.clone());
            spawn(&tasks, "tls-reload", follow);
            let connections = tls.incoming(listener, &tasks, serve_token.clone());
            let serve =
                routes.serve_with_incoming_shutdown(connections, shutdown.cancelled_owned());
            spawn(&tasks, "grpc-server", serve)
        }
        None => {
            let serve =
                routes.serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled_owned());
            spawn(&tasks, "grpc-server", serve)
        }
    };
    info!(%addr, tls = secure, "feature store listening");
    for guard in guards {
        guard.disarm();
    }
    Ok(Running {
        metrics_addr,
        tls: secure,
        health,
        draining,
        addr,
        service,
        substrate,
        worker_stats,
        serve_token,
        work_token,
        background_token,
        tasks,
        server,
        worker,
        owns_substrate: true,
    })
}
