//! Test support for fstore's black-box suites (and the benches): servers on free
//! loopback ports, clients that carry a tenant, and [`wait_until`] instead of sleeps.

pub mod fuzz;
pub mod harness;
pub mod metrics;
pub mod nats;
pub mod process;
pub mod proxy;
pub mod tls;

use std::future::Future;
use std::time::Duration;

use fstore::Config;
use fstore::server::{self, Running};
use fstore_flows::Catalog;
use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Polls `check` until it returns Some, or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs of in-process servers go to the test output when `FSTORE_TEST_LOG` is set
/// (e.g. `FSTORE_TEST_LOG=info`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("FSTORE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A configuration with short timings for tests.
pub fn test_config() -> Config {
    init_logging();
    let mut c = Config::default();
    c.server.default_tenant = Some("default".to_string());
    c.server.recheck_interval = Duration::from_millis(100);
    c.cache.failure_ttl = Duration::from_secs(2);
    c.worker.retry_base = Duration::from_millis(20);
    c.worker.retry_max = Duration::from_millis(200);
    c.worker.slots = 4;
    // Most suites test other things; the auth suite turns it on.
    c.auth.enabled = Some(false);
    // JetStream reserves a stream's max bytes from the free disk at creation: the
    // default 10 GiB log makes every test's nats-server need that much free.
    c.log.max_bytes = 256 * 1024 * 1024;
    c
}

/// A feature store with the embedded substrate on a free loopback port.
pub async fn start_embedded(config: Config) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(server::start_embedded(config, Catalog::builtins(), listener).await?)
}

/// An API key of `tenant` with every role, made on the shared store at the NATS `url`
/// (as `fstore auth create-key --nats` does): how tests call `serve` processes.
pub async fn api_key(url: &str, tenant: &str) -> anyhow::Result<String> {
    let mut config = test_config();
    config.nats.url = Some(url.to_string());
    let substrate = server::substrate(&config).await?;
    let roles = ["read", "write", "admin"].map(String::from);
    let made = fstore::auth::create_key(substrate.keys.as_ref(), tenant, &roles, "tests").await;
    substrate.connection.close().await;
    Ok(made?.secret)
}

/// A feature store with a worker, in this process, on the NATS substrate at `url`.
pub async fn start_on_nats(mut config: Config, url: &str) -> anyhow::Result<Running> {
    config.nats.url = Some(url.to_string());
    let substrate = server::substrate(&config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(server::start(config, substrate, Catalog::builtins(), listener).await?)
}

/// A gRPC client that sends a tenant with every call.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub raw: FeatureStoreClient<Channel>,
    /// The connection, for calls the generated client has no method for.
    pub channel: Channel,
    pub tenant: Option<String>,
    /// The API key sent as `authorization: Bearer`, when the server wants one.
    pub key: Option<String>,
}

impl TestClient {
    /// Connects to `url`; an `https://` one with this process's test certificates
    /// ([`tls::certs`]), presenting the client certificate.
    pub async fn connect(url: &str, tenant: Option<&str>) -> anyhow::Result<Self> {
        let tls = if url.starts_with("https://") {
            tls::certs()?.client()
        } else {
            fstore::client::ClientTls::default()
        };
        let channel = fstore::client::channel(url, &tls).await?;
        Ok(TestClient {
            raw: FeatureStoreClient::new(channel.clone()),
            channel,
            tenant: tenant.map(str::to_string),
            key: None,
        })
    }

    pub fn with_tenant(&self, tenant: &str) -> Self {
        TestClient {
            tenant: Some(tenant.to_string()),
            ..self.clone()
        }
    }

    /// The same connection, calling with `key` (and no tenant metadata).
    pub fn with_key(&self, key: &str) -> Self {
        TestClient {
            tenant: None,
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    pub fn req<T>(&self, body: T) -> Request<T> {
        let mut r = Request::new(body);
        if let Some(t) = &self.tenant
            && let Ok(v) = t.parse()
        {
            r.metadata_mut().insert(fstore_proto::TENANT_HEADER, v);
        }
        if let Some(k) = &self.key
            && let Ok(v) = format!("Bearer {k}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    pub async fn register(
        &self,
        def: api::FeatureDefinition,
    ) -> Result<api::RegisterFeatureResponse, Status> {
        self.raw
            .clone()
            .register_feature(self.req(api::RegisterFeatureRequest {
                definition: Some(def),
                force: false,
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get(
        &self,
        req: api::GetFeaturesRequest,
    ) -> Result<api::GetFeaturesResponse, Status> {
        self.raw
            .clone()
            .get_features(self.req(req))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn ticket(&self, id: &str) -> Result<api::GetFeaturesResponse, Status> {
        self.raw
            .clone()
            .get_ticket(self.req(api::GetTicketRequest {
                ticket: id.to_string(),
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn list_flows(&self) -> Result<Vec<api::FlowInfo>, Status> {
        self.raw
            .clone()
            .list_flows(self.req(api::ListFlowsRequest {}))
            .await
            .map(|r| r.into_inner().flows)
    }

    pub async fn describe(&self, feature: &str) -> Result<api::DescribeFeatureResponse, Status> {
        self.raw
            .clone()
            .describe_feature(self.req(api::DescribeFeatureRequest {
                feature: feature.to_string(),
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn invalidate(
        &self,
        feature: &str,
        entity: &str,
    ) -> Result<api::InvalidateResponse, Status> {
        self.raw
            .clone()
            .invalidate(self.req(api::InvalidateRequest {
                feature: feature.to_string(),
                entity_id: entity.to_string(),
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn put_inputs(
        &self,
        entities: Vec<api::EntityRequest>,
    ) -> Result<api::PutInputsResponse, Status> {
        let req = self.req(api::PutInputsRequest { entities });
        self.raw
            .clone()
            .put_inputs(req)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn cancel(&self, ticket: &str) -> Result<api::CancelTicketResponse, Status> {
        let req = self.req(api::CancelTicketRequest {
            ticket: ticket.to_string(),
        });
        self.raw
            .clone()
            .cancel_ticket(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every record of the tenant's log for `features` (empty: all), oldest first.
    pub async fn log(
        &self,
        features: &[&str],
        include_inputs: bool,
    ) -> Result<Vec<api::LogEvent>, Status> {
        use futures::TryStreamExt;
        let req = self.req(api::ReadLogRequest {
            features: features.iter().map(|f| f.to_string()).collect(),
            include_inputs,
            ..Default::default()
        });
        let stream = self.raw.clone().read_log(req).await?.into_inner();
        stream.try_collect().await
    }

    pub async fn subscribe(
        &self,
        req: api::SubscribeEventsRequest,
    ) -> Result<tonic::Streaming<api::LogEvent>, Status> {
        let req = self.req(req);
        self.raw
            .clone()
            .subscribe_events(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Polls a ticket until nothing is pending.
    pub async fn until_done(
        &self,
        ticket: &str,
        timeout: Duration,
    ) -> anyhow::Result<api::GetFeaturesResponse> {
        wait_until(timeout, "the ticket to complete", || async {
            let r = self.ticket(ticket).await.ok()?;
            let done = r
                .results
                .iter()
                .all(|x| matches!(x.status(), api::Status::Ready | api::Status::Failed));
            done.then_some(r)
        })
        .await
    }
}

/// Builders for definitions and requests.
pub mod build {
    use std::collections::HashMap;

    use fstore_proto::api;

    /// A definition of `name` on `doc` entities; inputs as `("x", "feature:a")` or
    /// `("text", "request:text")`.
    pub fn feature(
        name: &str,
        flow: &str,
        params: &[(&str, &str)],
        inputs: &[(&str, &str)],
        ttl_ms: u64,
    ) -> api::FeatureDefinition {
        api::FeatureDefinition {
            name: name.to_string(),
            entity_type: "doc".to_string(),
            flow: flow.to_string(),
            ttl_ms,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inputs: inputs
                .iter()
                .map(|(k, v)| {
                    let source = match v.split_once(':') {
                        Some(("request", r)) => api::input_binding::Source::Request(r.to_string()),
                        Some(("feature", f)) => api::input_binding::Source::Feature(f.to_string()),
                        _ => api::input_binding::Source::Feature(v.to_string()),
                    };
                    (
                        k.to_string(),
                        api::InputBinding {
                            source: Some(source),
                        },
                    )
                })
                .collect(),
            owner: "tests".to_string(),
            ..Default::default()
        }
    }

    pub fn entity(id: &str, inputs: &[(&str, api::Value)]) -> api::EntityRequest {
        api::EntityRequest {
            entity_id: id.to_string(),
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    pub fn text(s: &str) -> api::Value {
        api::Value {
            kind: Some(api::value::Kind::String(s.to_string())),
        }
    }

    pub fn f64(x: f64) -> api::Value {
        api::Value {
            kind: Some(api::value::Kind::F64(x)),
        }
    }

    /// ASYNC request for plain entity ids and features.
    pub fn get(entities: &[&str], features: &[&str]) -> api::GetFeaturesRequest {
        api::GetFeaturesRequest {
            entities: entities.iter().map(|e| entity(e, &[])).collect(),
            features: features.iter().map(|f| f.to_string()).collect(),
            mode: api::Mode::Async as i32,
            wait_ms: 0,
            max_staleness_ms: None,
            max_staleness_ms_by_feature: HashMap::new(),
            allow_stale: false,
        }
    }

    /// SYNC request waiting up to `wait_ms`.
    pub fn sync(entities: &[&str], features: &[&str], wait_ms: u64) -> api::GetFeaturesRequest {
        api::GetFeaturesRequest {
            mode: api::Mode::Sync as i32,
            wait_ms,
            ..get(entities, features)
        }
    }

    pub fn f64_of(r: &api::FeatureResult) -> Option<f64> {
        match r.value.as_ref()?.kind.as_ref()? {
            api::value::Kind::F64(x) => Some(*x),
            _ => None,
        }
    }
}
