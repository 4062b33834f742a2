//! The feature store's calls, free of gRPC: one method per call of `featurestore.v1`,
//! each taking the caller's tenant. The tonic adapter ([`crate::service`]) authenticates,
//! calls one of these and maps the error; nothing here knows `tonic::Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api;
use fstore_substrate::time::now_ms;
use fstore_substrate::{Dispatcher, Substrate};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backfill::{Backfills, Spec};
use crate::config::Config;
use crate::enrich::Enricher;
use crate::follow::Follower;
use crate::planner::{Planner, PlannerOptions, Planning};
use crate::publish::Publisher;
use crate::publish::snapshots::Snapshots;
use crate::ready::ReadyHub;
use crate::registry::Registry;
use crate::request::{Mode, ValidRequest, wait_bound};
use crate::shared;
use crate::tickets::Tickets;
use crate::{Error, Result, admin, describe, events, inputs};

/// Everything a call needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    planner: Arc<Planner>,
    backfills: Backfills,
    publisher: Publisher,
    snapshots: Snapshots,
    enricher: Enricher,
    tickets: Tickets,
    substrate: Substrate,
    hub: ReadyHub,
    config: Config,
    /// This replica's name among the others (its served figures are reported under it).
    replica: String,
    /// Cancelled when the server drains: live subscriptions end then.
    shutdown: CancellationToken,
}

/// Watch events, as the service streams them.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<api::WatchEvent>> + Send>>;

impl Store {
    /// The calls over `substrate`; `tasks` holds the work a call leaves behind when it is
    /// cancelled (giving back abandoned claims); `shutdown` ends live subscriptions, so
    /// a draining server is not held open by them.
    pub fn new(
        substrate: Substrate,
        registry: Registry,
        hub: ReadyHub,
        config: Config,
        replica: String,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let dispatcher = Dispatcher::new(
            substrate.clone(),
            config.cache.failure_ttl,
            config.cache.claim_ttl,
            tasks.clone(),
        );
        let snapshots = Snapshots::default();
        let planner = Arc::new(Planner::new(
            substrate.clone(),
            dispatcher,
            PlannerOptions {
                claim_ttl: config.cache.claim_ttl,
                refresh_ahead: config.cache.refresh_ahead,
                max_related: config.limits.max_related,
            },
            tasks.clone(),
            snapshots.clone(),
        ));
        let publisher = Publisher::new(
            substrate.publish.clone(),
            registry.clone(),
            config.backfill.keep_generations,
        );
        let backfills = Backfills::new(
            substrate.clone(),
            registry.clone(),
            planner.clone(),
            hub.clone(),
            config.clone(),
            publisher.clone(),
        );
        let enricher = Enricher {
            substrate: substrate.clone(),
            registry: registry.clone(),
            planner: planner.clone(),
            hub: hub.clone(),
            config: config.clone(),
            tasks,
        };
        Store {
            inner: Arc::new(Inner {
                enricher,
                registry,
                planner,
                backfills,
                publisher,
                snapshots,
                tickets: Tickets::new(substrate.tickets.clone(), config.tickets.retention),
                substrate,
                hub,
                config,
                replica,
                shutdown,
            }),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Backfills, for the replica's [`crate::backfill::runner::Runner`].
    pub fn backfills(&self) -> &Backfills {
        &self.inner.backfills
    }

    /// Background enrichment, whose sweep the server runs.
    pub fn enricher(&self) -> &Enricher {
        &self.inner.enricher
    }

    /// Generations: publish status and rollback.
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// The published generations in memory, which the server loads before it serves
    /// and keeps following.
    pub fn snapshots(&self) -> &Snapshots {
        &self.inner.snapshots
    }

    fn follow(&self, request: ValidRequest, wait: Duration) -> Follower {
        Follower::new(
            self.inner.planner.clone(),
            &self.inner.hub,
            Arc::new(request),
            Instant::now() + wait,
            self.inner.config.server.recheck_interval,
        )
    }

    async fn validate(
        &self,
        tenant: String,
        req: &api::GetFeaturesRequest,
    ) -> Result<ValidRequest> {
        let limits = &self.inner.config.limits;
        let inputs = self.inner.substrate.inputs.as_ref();
        let Some(owner) = shared::owner_of(&req.features)? else {
            let snapshot = self.inner.registry.snapshot(&tenant);
            return ValidRequest::new(tenant, req, &snapshot, limits, now_ms(), inputs).await;
        };
        // Features another tenant shared: read in the owner's namespace, as the caller.
        let snapshot = self.inner.registry.snapshot(&owner);
        for f in &req.features {
            shared::resolve(&snapshot, &tenant, &owner, shared::split(f).1)?;
        }
        let theirs = shared::in_owner_terms(req);
        let mut request =
            ValidRequest::new(owner.clone(), &theirs, &snapshot, limits, now_ms(), inputs).await?;
        request.caller = tenant;
        for w in &mut request.features {
            w.requested = format!("{owner}/{}", w.requested);
        }
        Ok(request)
    }

    /// ASYNC answers the first plan; SYNC the last one before its wait runs out. A ticket
    /// comes back while anything is pending.
    pub async fn get_features(
        &self,
        tenant: String,
        req: &api::GetFeaturesRequest,
        grpc_deadline: Option<Duration>,
    ) -> Result<api::GetFeaturesResponse> {
        let wait = wait_bound(&self.inner.config.limits, req.wait_ms, grpc_deadline);
        let request = self.validate(tenant, req).await?;
        let mode = request.mode;
        let mut follower = self.follow(request, wait);
        let first = follower.first().await?;
        let request = follower.request().clone();
        let origins = first.origins.clone();
        let mut ticket = String::new();
        if first.is_pending() {
            ticket = self.inner.tickets.create(&request, &first).await?;
        }
        let mut answer = match mode {
            Mode::Sync if first.is_pending() => follower.last(first).await?,
            _ => first,
        };
        answer.mark_cached(&origins);
        self.inner.planner.record(&request, &origins, &answer);
        if answer.awaiting {
            // Aggregates over related entities are submitted by a later plan: this
            // replica makes it, whether or not the caller asks again.
            self.inner.enricher.drive(request.clone());
        }
        if !answer.is_pending() {
            ticket.clear();
        }
        Ok(api::GetFeaturesResponse {
            results: answer.results,
            ticket,
            canceled: false,
        })
    }

    /// The current state of a ticket's results: a fresh plan of its request while it
    /// is pending; once final (or cancelled), the results it ended with.
    pub async fn get_ticket(&self, tenant: &str, id: &str) -> Result<api::GetFeaturesResponse> {
        let ticket = self.inner.tickets.get(tenant, id).await?;
        if ticket.finished_at_ms != 0 {
            return Ok(api::GetFeaturesResponse {
                canceled: ticket.canceled_at_ms != 0,
                results: ticket.results,
                ticket: String::new(),
            });
        }
        let request = self.ticket_request(ticket.clone()).await?;
        let plan = self.follow(request, Duration::ZERO).first().await?;
        if plan.is_pending() {
            return Ok(api::GetFeaturesResponse {
                ticket: id.to_string(),
                results: plan.results,
                canceled: false,
            });
        }
        self.inner
            .tickets
            .finish(ticket, &plan.results, false)
            .await?;
        Ok(api::GetFeaturesResponse {
            ticket: String::new(),
            results: plan.results,
            canceled: false,
        })
    }

    /// The request a ticket holds, resolved in its tenant's registry. A ticket planned
    /// on another replica may name a version this one has not seen yet (registrations
    /// reach replicas by a watch): the registry is read again once (from the leader),
    /// and a version still missing then is this replica's lag, answered UNAVAILABLE,
    /// never NOT_FOUND: the ticket proves the version exists.
    async fn ticket_request(&self, ticket: fstore_proto::wire::Ticket) -> Result<ValidRequest> {
        let registry = &self.inner.registry;
        match ValidRequest::from_ticket(ticket.clone(), &registry.snapshot(&ticket.tenant)) {
            Err(Error::NotFound(_)) => {
                registry.reload(Some(&ticket.tenant)).await?;
                ValidRequest::from_ticket(ticket.clone(), &registry.snapshot(&ticket.tenant))
                    .map_err(|e| match e {
                        // The ticket was issued from definitions this replica still lacks.
                        Error::NotFound(m) => {
                            Error::Substrate(fstore_substrate::Error::Unavailable(format!(
                                "{m}: this replica has not caught up with the definitions the ticket was issued from; retry"
                            )))
                        }
                        other => other,
                    })
            }
            resolved => resolved,
        }
    }

    /// Gives a ticket up: each compute its first plan claimed is abandoned unless a
    /// request that joined it still waits; the computes it joined forget it. Its last
    /// answer is what is stored now, the rest CANCELED.
    pub async fn cancel_ticket(&self, tenant: &str, id: &str) -> Result<api::CancelTicketResponse> {
        let ticket = self.inner.tickets.get(tenant, id).await?;
        if ticket.finished_at_ms != 0 {
            return Ok(api::CancelTicketResponse {
                already_complete: true,
                ..Default::default()
            });
        }
        let claims = &self.inner.substrate.claims;
        for c in &ticket.joined {
            claims.withdraw(&c.key, c.generation, id).await?;
        }
        let (mut dropped, mut kept, mut finished) = (0, 0, 0);
        let ttl = self.inner.config.cache.claim_ttl;
        let results = &self.inner.substrate.results;
        for c in &ticket.claimed {
            let stored = results.get(&c.key, 0).await?;
            if stored.is_some_and(|e| e.generation >= c.generation) {
                // Computed already: nothing to give up (and its claim is released).
                claims.withdraw(&c.key, c.generation, id).await?;
                finished += 1;
            } else if claims.withdraw(&c.key, c.generation, id).await?.is_empty() {
                claims.abandon(&c.key, c.generation, ttl).await?;
                dropped += 1;
            } else {
                kept += 1;
            }
        }
        let request = self.ticket_request(ticket.clone()).await?;
        let mut plan = self.inner.planner.plan(&request, Planning::Look).await?;
        for r in &mut plan.results {
            if matches!(r.status(), api::Status::Pending | api::Status::Stale) {
                r.set_status(api::Status::Canceled);
            }
        }
        self.inner
            .tickets
            .finish(ticket, &plan.results, true)
            .await?;
        Ok(api::CancelTicketResponse {
            dropped,
            kept,
            finished,
            already_complete: false,
        })
    }

    /// Stores request-time inputs of entities (merged into what each has) and logs them.
    pub async fn put_inputs(
        &self,
        tenant: &str,
        req: api::PutInputsRequest,
    ) -> Result<api::PutInputsResponse> {
        let ids: Vec<String> = req.entities.iter().map(|e| e.entity_id.clone()).collect();
        let stored = inputs::put(
            &self.inner.substrate,
            &self.inner.config.limits,
            tenant,
            req,
        )
        .await?;
        // Values that referenced these entities before they had inputs: enriched now.
        if let Err(e) = self.inner.enricher.arrived(tenant, &ids).await {
            tracing::warn!(error = %e, "could not read the values waiting on these entities; they are enriched when next asked for");
        }
        Ok(stored)
    }

    /// The result-ready stream of the tenant, live, from the cursor asked for.
    pub async fn subscribe_events(
        &self,
        tenant: String,
        req: &api::SubscribeEventsRequest,
    ) -> Result<events::EventStream> {
        let snapshot = self.inner.registry.snapshot(&tenant);
        let query = events::subscription(tenant, req, &snapshot)?;
        let events = events::read(&self.inner.substrate, query).await?;
        let stop = self.inner.shutdown.clone().cancelled_owned();
        Ok(Box::pin(events.take_until(stop)))
    }

    /// A time range of the tenant's feature log.
    pub async fn read_log(
        &self,
        tenant: String,
        req: &api::ReadLogRequest,
    ) -> Result<events::EventStream> {
        let snapshot = self.inner.registry.snapshot(&tenant);
        let query = events::range(tenant, req, &snapshot, now_ms())?;
        events::read(&self.inner.substrate, query).await
    }

    /// Every result once, when it becomes final; at the end of the wait, the rest as
    /// they stand. A request that is pending gets a ticket, carried in every event.
    pub async fn watch(
        &self,
        tenant: String,
        req: &api::WatchFeaturesRequest,
        grpc_deadline: Option<Duration>,
    ) -> Result<WatchStream> {
        let wait = wait_bound(&self.inner.config.limits, req.wait_ms, grpc_deadline);
        let (request, mut ticket) = match &req.target {
            Some(api::watch_features_request::Target::Request(r)) => {
                (self.validate(tenant, r).await?, String::new())
            }
            Some(api::watch_features_request::Target::Ticket(id)) => {
                let ticket = self.inner.tickets.get(&tenant, id).await?;
                if ticket.finished_at_ms != 0 {
                    // Final (or cancelled): its results, each once.
                    let events = ticket.results.into_iter().map(|r| {
                        Ok(api::WatchEvent {
                            result: Some(r),
                            ticket: String::new(),
                        })
                    });
                    return Ok(Box::pin(futures::stream::iter(events)));
                }
                (self.ticket_request(ticket).await?, id.clone())
            }
            None => {
                return Err(Error::InvalidArgument(
                    "watch needs a request or a ticket".into(),
                ));
            }
        };
        let mut follower = self.follow(request, wait);
        let first = follower.first().await?;
        if first.is_pending() && ticket.is_empty() {
            ticket = self
                .inner
                .tickets
                .create(follower.request(), &first)
                .await?;
        }
        let plans = futures::stream::once(async { Ok(first) }).chain(follower.into_stream());
        Ok(Box::pin(crate::follow::watch_events(
            Box::pin(plans),
            ticket,
        )))
    }

    pub async fn register(
        &self,
        tenant: &str,
        req: api::RegisterFeatureRequest,
    ) -> Result<api::RegisterFeatureResponse> {
        let def = req
            .definition
            .ok_or_else(|| Error::InvalidArgument("register needs a definition".into()))?;
        let registry = &self.inner.registry;
        let mut done = registry.register(tenant, vec![def], req.force).await?;
        done.pop()
            .ok_or_else(|| Error::Internal("a registration answered nothing".into()))
    }

    pub async fn register_all(
        &self,
        tenant: &str,
        req: api::RegisterFeaturesRequest,
    ) -> Result<api::RegisterFeaturesResponse> {
        let registered = self
            .inner
            .registry
            .register(tenant, req.definitions, req.force)
            .await?;
        Ok(api::RegisterFeaturesResponse { registered })
    }

    /// The tenant's features, then those shared with it (`owner/name`).
    pub fn list_features(&self, tenant: &str, prefix: &str) -> api::ListFeaturesResponse {
        let registry = &self.inner.registry;
        let mut listed = describe::list_features(&registry.snapshot(tenant), prefix);
        listed
            .features
            .extend(shared::listed(registry, tenant, prefix));
        listed
    }

    pub async fn describe_feature(
        &self,
        tenant: &str,
        feature: &str,
    ) -> Result<api::DescribeFeatureResponse> {
        if let (Some(owner), name) = shared::split(feature) {
            let snapshot = self.inner.registry.snapshot(owner);
            let node = shared::resolve(&snapshot, tenant, owner, name)?;
            return shared::describe(&self.inner.substrate, owner, &snapshot, &node).await;
        }
        // The other replicas' figures; without them this replica's alone (the view
        // says how many replicas it adds up).
        let others: Vec<_> = match self.inner.substrate.served.list(tenant).await {
            Ok(reports) => reports
                .into_iter()
                .filter(|(replica, _)| *replica != self.inner.replica)
                .map(|(_, report)| report)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the other replicas' figures");
                Vec::new()
            }
        };
        describe::describe_feature(
            &self.inner.substrate,
            tenant,
            &self.inner.registry.snapshot(tenant),
            self.inner.planner.served(),
            &others,
            feature,
        )
        .await
    }

    /// Reports what this replica served, each `server.stats_interval` until `shutdown`,
    /// for the other replicas' views; kept three intervals.
    pub async fn report_served(self, shutdown: CancellationToken) {
        let every = self.inner.config.server.stats_interval;
        let served = &self.inner.substrate.served;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            for (tenant, report) in self.inner.planner.served().reports() {
                let put = served.put(&tenant, &self.inner.replica, &report, every * 3);
                if let Err(e) = put.await {
                    tracing::debug!(error = %e, %tenant, "reporting what this replica served failed; trying again");
                }
            }
        }
    }

    /// The API key records, shared by every replica.
    pub fn keys(&self) -> &dyn fstore_substrate::KeyStore {
        self.inner.substrate.keys.as_ref()
    }

    pub async fn list_flows(&self, tenant: &str) -> Result<api::ListFlowsResponse> {
        describe::list_flows(&self.inner.substrate, tenant).await
    }

    pub async fn invalidate(
        &self,
        tenant: &str,
        req: &api::InvalidateRequest,
    ) -> Result<api::InvalidateResponse> {
        let snapshot = self.inner.registry.snapshot(tenant);
        admin::invalidate(&self.inner.substrate, &snapshot, tenant, req).await
    }

    pub async fn list_dead_letters(
        &self,
        tenant: &str,
        limit: u32,
    ) -> Result<api::ListDeadLettersResponse> {
        admin::list_dead_letters(&self.inner.substrate, tenant, limit).await
    }

    pub async fn replay_dead_letter(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<api::ReplayDeadLetterResponse> {
        admin::replay_dead_letter(&self.inner.substrate, &self.inner.planner, tenant, id).await
    }

    pub async fn purge_dead_letters(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<api::PurgeDeadLettersResponse> {
        admin::purge_dead_letters(&self.inner.substrate, tenant, id).await
    }
}

/// Backfills: [`crate::backfill`].
impl Store {
    pub async fn start_backfill(
        &self,
        tenant: String,
        spec: Spec,
        entities: Vec<api::EntityRequest>,
    ) -> Result<api::Backfill> {
        self.inner.backfills.start(tenant, spec, entities).await
    }

    pub async fn get_backfill(&self, tenant: &str, id: &str) -> Result<api::Backfill> {
        self.inner.backfills.get(tenant, id).await
    }

    pub async fn list_backfills(&self, tenant: &str) -> Result<Vec<api::Backfill>> {
        self.inner.backfills.list(tenant).await
    }

    pub async fn cancel_backfill(&self, tenant: &str, id: &str) -> Result<api::Backfill> {
        self.inner.backfills.cancel(tenant, id).await
    }
}
