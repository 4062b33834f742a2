//! A typed gRPC client for the feature store: it connects, names the tenant on every call,
//! has one method per call and registers a definitions file. The `fstore` binary, the example flow and tests use it.

use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use std::path::PathBuf;
use tonic::codec::Streaming;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made to the address.
    #[error("cannot reach the feature store at {addr} (start one with `fstore dev`)")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A TLS file that cannot be read, or TLS asked of an address without it.
    #[error("TLS: {0}")]
    Tls(String),
    /// The registration file does not parse; nothing of it was registered.
    #[error(transparent)]
    Definitions(#[from] crate::definitions::Error),
    /// The server refused the file, with this status (its message names the definition);
    /// nothing of the file was registered.
    #[error("cannot register the file's {count} definitions (none was registered)")]
    Register {
        count: usize,
        #[source]
        status: Status,
    },
}

impl Error {
    /// The status the server answered, for errors that come from a call.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Register { status, .. } => Some(status),
            Error::Connect { .. } | Error::Tls(_) | Error::Definitions(_) => None,
        }
    }
}

/// A connected client that sets the tenant (and the API key) on every call.
#[derive(Clone)]
pub struct Client {
    inner: FeatureStoreClient<Channel>,
    tenant: Option<String>,
    api_key: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Client")
            .field("tenant", &self.tenant)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// A client's TLS: the CA that signed the server's certificate, and a certificate of
/// its own for servers that verify clients (mTLS).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name to verify the server's certificate against [default: the address's host].
    pub domain: Option<String>,
}

impl ClientTls {
    /// The tonic TLS configuration: None when nothing asks for TLS (`http://` and no
    /// file given).
    fn config(&self, addr: &str) -> Result<Option<ClientTlsConfig>, Error> {
        let wanted = addr.starts_with("https://") || self.ca_file.is_some();
        if !wanted {
            return Ok(None);
        }
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| Error::Tls(format!("cannot read {}: {e}", p.display())))
        };
        let ca = self.ca_file.as_ref().ok_or_else(|| {
            Error::Tls(format!(
                "{addr} speaks TLS: name the CA that signed its certificate (--tls-ca or FSTORE_TLS_CA)"
            ))
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(Error::Tls(
                    "a client certificate needs its key, and a key its certificate".into(),
                ));
            }
        }
        if let Some(d) = &self.domain {
            tls = tls.domain_name(d.clone());
        }
        Ok(Some(tls))
    }
}

impl Client {
    /// Connects to `addr` (e.g. `http://127.0.0.1:50051`); without a tenant, calls get the
    /// server's default tenant.
    pub async fn connect(addr: &str, tenant: Option<String>) -> Result<Self, Error> {
        Self::connect_with(addr, tenant, &ClientTls::default()).await
    }

    /// Connects with TLS as `tls` says (an `https://` address needs at least its CA).
    pub async fn connect_with(
        addr: &str,
        tenant: Option<String>,
        tls: &ClientTls,
    ) -> Result<Self, Error> {
        let channel = channel(addr, tls).await?;
        let inner = FeatureStoreClient::new(channel);
        Ok(Client {
            inner: inner
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(16 * 1024 * 1024),
            tenant,
            api_key: None,
        })
    }

    /// Sends `key` as `authorization: Bearer` on every call (servers with
    /// authentication on take the tenant from it).
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// A request carrying the tenant header, if this client has a tenant.
    pub fn request<T>(&self, body: T) -> Request<T> {
        let mut r = Request::new(body);
        if let Some(t) = &self.tenant
            && let Ok(v) = t.parse()
        {
            r.metadata_mut().insert(fstore_proto::TENANT_HEADER, v);
        }
        if let Some(k) = &self.api_key
            && let Ok(v) = format!("Bearer {k}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    /// The generated client (a cheap clone sharing the connection).
    pub fn raw(&self) -> FeatureStoreClient<Channel> {
        self.inner.clone()
    }

    /// Registers the features of a registration file ([`crate::definitions`]) in file
    /// order, all or nothing: if the server refuses one, none is registered.
    pub async fn register_file(
        &mut self,
        text: &str,
    ) -> Result<Vec<api::RegisterFeatureResponse>, Error> {
        let definitions = crate::definitions::parse(text)?;
        let count = definitions.len();
        let r = self
            .inner
            .register_features(self.request(api::RegisterFeaturesRequest {
                definitions,
                force: false,
            }))
            .await
            .map_err(|status| Error::Register { count, status })?;
        Ok(r.into_inner().registered)
    }
}

/// One method per call, each with the tenant header, answering the server's message or
/// the status it sent, unchanged.
impl Client {
    pub async fn get_features(
        &self,
        req: api::GetFeaturesRequest,
    ) -> Result<api::GetFeaturesResponse, Status> {
        let c = self;
        Ok(c.raw().get_features(c.request(req)).await?.into_inner())
    }

    pub async fn get_ticket(&self, ticket: String) -> Result<api::GetFeaturesResponse, Status> {
        let c = self;
        let req = c.request(api::GetTicketRequest { ticket });
        Ok(c.raw().get_ticket(req).await?.into_inner())
    }

    pub async fn watch_features(
        &self,
        req: api::WatchFeaturesRequest,
    ) -> Result<Streaming<api::WatchEvent>, Status> {
        let c = self;
        Ok(c.raw().watch_features(c.request(req)).await?.into_inner())
    }

    pub async fn describe_feature(
        &self,
        feature: String,
    ) -> Result<api::DescribeFeatureResponse, Status> {
        let c = self;
        let req = c.request(api::DescribeFeatureRequest { feature });
        Ok(c.raw().describe_feature(req).await?.into_inner())
    }

    pub async fn list_features(&self, prefix: String) -> Result<api::ListFeaturesResponse, Status> {
        let c = self;
        let req = c.request(api::ListFeaturesRequest { prefix });
        Ok(c.raw().list_features(req).await?.into_inner())
    }

    pub async fn list_flows(&self) -> Result<api::ListFlowsResponse, Status> {
        let c = self;
        let req = c.request(api::ListFlowsRequest {});
        Ok(c.raw().list_flows(req).await?.into_inner())
    }

    /// Invalidates a feature for one entity, or for all when `entity_id` is empty.
    pub async fn invalidate(
        &self,
        feature: String,
        entity_id: String,
    ) -> Result<api::InvalidateResponse, Status> {
        let c = self;
        let req = c.request(api::InvalidateRequest { feature, entity_id });
        Ok(c.raw().invalidate(req).await?.into_inner())
    }

    pub async fn list_dead_letters(
        &self,
        limit: u32,
    ) -> Result<api::ListDeadLettersResponse, Status> {
        let c = self;
        let req = c.request(api::ListDeadLettersRequest { limit });
        Ok(c.raw().list_dead_letters(req).await?.into_inner())
    }

    pub async fn replay_dead_letter(
        &self,
        id: String,
    ) -> Result<api::ReplayDeadLetterResponse, Status> {
        let c = self;
        let req = c.request(api::ReplayDeadLetterRequest { id });
        Ok(c.raw().replay_dead_letter(req).await?.into_inner())
    }

    /// Drops one dead letter, or all of the tenant's when `id` is empty.
    pub async fn purge_dead_letters(
        &self,
        id: String,
    ) -> Result<api::PurgeDeadLettersResponse, Status> {
        let c = self;
        let req = c.request(api::PurgeDeadLettersRequest { id });
        Ok(c.raw().purge_dead_letters(req).await?.into_inner())
    }

    pub async fn put_inputs(
        &self,
        entities: Vec<api::EntityRequest>,
    ) -> Result<api::PutInputsResponse, Status> {
        let c = self;
        let req = c.request(api::PutInputsRequest { entities });
        Ok(c.raw().put_inputs(req).await?.into_inner())
    }

    pub async fn create_api_key(
        &self,
        req: api::CreateApiKeyRequest,
    ) -> Result<api::CreatedApiKey, Status> {
        Ok(self
            .raw()
            .create_api_key(self.request(req))
            .await?
            .into_inner())
    }

    pub async fn list_api_keys(&self) -> Result<api::ListApiKeysResponse, Status> {
        let req = self.request(api::ListApiKeysRequest {});
        Ok(self.raw().list_api_keys(req).await?.into_inner())
    }

    pub async fn revoke_api_key(&self, id: String) -> Result<api::ApiKey, Status> {
        let req = self.request(api::RevokeApiKeyRequest { id });
        Ok(self.raw().revoke_api_key(req).await?.into_inner())
    }

    pub async fn cancel_ticket(&self, ticket: String) -> Result<api::CancelTicketResponse, Status> {
        let c = self;
        let req = c.request(api::CancelTicketRequest { ticket });
        Ok(c.raw().cancel_ticket(req).await?.into_inner())
    }

    pub async fn subscribe_events(
        &self,
        req: api::SubscribeEventsRequest,
    ) -> Result<Streaming<api::LogEvent>, Status> {
        let c = self;
        Ok(c.raw().subscribe_events(c.request(req)).await?.into_inner())
    }

    pub async fn read_log(
        &self,
        req: api::ReadLogRequest,
    ) -> Result<Streaming<api::LogEvent>, Status> {
        let c = self;
        Ok(c.raw().read_log(c.request(req)).await?.into_inner())
    }

    /// Starts a backfill of `features` over `entities`, sent in messages of
    /// [`BACKFILL_MESSAGE_ENTITIES`].
    pub async fn start_backfill(
        &self,
        features: Vec<String>,
        max_staleness_ms: Option<u64>,
        entities: Vec<api::EntityRequest>,
    ) -> Result<api::Backfill, Status> {
        let spec = api::StartBackfillRequest {
            features,
            max_staleness_ms,
            ..Default::default()
        };
        self.start_backfill_with(spec, entities).await
    }

    /// Starts a backfill as `spec` says (features, staleness, staging; its entities
    /// are ignored) over `entities`, sent in messages of [`BACKFILL_MESSAGE_ENTITIES`].
    pub async fn start_backfill_with(
        &self,
        spec: api::StartBackfillRequest,
        entities: Vec<api::EntityRequest>,
    ) -> Result<api::Backfill, Status> {
        let mut messages = Vec::new();
        let mut rest = entities.into_iter().peekable();
        loop {
            let entities: Vec<_> = rest.by_ref().take(BACKFILL_MESSAGE_ENTITIES).collect();
            let message = if messages.is_empty() {
                api::StartBackfillRequest {
                    entities,
                    ..spec.clone()
                }
            } else {
                api::StartBackfillRequest {
                    entities,
                    ..Default::default()
                }
            };
            messages.push(message);
            if rest.peek().is_none() {
                break;
            }
        }
        let c = self;
        let req = c.request(tokio_stream::iter(messages));
        Ok(c.raw().start_backfill(req).await?.into_inner())
    }

    pub async fn get_backfill(&self, id: String) -> Result<api::Backfill, Status> {
        let c = self;
        let req = c.request(api::GetBackfillRequest { id });
        Ok(c.raw().get_backfill(req).await?.into_inner())
    }

    pub async fn list_backfills(&self) -> Result<api::ListBackfillsResponse, Status> {
        let c = self;
        let req = c.request(api::ListBackfillsRequest {});
        Ok(c.raw().list_backfills(req).await?.into_inner())
    }

    pub async fn list_schedules(&self) -> Result<api::ListSchedulesResponse, Status> {
        let c = self;
        let req = c.request(api::ListSchedulesRequest {});
        Ok(c.raw().list_schedules(req).await?.into_inner())
    }

    pub async fn delete_schedule(&self, name: String) -> Result<api::Schedule, Status> {
        let c = self;
        let req = c.request(api::DeleteScheduleRequest { name });
        Ok(c.raw().delete_schedule(req).await?.into_inner())
    }

    /// The generations of one snapshot-served feature, or (empty) of every one.
    pub async fn publish_status(&self, feature: String) -> Result<api::PublishStatus, Status> {
        let c = self;
        let req = c.request(api::GetPublishStatusRequest { feature });
        Ok(c.raw().get_publish_status(req).await?.into_inner())
    }

    pub async fn rollback(
        &self,
        feature: String,
        to: Option<u64>,
    ) -> Result<api::FeaturePublish, Status> {
        let c = self;
        let req = c.request(api::RollbackRequest { feature, to });
        Ok(c.raw().rollback(req).await?.into_inner())
    }

    pub async fn cancel_backfill(&self, id: String) -> Result<api::Backfill, Status> {
        let c = self;
        let req = c.request(api::CancelBackfillRequest { id });
        Ok(c.raw().cancel_backfill(req).await?.into_inner())
    }
}

/// Entities per message of a backfill's start.
pub const BACKFILL_MESSAGE_ENTITIES: usize = 1_000;

/// A channel to `addr`, over TLS when `tls` asks for it.
pub async fn channel(addr: &str, tls: &ClientTls) -> Result<Channel, Error> {
    let tls_config = tls.config(addr)?;
    let connect = |source| Error::Connect {
        addr: addr.to_string(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(addr.to_string()).map_err(connect)?;
    if let Some(t) = tls_config {
        endpoint = endpoint.tls_config(t).map_err(connect)?;
    }
    endpoint.connect().await.map_err(connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tenant_goes_into_the_header() {
        let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let client = Client {
            inner: FeatureStoreClient::new(channel),
            tenant: Some("acme".into()),
            api_key: None,
        }
        .with_api_key(Some("fsk_0123456789abcdef_s".into()));
        let r = client.request(());
        let header = |name: &str| r.metadata().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header(fstore_proto::TENANT_HEADER), Some("acme"));
        assert_eq!(
            header("authorization"),
            Some("Bearer fsk_0123456789abcdef_s")
        );
        assert!(
            !format!("{client:?}").contains("fsk_"),
            "Debug never shows the key"
        );
    }

    #[tokio::test]
    async fn a_bad_file_is_refused_before_any_call() {
        let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let mut client = Client {
            inner: FeatureStoreClient::new(channel),
            tenant: None,
            api_key: None,
        };
        let e = client.register_file("[[feature]]\nname = 3\n").await;
        assert!(matches!(e, Err(Error::Definitions(_))), "{e:?}");
    }
}
