//! Background enrichment: when an entity's inputs arrive (PutInputs), every value that
//! was computed without it — a reference that arrived before its entity, parked in the
//! substrate's enrichment index by the planner — is planned again on the batch lane and
//! followed to the end on a tracked task, with no caller involved. The new value covers
//! the entity (its key covers the keys it read, so it is a new value, not an overwrite).

use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api;
use fstore_proto::wire::PartialRef;
use fstore_substrate::time::now_ms;
use fstore_substrate::{Lane, Substrate};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

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
            &self.registry.snapshot(),
            &self.config.limits,
            now_ms(),
            self.substrate.inputs.as_ref(),
        )
        .await?;
        request.lane = Lane::Batch;
        let mut follower = Follower::new(
            self.planner.clone(),
            &self.hub,
            Arc::new(request),
            Instant::now() + FOLLOW_FOR,
            self.config.server.recheck_interval,
        )
        .waiting_for_all();
        let first = follower.first().await?;
        let last = if first.is_pending() {
            follower.last(first).await?
        } else {
            first
        };
        debug!(feature = %parked.feature, pending = last.is_pending(), "re-enriched");
        Ok(())
    }
}
