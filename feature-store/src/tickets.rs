//! Tickets: a request that is still pending is stored in the substrate's ticket store,
//! so any replica can re-plan it later (GetTicket, WatchFeatures on a ticket). A ticket
//! holds what the plan needs — tenant, entities with their inputs, exact feature
//! versions with their freshness bounds — and is read back only by its own tenant.
//!
//! A ticket has a lifecycle: pending, then final (a read that found every result final
//! stores them, and later reads answer those without planning again), or cancelled.
//! It is kept for `tickets.retention` after its last change. Its id is the request's
//! UUID v7, which carries the time it was issued: a missing id issued longer ago than
//! the retention has expired; one issued since never existed (for this tenant).

use std::sync::Arc;
use std::time::Duration;

use fstore_proto::{api, wire};
use fstore_substrate::TicketStore;
use fstore_substrate::time::now_ms;

use crate::names::truncate;
use crate::planner::Plan;
use crate::request::ValidRequest;
use crate::{Error, Result};

/// Ticket ids are 32 hex characters (a v7 UUID); anything longer was never issued.
const MAX_ID_LEN: usize = 64;

/// Creates and reads tickets. Cheap to clone.
#[derive(Clone)]
pub struct Tickets {
    store: Arc<dyn TicketStore>,
    retention: Duration,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

impl Tickets {
    pub fn new(store: Arc<dyn TicketStore>, retention: Duration) -> Self {
        Tickets { store, retention }
    }

    /// Stores `request`, pending as its first plan left it, under the request's id
    /// and returns the id.
    pub async fn create(&self, request: &ValidRequest, first: &Plan) -> Result<String> {
        let mut ticket = to_wire(request.id.clone(), request);
        ticket.claimed = first.claimed.clone();
        ticket.joined = first.joined.clone();
        self.store.put(ticket).await?;
        Ok(request.id.clone())
    }

    /// Ticket `id`, if `tenant` asked for it. Another tenant's ticket is answered like
    /// an unknown one.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<wire::Ticket> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(self.missing(id));
        }
        let asked_by = |t: &wire::Ticket| {
            if t.caller.is_empty() {
                t.tenant == tenant
            } else {
                t.caller == tenant
            }
        };
        match self.store.get(id).await? {
            Some(t) if asked_by(&t) => Ok(Arc::unwrap_or_clone(t)),
            _ => Err(self.missing(id)),
        }
    }

    /// Keeps `results` as the ticket's final answer (`canceled`: the ticket was given
    /// up, and the results not final read CANCELED).
    pub async fn finish(
        &self,
        mut ticket: wire::Ticket,
        results: &[api::FeatureResult],
        canceled: bool,
    ) -> Result<()> {
        let now = now_ms();
        ticket.results = results.to_vec();
        ticket.finished_at_ms = now;
        if canceled {
            ticket.canceled_at_ms = now;
        }
        self.store.put(ticket).await?;
        Ok(())
    }

    /// Why `id` is not there: expired, never issued, or not an id of ours.
    fn missing(&self, id: &str) -> Error {
        let shown = truncate(id, 80);
        let issued_ms = uuid::Uuid::try_parse(id)
            .ok()
            .filter(|u| u.get_version_num() == 7)
            .and_then(|u| u.get_timestamp())
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                secs as i64 * 1000 + i64::from(nanos / 1_000_000)
            });
        let retention = humantime::format_duration(self.retention);
        match issued_ms {
            Some(at) if now_ms().saturating_sub(at) > self.retention.as_millis() as i64 => {
                Error::NotFound(format!(
                    "ticket `{shown}` expired: tickets are kept for {retention} after their last change (tickets.retention); ask for the features again"
                ))
            }
            Some(_) => Error::NotFound(format!(
                "no ticket `{shown}`: it was never issued to this tenant (a SYNC call answered in time stores none)"
            )),
            None => Error::NotFound(format!(
                "no ticket `{shown}`: not a ticket id this store issues (32 hex digits)"
            )),
        }
    }
}

/// The stored form of a request.
fn to_wire(id: String, request: &ValidRequest) -> wire::Ticket {
    wire::Ticket {
        id,
        tenant: request.tenant.clone(),
        caller: if request.caller == request.tenant {
            String::new()
        } else {
            request.caller.clone()
        },
        created_at_ms: request.started_at_ms,
        entities: request.entities.clone(),
        features: request
            .features
            .iter()
            .map(|w| wire::TicketFeature {
                requested: w.requested.clone(),
                name: w.node.name.clone(),
                version: w.node.version,
                min_planned_at_ms: w.min_planned_at_ms,
            })
            .collect(),
        allow_stale: request.allow_stale,
        ..Default::default()
    }
}
