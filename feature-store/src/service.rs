//! The tonic adapter for `featurestore.v1.FeatureStore`: each RPC authenticates the
//! caller's tenant, calls one [`Store`] method and maps the error (in
//! [`crate::status`], the only place that knows gRPC codes).

use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api::{self, feature_store_server::FeatureStore};
use futures::StreamExt;
use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::backfill::Spec;
use crate::backfill::schedule::Repeat;
use crate::names::check_tenant;
use crate::quota::Quotas;
use crate::registry::Registry;
use crate::store::Store;
use crate::{Error, Result};

/// The feature store service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    store: Store,
    quotas: Arc<Quotas>,
}

impl Service {
    pub fn new(store: Store) -> Self {
        let quotas = Arc::new(Quotas::new(store.config().quotas.clone()));
        Service { store, quotas }
    }

    pub fn registry(&self) -> &Registry {
        self.store.registry()
    }

    /// StartBackfill over any stream of its messages: gRPC's client stream, or the one
    /// message of an HTTP body. `caller` carries the call's metadata and extensions.
    pub async fn start_backfill_from(
        &self,
        caller: Request<()>,
        mut messages: impl futures::Stream<Item = Result<api::StartBackfillRequest, Status>>
        + Unpin
        + Send,
    ) -> Result<Response<api::Backfill>, Status> {
        let tenant = self.tenant(&caller)?;
        let max = self.store.config().backfill.max_entities;
        let mut first: Option<api::StartBackfillRequest> = None;
        let mut entities = Vec::new();
        while let Some(message) = messages.next().await {
            let mut message = message?;
            entities.append(&mut message.entities);
            if entities.len() > max {
                return Err(Error::InvalidArgument(format!(
                    "a backfill takes at most {max} entities (backfill.max_entities): split it"
                ))
                .into());
            }
            match &first {
                None => first = Some(message),
                Some(_)
                    if !message.features.is_empty()
                        || message.max_staleness_ms.is_some()
                        || message.stage
                        || message.every_ms > 0
                        || !message.schedule.is_empty() =>
                {
                    return Err(Error::InvalidArgument(
                        "only the first message of StartBackfill names features, staleness and staging"
                            .to_string(),
                    )
                    .into());
                }
                Some(_) => {}
            }
        }
        let first = first.ok_or_else(|| {
            Error::InvalidArgument("StartBackfill got no message: send the features".to_string())
        })?;
        let spec = Spec {
            features: first.features,
            max_staleness_ms: first.max_staleness_ms,
            stage: first.stage,
        };
        let started = match (first.every_ms, first.schedule.is_empty()) {
            (0, true) => self.store.start_backfill(tenant, spec, entities).await?,
            (0, false) => {
                return Err(Error::InvalidArgument(format!(
                    "schedule `{}` needs every_ms: how often it runs",
                    crate::names::truncate(&first.schedule, 80)
                ))
                .into());
            }
            (_, true) => {
                return Err(Error::InvalidArgument(
                    "a repeating backfill (every_ms) needs a schedule name".to_string(),
                )
                .into());
            }
            (every_ms, false) => {
                let repeat = Repeat {
                    name: first.schedule,
                    every_ms,
                };
                self.store
                    .backfills()
                    .schedule(tenant, spec, repeat, entities)
                    .await?
            }
        };
        Ok(Response::new(started))
    }

    /// The caller's tenant, its call charged against the tenant's quota.
    fn tenant<T>(&self, req: &Request<T>) -> Result<String> {
        let tenant = self.caller(req)?;
        self.quotas.admit(&tenant)?;
        Ok(tenant)
    }

    /// Who calls: the key's tenant when authentication is on (naming another tenant in
    /// the metadata is refused), else the `x-fstore-tenant` metadata, or the configured
    /// default.
    fn caller<T>(&self, req: &Request<T>) -> Result<String> {
        let named = match req.metadata().get(fstore_proto::TENANT_HEADER) {
            Some(v) => {
                let t = v.to_str().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "{} metadata must be ASCII",
                        fstore_proto::TENANT_HEADER
                    ))
                })?;
                check_tenant(t)?;
                Some(t.to_string())
            }
            None => None,
        };
        if let Some(principal) = req.extensions().get::<Arc<Principal>>() {
            return match named {
                Some(t) if t != principal.tenant => Err(Error::PermissionDenied(format!(
                    "key {} belongs to tenant `{}`; it cannot act for `{t}`",
                    principal.key_id, principal.tenant
                ))),
                _ => Ok(principal.tenant.clone()),
            };
        }
        if self.store.config().auth.required() {
            // The layer admits no call of this service without a principal.
            return Err(Error::Unauthenticated(
                "no credential: send `authorization: Bearer <key>`".into(),
            ));
        }
        match named {
            Some(t) => Ok(t),
            None => self
                .store
                .config()
                .server
                .default_tenant
                .clone()
                .ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "no tenant: set the `{}` metadata on the call",
                        fstore_proto::TENANT_HEADER
                    ))
                }),
        }
    }
}

/// The caller's deadline from the `grpc-timeout` header (`100m`, `5S`, ...).
fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The ascii metadata of a call, for trace-context propagation.
fn metadata_pairs<T>(req: &Request<T>) -> impl Iterator<Item = (&str, &str)> {
    req.metadata().iter().filter_map(|kv| match kv {
        tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str(), v.to_str().ok()?)),
        tonic::metadata::KeyAndValueRef::Binary(..) => None,
    })
}

type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<api::WatchEvent, Status>> + Send>>;
type LogStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<api::LogEvent, Status>> + Send>>;

#[tonic::async_trait]
impl FeatureStore for Service {
    async fn register_feature(
        &self,
        req: Request<api::RegisterFeatureRequest>,
    ) -> Result<Response<api::RegisterFeatureResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store.register(&tenant, req.into_inner()).await?,
        ))
    }

    async fn register_features(
        &self,
        req: Request<api::RegisterFeaturesRequest>,
    ) -> Result<Response<api::RegisterFeaturesResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store.register_all(&tenant, req.into_inner()).await?,
        ))
    }

    async fn list_features(
        &self,
        req: Request<api::ListFeaturesRequest>,
    ) -> Result<Response<api::ListFeaturesResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store.list_features(&tenant, &req.get_ref().prefix),
        ))
    }

    async fn describe_feature(
        &self,
        req: Request<api::DescribeFeatureRequest>,
    ) -> Result<Response<api::DescribeFeatureResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .describe_feature(&tenant, &req.get_ref().feature)
                .await?,
        ))
    }

    async fn list_flows(
        &self,
        req: Request<api::ListFlowsRequest>,
    ) -> Result<Response<api::ListFlowsResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(self.store.list_flows(&tenant).await?))
    }

    async fn get_features(
        &self,
        req: Request<api::GetFeaturesRequest>,
    ) -> Result<Response<api::GetFeaturesResponse>, Status> {
        let started = std::time::Instant::now();
        let sync = req.get_ref().mode() == api::Mode::Sync;
        let mode = if sync { "sync" } else { "async" };
        let span = tracing::info_span!(
            "get_features",
            mode,
            entities = req.get_ref().entities.len(),
            features = req.get_ref().features.len()
        );
        fstore_substrate::trace::adopt_pairs(&span, metadata_pairs(&req));
        let label = fstore_substrate::metrics::ModeLabel {
            mode: mode.to_string(),
        };
        let metrics = fstore_substrate::metrics::global();
        metrics.requests.get_or_create(&label).inc();
        let call = async {
            let tenant = self.tenant(&req)?;
            self.store
                .get_features(tenant, req.get_ref(), grpc_timeout(&req))
                .await
        };
        let answer = tracing::Instrument::instrument(call, span).await;
        metrics
            .request_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let answer = answer?;
        if sync && !answer.ticket.is_empty() {
            metrics.sync_timeouts.inc();
        }
        Ok(Response::new(answer))
    }

    async fn get_ticket(
        &self,
        req: Request<api::GetTicketRequest>,
    ) -> Result<Response<api::GetFeaturesResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .get_ticket(&tenant, &req.get_ref().ticket)
                .await?,
        ))
    }

    type WatchFeaturesStream = WatchStream;

    async fn watch_features(
        &self,
        req: Request<api::WatchFeaturesRequest>,
    ) -> Result<Response<Self::WatchFeaturesStream>, Status> {
        let tenant = self.tenant(&req)?;
        let events = self
            .store
            .watch(tenant, req.get_ref(), grpc_timeout(&req))
            .await?;
        Ok(Response::new(Box::pin(
            events.map(|e| e.map_err(Status::from)),
        )))
    }

    async fn invalidate(
        &self,
        req: Request<api::InvalidateRequest>,
    ) -> Result<Response<api::InvalidateResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store.invalidate(&tenant, req.get_ref()).await?,
        ))
    }

    async fn list_dead_letters(
        &self,
        req: Request<api::ListDeadLettersRequest>,
    ) -> Result<Response<api::ListDeadLettersResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .list_dead_letters(&tenant, req.get_ref().limit)
                .await?,
        ))
    }

    async fn replay_dead_letter(
        &self,
        req: Request<api::ReplayDeadLetterRequest>,
    ) -> Result<Response<api::ReplayDeadLetterResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .replay_dead_letter(&tenant, &req.get_ref().id)
                .await?,
        ))
    }

    async fn purge_dead_letters(
        &self,
        req: Request<api::PurgeDeadLettersRequest>,
    ) -> Result<Response<api::PurgeDeadLettersResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .purge_dead_letters(&tenant, &req.get_ref().id)
                .await?,
        ))
    }

    async fn put_inputs(
        &self,
        req: Request<api::PutInputsRequest>,
    ) -> Result<Response<api::PutInputsResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store.put_inputs(&tenant, req.into_inner()).await?,
        ))
    }

    async fn cancel_ticket(
        &self,
        req: Request<api::CancelTicketRequest>,
    ) -> Result<Response<api::CancelTicketResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .cancel_ticket(&tenant, &req.get_ref().ticket)
                .await?,
        ))
    }

    type SubscribeEventsStream = LogStream;

    async fn subscribe_events(
        &self,
        req: Request<api::SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        let tenant = self.tenant(&req)?;
        let events = self.store.subscribe_events(tenant, req.get_ref()).await?;
        Ok(Response::new(Box::pin(
            events.map(|e| e.map_err(Status::from)),
        )))
    }

    type ReadLogStream = LogStream;

    async fn read_log(
        &self,
        req: Request<api::ReadLogRequest>,
    ) -> Result<Response<Self::ReadLogStream>, Status> {
        let tenant = self.tenant(&req)?;
        let events = self.store.read_log(tenant, req.get_ref()).await?;
        Ok(Response::new(Box::pin(
            events.map(|e| e.map_err(Status::from)),
        )))
    }

    async fn start_backfill(
        &self,
        req: Request<tonic::Streaming<api::StartBackfillRequest>>,
    ) -> Result<Response<api::Backfill>, Status> {
        let (metadata, extensions, messages) = req.into_parts();
        let caller = Request::from_parts(metadata, extensions, ());
        self.start_backfill_from(caller, messages).await
    }

    async fn get_backfill(
        &self,
        req: Request<api::GetBackfillRequest>,
    ) -> Result<Response<api::Backfill>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store.get_backfill(&tenant, &req.get_ref().id).await?,
        ))
    }

    async fn list_backfills(
        &self,
        req: Request<api::ListBackfillsRequest>,
    ) -> Result<Response<api::ListBackfillsResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(api::ListBackfillsResponse {
            backfills: self.store.list_backfills(&tenant).await?,
        }))
    }

    async fn cancel_backfill(
        &self,
        req: Request<api::CancelBackfillRequest>,
    ) -> Result<Response<api::Backfill>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .cancel_backfill(&tenant, &req.get_ref().id)
                .await?,
        ))
    }

    async fn list_schedules(
        &self,
        req: Request<api::ListSchedulesRequest>,
    ) -> Result<Response<api::ListSchedulesResponse>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(api::ListSchedulesResponse {
            schedules: self.store.backfills().list_schedules(&tenant).await?,
        }))
    }

    async fn delete_schedule(
        &self,
        req: Request<api::DeleteScheduleRequest>,
    ) -> Result<Response<api::Schedule>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .backfills()
                .delete_schedule(&tenant, &req.get_ref().name)
                .await?,
        ))
    }

    async fn get_publish_status(
        &self,
        req: Request<api::GetPublishStatusRequest>,
    ) -> Result<Response<api::PublishStatus>, Status> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            self.store
                .publisher()
                .status(&tenant, &req.get_ref().feature)
                .await?,
        ))
    }

    async fn rollback(
        &self,
        req: Request<api::RollbackRequest>,
    ) -> Result<Response<api::FeaturePublish>, Status> {
        let tenant = self.tenant(&req)?;
        let r = req.get_ref();
        Ok(Response::new(
            self.store
                .publisher()
                .rollback(&tenant, &r.feature, r.to)
                .await?,
        ))
    }

    async fn create_api_key(
        &self,
        req: Request<api::CreateApiKeyRequest>,
    ) -> Result<Response<api::CreatedApiKey>, Status> {
        let tenant = self.tenant(&req)?;
        let keys = self.store.keys();
        Ok(Response::new(
            crate::auth::create_key_for(keys, &tenant, req.get_ref()).await?,
        ))
    }

    async fn list_api_keys(
        &self,
        req: Request<api::ListApiKeysRequest>,
    ) -> Result<Response<api::ListApiKeysResponse>, Status> {
        let tenant = self.tenant(&req)?;
        let keys = crate::auth::list_keys(self.store.keys(), &tenant).await?;
        Ok(Response::new(api::ListApiKeysResponse { keys }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<api::RevokeApiKeyRequest>,
    ) -> Result<Response<api::ApiKey>, Status> {
        let tenant = self.tenant(&req)?;
        let keys = self.store.keys();
        Ok(Response::new(
            crate::auth::revoke_key(keys, &tenant, &req.get_ref().id).await?,
        ))
    }
}
