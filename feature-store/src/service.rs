//! The tonic service `featurestore.v1.FeatureStore`: request validation, tenants, the
//! SYNC wait and the watch stream around the [`Planner`]. Errors become statuses in
//! [`crate::status`] only.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api::{self, feature_store_server::FeatureStore};
use fstore_substrate::convert::api_type;
use fstore_substrate::time::now_ms;
use fstore_substrate::{Dispatcher, Substrate};
use futures::Stream;
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::names::{FeatureRef, check_entity_id, check_name, check_tenant};
use crate::planner::{Plan, PlanInput, Planner, PlannerOptions, Wanted, ticket};
use crate::ready::ReadyHub;
use crate::registry::{NodeInput, Registry};
use crate::{Error, Result};

/// The feature store service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    planner: Planner,
    dispatcher: Dispatcher,
    substrate: Substrate,
    hub: ReadyHub,
    config: Config,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(substrate: Substrate, registry: Registry, hub: ReadyHub, config: Config) -> Self {
        let dispatcher = Dispatcher::new(substrate.clone(), config.cache.failure_ttl);
        let planner = Planner::new(
            substrate.clone(),
            dispatcher.clone(),
            PlannerOptions {
                claim_ttl: config.cache.claim_ttl,
            },
        );
        Service {
            inner: Arc::new(Inner {
                registry,
                planner,
                dispatcher,
                substrate,
                hub,
                config,
            }),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn tenant<T>(&self, req: &Request<T>) -> Result<String> {
        match req.metadata().get(fstore_proto::TENANT_HEADER) {
            Some(v) => {
                let t = v.to_str().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "{} metadata must be ASCII",
                        fstore_proto::TENANT_HEADER
                    ))
                })?;
                check_tenant(t)?;
                Ok(t.to_string())
            }
            None => self
                .inner
                .config
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

    /// Validates a GetFeatures request and resolves its features.
    fn plan_input(&self, tenant: String, req: &api::GetFeaturesRequest) -> Result<PlanInput> {
        let limits = &self.inner.config.limits;
        if req.entities.is_empty() {
            return Err(Error::InvalidArgument(
                "no entities: send at least one entity id".into(),
            ));
        }
        if req.features.is_empty() {
            return Err(Error::InvalidArgument(
                "no features: name at least one feature".into(),
            ));
        }
        if req.entities.len() > limits.max_entities {
            return Err(Error::InvalidArgument(format!(
                "{} entities is more than the limit of {} per call; split the request",
                req.entities.len(),
                limits.max_entities
            )));
        }
        if req.features.len() > limits.max_features {
            return Err(Error::InvalidArgument(format!(
                "{} features is more than the limit of {} per call; split the request",
                req.features.len(),
                limits.max_features
            )));
        }
        let items = req.entities.len() * req.features.len();
        if items > limits.max_items {
            return Err(Error::InvalidArgument(format!(
                "{items} entity × feature pairs is more than the limit of {} per call; split the request",
                limits.max_items
            )));
        }
        for e in &req.entities {
            check_entity_id(&e.entity_id)?;
            let mut bytes = 0;
            for (name, value) in &e.inputs {
                check_name("request input", name)?;
                bytes += name.len() + value.encoded_len();
            }
            if bytes > limits.max_input_bytes {
                return Err(Error::InvalidArgument(format!(
                    "request inputs of entity `{}` are {bytes} bytes, more than the limit of {}",
                    crate::names::truncate(&e.entity_id, 80),
                    limits.max_input_bytes
                )));
            }
        }
        let snapshot = self.inner.registry.snapshot();
        let now = now_ms();
        let min_for = |staleness: Option<u64>| staleness.map_or(0, |s| now - s as i64);
        let mut features = Vec::with_capacity(req.features.len());
        for f in &req.features {
            let r = FeatureRef::parse(f)?;
            let node = snapshot.resolve(&r)?;
            let staleness = req
                .max_staleness_ms_by_feature
                .get(f)
                .or_else(|| req.max_staleness_ms_by_feature.get(&r.name))
                .copied()
                .or(req.max_staleness_ms);
            features.push(Wanted {
                requested: f.clone(),
                node,
                min_planned_at_ms: min_for(staleness),
            });
        }
        let mut dependency_min = HashMap::new();
        for (name, staleness) in &req.max_staleness_ms_by_feature {
            let r = FeatureRef::parse(name)?;
            snapshot.resolve(&r)?;
            dependency_min.insert(r.name, min_for(Some(*staleness)));
        }
        // Every request input a requested feature reads must be present and typed right.
        for e in &req.entities {
            for w in &features {
                for n in w.node.upstream.iter().chain(std::iter::once(&w.node)) {
                    for i in &n.inputs {
                        if let NodeInput::Request {
                            name, value_type, ..
                        } = i
                        {
                            let v = e.inputs.get(name).ok_or_else(|| {
                                Error::InvalidArgument(format!(
                                    "feature `{}` needs request input `{name}` ({value_type}) for entity `{}`",
                                    n.id(),
                                    crate::names::truncate(&e.entity_id, 80)
                                ))
                            })?;
                            if fstore_substrate::convert::wire_type(v) != Some(*value_type) {
                                return Err(Error::InvalidArgument(format!(
                                    "request input `{name}` of entity `{}` must be a {value_type} value (feature `{}`)",
                                    crate::names::truncate(&e.entity_id, 80),
                                    n.id()
                                )));
                            }
                        }
                    }
                }
            }
        }
        Ok(PlanInput {
            tenant,
            entities: req.entities.clone(),
            features,
            dependency_min_planned_at_ms: dependency_min,
            allow_stale: req.allow_stale,
            started_at_ms: now,
        })
    }

    /// Re-creates the plan input of a stored ticket of this tenant.
    async fn ticket_input(&self, tenant: &str, id: &str) -> Result<(PlanInput, String)> {
        let not_found = || {
            Error::NotFound(format!(
                "no ticket `{}` (it may have expired)",
                crate::names::truncate(id, 80)
            ))
        };
        if id.is_empty() || id.len() > 64 {
            return Err(not_found());
        }
        let t = self
            .inner
            .substrate
            .tickets
            .get(id)
            .await?
            .ok_or_else(not_found)?;
        if t.tenant != tenant {
            return Err(not_found());
        }
        let snapshot = self.inner.registry.snapshot();
        let features = t
            .features
            .iter()
            .map(|f| {
                Ok(Wanted {
                    requested: f.requested.clone(),
                    node: snapshot.resolve(&FeatureRef {
                        name: f.name.clone(),
                        version: Some(f.version),
                    })?,
                    min_planned_at_ms: f.min_planned_at_ms,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((
            PlanInput {
                tenant: t.tenant.clone(),
                entities: t.entities.clone(),
                features,
                dependency_min_planned_at_ms: HashMap::new(),
                allow_stale: t.allow_stale,
                started_at_ms: t.created_at_ms,
            },
            t.id.clone(),
        ))
    }

    async fn store_ticket(&self, input: &PlanInput) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.inner
            .substrate
            .tickets
            .put(ticket(id.clone(), input))
            .await?;
        Ok(id)
    }

    /// How long a call may wait: its own bound, the server's cap and the gRPC deadline.
    fn wait_bound<T>(&self, req: &Request<T>, wait_ms: u64) -> Duration {
        let limits = &self.inner.config.limits;
        let asked = if wait_ms == 0 {
            limits.default_wait
        } else {
            Duration::from_millis(wait_ms)
        };
        let mut bound = asked.min(limits.max_wait);
        if let Some(deadline) = grpc_timeout(req) {
            // Leave room to send the answer before the caller gives up.
            bound = bound.min(deadline.saturating_sub(Duration::from_millis(20)));
        }
        bound
    }

    /// Re-plans until nothing is pending or the deadline passes, waking on ready
    /// notifications for pending keys and on a periodic re-check.
    async fn wait(
        &self,
        input: &PlanInput,
        mut plan: Plan,
        mut rx: broadcast::Receiver<String>,
        deadline: Instant,
    ) -> Result<Plan> {
        let recheck = self.inner.config.server.recheck_interval;
        while plan.is_pending() && Instant::now() < deadline {
            let pending: HashSet<&str> = plan.pending_keys.iter().map(String::as_str).collect();
            let tick = deadline.min(Instant::now() + recheck);
            wait_for_any(&mut rx, &pending, tick).await;
            plan = self.inner.planner.plan(input).await?;
        }
        Ok(plan)
    }

    async fn get_features_inner(
        &self,
        req: Request<api::GetFeaturesRequest>,
    ) -> Result<api::GetFeaturesResponse> {
        let tenant = self.tenant(&req)?;
        let wait = self.wait_bound(&req, req.get_ref().wait_ms);
        let body = req.get_ref();
        let input = self.plan_input(tenant, body)?;
        let deadline = Instant::now() + wait;
        let mut plan = self.inner.planner.plan(&input).await?;
        if !plan.is_pending() {
            self.inner.planner.record(&input, &plan);
            return Ok(api::GetFeaturesResponse {
                results: plan.results,
                ticket: String::new(),
            });
        }
        let ticket = self.store_ticket(&input).await?;
        if body.mode() == api::Mode::Sync {
            // Subscribe, then look once more: a value that landed in between is seen
            // by the second plan, and any later one by the subscription.
            let rx = self.inner.hub.subscribe();
            plan = self.inner.planner.plan(&input).await?;
            plan = self.wait(&input, plan, rx, deadline).await?;
        }
        self.inner.planner.record(&input, &plan);
        Ok(api::GetFeaturesResponse {
            ticket: if plan.is_pending() {
                ticket
            } else {
                String::new()
            },
            results: plan.results,
        })
    }

    async fn watch_inner(
        &self,
        req: Request<api::WatchFeaturesRequest>,
    ) -> Result<mpsc::Receiver<Result<api::WatchEvent, Status>>> {
        let tenant = self.tenant(&req)?;
        let wait = self.wait_bound(&req, req.get_ref().wait_ms);
        let rx = self.inner.hub.subscribe();
        let (input, mut ticket_id) = match &req.get_ref().target {
            Some(api::watch_features_request::Target::Request(r)) => {
                (self.plan_input(tenant, r)?, String::new())
            }
            Some(api::watch_features_request::Target::Ticket(t)) => {
                let (input, id) = self.ticket_input(&tenant, t).await?;
                (input, id)
            }
            None => {
                return Err(Error::InvalidArgument(
                    "watch needs a request or a ticket".into(),
                ));
            }
        };
        let plan = self.inner.planner.plan(&input).await?;
        if plan.is_pending() && ticket_id.is_empty() {
            ticket_id = self.store_ticket(&input).await?;
        }
        let (tx, out) = mpsc::channel(256);
        let this = self.clone();
        let deadline = Instant::now() + wait;
        tokio::spawn(async move {
            if let Err(e) = this
                .stream_results(input, plan, rx, deadline, &ticket_id, &tx)
                .await
            {
                let _ = tx.send(Err(e.into())).await;
            }
        });
        Ok(out)
    }

    /// Sends each result once when it is final; at the deadline, the rest as PENDING.
    async fn stream_results(
        &self,
        input: PlanInput,
        mut plan: Plan,
        mut rx: broadcast::Receiver<String>,
        deadline: Instant,
        ticket_id: &str,
        tx: &mpsc::Sender<Result<api::WatchEvent, Status>>,
    ) -> Result<()> {
        let mut sent = vec![false; plan.results.len()];
        let recheck = self.inner.config.server.recheck_interval;
        loop {
            for (i, r) in plan.results.iter().enumerate() {
                let done = matches!(r.status(), api::Status::Ready | api::Status::Failed);
                let last_call = Instant::now() >= deadline;
                if !sent[i] && (done || last_call) {
                    sent[i] = true;
                    let event = api::WatchEvent {
                        result: Some(r.clone()),
                        ticket: ticket_id.to_string(),
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return Ok(()); // the caller went away
                    }
                }
            }
            if sent.iter().all(|s| *s) {
                return Ok(());
            }
            let pending: HashSet<&str> = plan.pending_keys.iter().map(String::as_str).collect();
            let tick = deadline.min(Instant::now() + recheck);
            wait_for_any(&mut rx, &pending, tick).await;
            plan = self.inner.planner.plan(&input).await?;
        }
    }

    async fn invalidate_inner(
        &self,
        req: Request<api::InvalidateRequest>,
    ) -> Result<api::InvalidateResponse> {
        let tenant = self.tenant(&req)?;
        let body = req.get_ref();
        let r = FeatureRef::parse(&body.feature)?;
        let entity = if body.entity_id.is_empty() {
            None
        } else {
            check_entity_id(&body.entity_id)?;
            Some(body.entity_id.as_str())
        };
        let snapshot = self.inner.registry.snapshot();
        let roots = match r.version {
            Some(_) => vec![snapshot.resolve(&r)?],
            None => {
                let n = snapshot.versions(&r.name).len() as u32;
                if n == 0 {
                    snapshot.resolve(&r)?; // the NotFound error
                }
                (1..=n)
                    .map(|v| {
                        snapshot.resolve(&FeatureRef {
                            name: r.name.clone(),
                            version: Some(v),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let mut targets = Vec::new();
        for root in roots {
            targets.extend(snapshot.downstream(&(root.name.clone(), root.version)));
            targets.push(root);
        }
        let at = now_ms();
        let mut invalidated: Vec<String> = Vec::new();
        for node in targets {
            let id = node.id();
            if invalidated.contains(&id) {
                continue;
            }
            self.inner
                .substrate
                .watermarks
                .set(&tenant, &id, entity, at, Duration::from_millis(node.ttl_ms))
                .await?;
            invalidated.push(id);
        }
        invalidated.sort();
        Ok(api::InvalidateResponse { invalidated })
    }

    async fn register_inner(
        &self,
        req: api::RegisterFeatureRequest,
    ) -> Result<api::RegisterFeatureResponse> {
        let def = req
            .definition
            .ok_or_else(|| Error::InvalidArgument("register needs a definition".into()))?;
        // The flow must be served now, unless the caller forces it (a flow that was
        // advertised once but has no live worker at the moment).
        if let Ok(id) = def.flow.parse::<fstore_flows::FlowId>() {
            let flows = self.inner.substrate.directory.list().await?;
            if let Some(entry) = flows.iter().find(|f| f.spec.id == id)
                && entry.live_workers == 0
                && !req.force
            {
                return Err(Error::Definition(format!(
                    "feature `{}`: no worker serves flow {id} right now; start one or register with force",
                    def.name
                )));
            }
        }
        let registered = self.inner.registry.register(def).await?;
        Ok(api::RegisterFeatureResponse {
            feature: Some(registered.node.definition.clone()),
            lineage_hash: registered.node.lineage.clone(),
            created: registered.created,
        })
    }

    async fn describe_inner(
        &self,
        req: api::DescribeFeatureRequest,
    ) -> Result<api::DescribeFeatureResponse> {
        let r = FeatureRef::parse(&req.feature)?;
        let snapshot = self.inner.registry.snapshot();
        let node = snapshot.resolve(&r)?;
        let mut dependencies: Vec<String> = node
            .inputs
            .iter()
            .filter_map(|i| match i {
                NodeInput::Feature { node, .. } => Some(node.id()),
                NodeInput::Request { .. } => None,
            })
            .collect();
        dependencies.sort();
        dependencies.dedup();
        Ok(api::DescribeFeatureResponse {
            definition: Some(node.definition.clone()),
            lineage_hash: node.lineage.clone(),
            value_type: api_type(node.value_type) as i32,
            dependencies,
            dependents: snapshot.dependents(&(node.name.clone(), node.version)),
            versions: snapshot
                .versions(&node.name)
                .iter()
                .map(|d| d.version)
                .collect(),
            flow: self
                .inner
                .substrate
                .directory
                .list()
                .await?
                .iter()
                .find(|f| f.spec.id == node.flow)
                .map(flow_info),
            stats: Some(self.inner.planner.served().of(&node.id)),
        })
    }
}

impl Service {
    async fn list_dead_letters_inner(
        &self,
        req: Request<api::ListDeadLettersRequest>,
    ) -> Result<api::ListDeadLettersResponse> {
        let tenant = self.tenant(&req)?;
        let limit = match req.get_ref().limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let (letters, total) = self
            .inner
            .substrate
            .dead_letters
            .list(&tenant, limit)
            .await?;
        Ok(api::ListDeadLettersResponse {
            dead_letters: letters.iter().map(dead_letter_info).collect(),
            total,
        })
    }

    /// A dead letter of the caller's tenant, or NOT_FOUND.
    async fn own_dead_letter(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<fstore_substrate::DeadLetter> {
        let letter = self.inner.substrate.dead_letters.get(id).await?;
        letter
            .filter(|l| l.job.as_ref().is_some_and(|j| j.tenant == tenant))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no dead letter `{}`; `fstore dlq ls` lists them",
                    crate::names::truncate(id, 40)
                ))
            })
    }

    async fn replay_inner(
        &self,
        req: Request<api::ReplayDeadLetterRequest>,
    ) -> Result<api::ReplayDeadLetterResponse> {
        let tenant = self.tenant(&req)?;
        let letter = self.own_dead_letter(&tenant, &req.get_ref().id).await?;
        let Some(mut job) = letter.job else {
            return Err(Error::NotFound("the dead letter holds no job".into()));
        };
        let claimed = self
            .inner
            .substrate
            .claims
            .claim(&job.value_key, self.inner.config.cache.claim_ttl)
            .await?;
        let enqueued = match claimed {
            Some(generation) => {
                // A new generation: a new message id, so the duplicate window cannot
                // swallow it, and a fresh attempt count.
                job.generation = generation;
                job.planned_at_ms = now_ms();
                self.inner.dispatcher.submit(&job).await?;
                true
            }
            // Someone is computing this value already.
            None => false,
        };
        self.inner.substrate.dead_letters.remove(&letter.id).await?;
        Ok(api::ReplayDeadLetterResponse { enqueued })
    }

    async fn purge_inner(
        &self,
        req: Request<api::PurgeDeadLettersRequest>,
    ) -> Result<api::PurgeDeadLettersResponse> {
        let tenant = self.tenant(&req)?;
        let dl = &self.inner.substrate.dead_letters;
        if !req.get_ref().id.is_empty() {
            let letter = self.own_dead_letter(&tenant, &req.get_ref().id).await?;
            let purged = u64::from(dl.remove(&letter.id).await?);
            return Ok(api::PurgeDeadLettersResponse { purged });
        }
        let mut purged = 0;
        loop {
            let (letters, _) = dl.list(&tenant, 500).await?;
            if letters.is_empty() {
                break;
            }
            for l in letters {
                purged += u64::from(dl.remove(&l.id).await?);
            }
        }
        Ok(api::PurgeDeadLettersResponse { purged })
    }
}

fn dead_letter_info(l: &fstore_substrate::DeadLetter) -> api::DeadLetterInfo {
    let job = l.job.clone().unwrap_or_default();
    api::DeadLetterInfo {
        id: l.id.clone(),
        entity_id: job.entity_id,
        feature: format!("{}@{}", job.feature, job.feature_version),
        flow: format!("{}@{}", job.flow, job.flow_version),
        error: l.error.clone(),
        attempts: l.attempts,
        planned_at_ms: l.planned_at_ms,
        failed_at_ms: l.failed_at_ms,
        value_key: job.value_key,
    }
}

/// The API view of a directory entry.
fn flow_info(f: &fstore_substrate::store::FlowEntry) -> api::FlowInfo {
    api::FlowInfo {
        name: f.spec.id.name.clone(),
        version: f.spec.id.version,
        inputs: f
            .spec
            .inputs
            .iter()
            .map(|i| api::FlowInput {
                name: i.name.clone(),
                value_type: api_type(i.value_type) as i32,
            })
            .collect(),
        output: api_type(f.spec.output) as i32,
        batchable: f.spec.batchable,
        description: f.spec.description.clone(),
        params: f.spec.params.iter().map(|p| p.name.clone()).collect(),
        entity_types: f.spec.entity_types.clone(),
        live_workers: f.live_workers,
        models: f
            .models
            .iter()
            .map(|(worker, m)| api::ModelStatus {
                worker: worker.clone(),
                name: m.name.clone(),
                path: m.path.clone(),
                sha256: m.sha256.clone(),
                loaded: m.loaded,
                load_ms: m.load_ms,
                loads: m.loads,
            })
            .collect(),
    }
}

/// Returns when a pending key is notified, notifications were lost, or at `until`.
async fn wait_for_any(
    rx: &mut broadcast::Receiver<String>,
    pending: &HashSet<&str>,
    until: Instant,
) {
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(key) if pending.contains(key.as_str()) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep_until(until).await;
                    return;
                }
            },
            _ = tokio::time::sleep_until(until) => return,
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

type WatchStream = Pin<Box<dyn Stream<Item = Result<api::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl FeatureStore for Service {
    async fn register_feature(
        &self,
        req: Request<api::RegisterFeatureRequest>,
    ) -> Result<Response<api::RegisterFeatureResponse>, Status> {
        Ok(Response::new(self.register_inner(req.into_inner()).await?))
    }

    async fn list_features(
        &self,
        req: Request<api::ListFeaturesRequest>,
    ) -> Result<Response<api::ListFeaturesResponse>, Status> {
        let prefix = &req.get_ref().prefix;
        let snapshot = self.inner.registry.snapshot();
        let features = snapshot
            .latest()
            .filter(|n| n.name.starts_with(prefix.as_str()))
            .map(|n| api::FeatureSummary {
                name: n.name.clone(),
                latest_version: n.version,
                entity_type: n.definition.entity_type.clone(),
                flow: n.flow.to_string(),
                value_type: api_type(n.value_type) as i32,
                ttl_ms: n.ttl_ms,
                owner: n.definition.owner.clone(),
                description: n.definition.description.clone(),
            })
            .collect();
        Ok(Response::new(api::ListFeaturesResponse { features }))
    }

    async fn describe_feature(
        &self,
        req: Request<api::DescribeFeatureRequest>,
    ) -> Result<Response<api::DescribeFeatureResponse>, Status> {
        Ok(Response::new(self.describe_inner(req.into_inner()).await?))
    }

    async fn list_flows(
        &self,
        _req: Request<api::ListFlowsRequest>,
    ) -> Result<Response<api::ListFlowsResponse>, Status> {
        let flows = self
            .inner
            .substrate
            .directory
            .list()
            .await
            .map_err(Error::from)?
            .iter()
            .map(flow_info)
            .collect();
        Ok(Response::new(api::ListFlowsResponse { flows }))
    }

    async fn get_features(
        &self,
        req: Request<api::GetFeaturesRequest>,
    ) -> Result<Response<api::GetFeaturesResponse>, Status> {
        let started = std::time::Instant::now();
        let sync = req.get_ref().mode() == api::Mode::Sync;
        let span = tracing::info_span!(
            "get_features",
            mode = if sync { "sync" } else { "async" },
            entities = req.get_ref().entities.len(),
            features = req.get_ref().features.len()
        );
        fstore_substrate::trace::adopt_pairs(
            &span,
            req.metadata().iter().filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str(), v.to_str().ok()?))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            }),
        );
        let label = fstore_substrate::metrics::ModeLabel {
            mode: if sync { "sync" } else { "async" }.to_string(),
        };
        let metrics = fstore_substrate::metrics::global();
        metrics.requests.get_or_create(&label).inc();
        let answer = tracing::Instrument::instrument(self.get_features_inner(req), span).await;
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
        let (input, id) = self.ticket_input(&tenant, &req.get_ref().ticket).await?;
        let plan = self.inner.planner.plan(&input).await?;
        Ok(Response::new(api::GetFeaturesResponse {
            ticket: if plan.is_pending() { id } else { String::new() },
            results: plan.results,
        }))
    }

    type WatchFeaturesStream = WatchStream;

    async fn watch_features(
        &self,
        req: Request<api::WatchFeaturesRequest>,
    ) -> Result<Response<Self::WatchFeaturesStream>, Status> {
        let rx = self.watch_inner(req).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn invalidate(
        &self,
        req: Request<api::InvalidateRequest>,
    ) -> Result<Response<api::InvalidateResponse>, Status> {
        Ok(Response::new(self.invalidate_inner(req).await?))
    }

    async fn list_dead_letters(
        &self,
        req: Request<api::ListDeadLettersRequest>,
    ) -> Result<Response<api::ListDeadLettersResponse>, Status> {
        Ok(Response::new(self.list_dead_letters_inner(req).await?))
    }

    async fn replay_dead_letter(
        &self,
        req: Request<api::ReplayDeadLetterRequest>,
    ) -> Result<Response<api::ReplayDeadLetterResponse>, Status> {
        Ok(Response::new(self.replay_inner(req).await?))
    }

    async fn purge_dead_letters(
        &self,
        req: Request<api::PurgeDeadLettersRequest>,
    ) -> Result<Response<api::PurgeDeadLettersResponse>, Status> {
        Ok(Response::new(self.purge_inner(req).await?))
    }
}
