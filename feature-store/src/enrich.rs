//! Background enrichment: when an entity's inputs arrive (PutInputs), every value that
//! was computed without it — a reference that arrived before its entity, parked in the
//! substrate's enrichment index by the planner — is planned again on the batch lane and
//! followed to the end on a tracked task, with no caller involved. The new value covers
//! the entity (its key covers the keys it read, so it is a new value, not an overwrite).
//!
//! A background sweep ([`Enricher::sweep`]) catches what an arrival missed (the replica
//! that took the references died, or inputs were stored another way): each
//! `server.enrich_sweep` it lists the parked references and re-enriches those whose
//! entity has inputs now. Per entity type, a sweep that resolves nothing doubles that
//! type's interval (up to 16 times), one that does resets it. Re-running it changes
//! nothing that is complete: a complete value is found stored, not computed again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api;
use fstore_proto::wire::PartialRef;
use fstore_substrate::time::now_ms;
use fstore_substrate::{Lane, Substrate};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::Result;
use crate::config::Config;
use crate::follow::Follower;
use crate::planner::Planner;
use crate::ready::ReadyHub;
use crate::registry::Registry;
use crate::request::ValidRequest;

/// How long one re-enrichment is followed before it is left to its computes.
const FOLLOW_FOR: Duration = Duration::from_secs(600);

/// Plans again what waited on entities whose inputs just arrived. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Enricher {
    pub(crate) substrate: Substrate,
    pub(crate) registry: Registry,
    pub(crate) planner: Arc<Planner>,
    pub(crate) hub: ReadyHub,
    pub(crate) config: Config,
    pub(crate) tasks: TaskTracker,
}

impl Enricher {
    /// Takes the references parked on `entities` and re-enriches each in the background.
    pub async fn arrived(&self, tenant: &str, entities: &[String]) -> Result<usize> {
        let mut started = 0;
        for id in entities {
            for parked in self.substrate.partials.take(tenant, id).await? {
                let this = self.clone();
                let tenant = tenant.to_string();
                fstore_substrate::task::spawn_named(&self.tasks, "re-enrich", async move {
                    if let Err(e) = this.again(&tenant, &parked).await {
                        warn!(feature = %parked.feature, error = %e, "re-enrichment failed; the value is enriched when next asked for");
                    }
                });
                started += 1;
            }
        }
        Ok(started)
    }

    /// The sweep, until `shutdown`: see the module's documentation.
    pub async fn sweep(self, shutdown: CancellationToken) {
        let tick = self.config.server.enrich_sweep;
        if tick.is_zero() {
            return;
        }
        // Per entity type: the interval's multiple, and when it is next due.
        let mut backoff: HashMap<String, (u32, Instant)> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            match self.sweep_once(&mut backoff, tick).await {
                Ok(0) => {}
                Ok(n) => info!(
                    references = n,
                    "the sweep re-enriched values whose entities arrived"
                ),
                Err(e) => warn!(error = %e, "the enrichment sweep failed; trying again"),
            }
        }
    }

    /// One pass: re-enriches the references whose entity has inputs now, for the entity
    /// types that are due; returns how many it started.
    async fn sweep_once(
        &self,
        backoff: &mut HashMap<String, (u32, Instant)>,
        tick: Duration,
    ) -> Result<usize> {
        let now = Instant::now();
        // (tenant, entity) -> its type, for the types due now.
        let mut waiting: BTreeMap<(String, String), String> = BTreeMap::new();
        for (tenant, r) in self.substrate.partials.list().await? {
            let due = backoff
                .get(&r.entity_type)
                .is_none_or(|(_, next)| *next <= now);
            if due && !r.waits_on.is_empty() {
                waiting.insert((tenant, r.waits_on), r.entity_type);
            }
        }
        let mut resolved: HashMap<String, bool> = HashMap::new();
        let mut started = 0;
        for ((tenant, entity), ty) in waiting {
            let arrived = self.substrate.inputs.get(&tenant, &entity).await?.is_some();
            if arrived {
                started += self.arrived(&tenant, std::slice::from_ref(&entity)).await?;
            }
            *resolved.entry(ty).or_default() |= arrived;
        }
        for (ty, any) in resolved {
            let multiple = match backoff.get(&ty) {
                Some((m, _)) if !any => (m * 2).min(16),
                _ => 1,
            };
            backoff.insert(ty, (multiple, now + tick * multiple));
        }
        Ok(started)
    }

    /// Follows `request` to the end on a tracked task: what a call left awaiting (an
    /// aggregate submitted only once the related values it reads are known) is carried
    /// through without the caller.
    pub fn drive(&self, request: Arc<ValidRequest>) {
        let this = self.clone();
        fstore_substrate::task::spawn_named(&self.tasks, "drive-awaiting", async move {
            if let Err(e) = this.follow(request).await {
                warn!(error = %e, "driving an awaiting request failed; it completes when next asked for");
            }
        });
    }

    /// Plans `parked` again and follows it until it is final.
    async fn again(&self, tenant: &str, parked: &PartialRef) -> Result<()> {
        let Some(entity) = parked.entity.clone() else {
            return Ok(());
        };
        let req = api::GetFeaturesRequest {
            entities: vec![entity],
            features: vec![parked.feature.clone()],
            mode: api::Mode::Async as i32,
            ..Default::default()
        };
        let mut request = ValidRequest::new(
            tenant.to_string(),
            &req,
            &self.registry.snapshot(tenant),
            &self.config.limits,
            now_ms(),
            self.substrate.inputs.as_ref(),
        )
        .await?;
        request.lane = Lane::Batch;
        self.follow(Arc::new(request)).await?;
        debug!(feature = %parked.feature, "re-enriched");
        Ok(())
    }

    /// Plans `request` until nothing is pending (or [`FOLLOW_FOR`] runs out).
    async fn follow(&self, request: Arc<ValidRequest>) -> Result<()> {
        let mut follower = Follower::new(
            self.planner.clone(),
            &self.hub,
            request,
            Instant::now() + FOLLOW_FOR,
            self.config.server.recheck_interval,
        )
        .waiting_for_all();
        let first = follower.first().await?;
        if first.is_pending() {
            follower.last(first).await?;
        }
        Ok(())
    }
}
