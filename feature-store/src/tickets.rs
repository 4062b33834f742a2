//! Tickets: a request that is still pending is stored in the substrate's ticket store,
//! so any replica can re-plan it later (GetTicket, WatchFeatures on a ticket). A ticket
//! holds what the plan needs — tenant, entities with their inputs, exact feature
//! versions with their freshness bounds — and is read back only by its own tenant.

use std::sync::Arc;

use fstore_proto::wire;
use fstore_substrate::TicketStore;

use crate::names::truncate;
use crate::registry::Snapshot;
use crate::request::ValidRequest;
use crate::{Error, Result};

/// Ticket ids are 32 hex characters (a v4 UUID); anything longer was never issued.
const MAX_ID_LEN: usize = 64;

/// Creates and reads tickets. Cheap to clone.
#[derive(Clone)]
pub struct Tickets {
    store: Arc<dyn TicketStore>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

impl Tickets {
    pub fn new(store: Arc<dyn TicketStore>) -> Self {
        Tickets { store }
    }

    /// Stores `request` under a new id and returns the id.
    pub async fn create(&self, request: &ValidRequest) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.store.put(to_wire(id.clone(), request)).await?;
        Ok(id)
    }

    /// The request of ticket `id`, if it belongs to `tenant`, resolved against
    /// `snapshot`. Another tenant's ticket is answered like an unknown one.
    pub async fn read(&self, tenant: &str, id: &str, snapshot: &Snapshot) -> Result<ValidRequest> {
        let not_found = || {
            Error::NotFound(format!(
                "no ticket `{}` (it may have expired)",
                truncate(id, 80)
            ))
        };
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(not_found());
        }
        let ticket = self.store.get(id).await?.ok_or_else(not_found)?;
        if ticket.tenant != tenant {
            return Err(not_found());
        }
        ValidRequest::from_ticket(Arc::unwrap_or_clone(ticket), snapshot)
    }
}

/// The stored form of a request.
fn to_wire(id: String, request: &ValidRequest) -> wire::Ticket {
    wire::Ticket {
        id,
        tenant: request.tenant.clone(),
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
    }
}
