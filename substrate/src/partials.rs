//! The enrichment index: per (tenant, entity), the values computed without that entity
//! because it had no inputs yet — a reference that arrived before its entity. When the
//! entity's inputs arrive, the feature store takes its list and plans each value again
//! in the background.

use async_trait::async_trait;
use fstore_proto::wire::PartialRef;

use crate::Error;

/// References parked on one entity at most; older ones are dropped first.
pub const MAX_PARKED: usize = 1_000;

#[async_trait]
pub trait PartialIndex: Send + Sync + 'static {
    /// Parks `item` on the missing `entity` (once per referencing entity and feature).
    async fn park(&self, tenant: &str, entity: &str, item: PartialRef) -> Result<(), Error>;
    /// Takes every reference parked on `entity`.
    async fn take(&self, tenant: &str, entity: &str) -> Result<Vec<PartialRef>, Error>;
    /// Every reference parked, with its tenant (for the background sweep).
    async fn list(&self) -> Result<Vec<(String, PartialRef)>, Error>;
}

/// Adds `item` to `list` unless the same (entity, feature) is there, keeping at most
/// [`MAX_PARKED`]; false when nothing changed.
pub fn add(list: &mut Vec<PartialRef>, item: PartialRef) -> bool {
    let id = |r: &PartialRef| {
        (
            r.entity.as_ref().map(|e| e.entity_id.clone()),
            r.feature.clone(),
        )
    };
    if list.iter().any(|r| id(r) == id(&item)) {
        return false;
    }
    list.push(item);
    let excess = list.len().saturating_sub(MAX_PARKED);
    list.drain(..excess);
    true
}

#[cfg(test)]
mod tests {
    use fstore_proto::api;

    use super::*;

    fn item(entity: &str, feature: &str) -> PartialRef {
        PartialRef {
            entity: Some(api::EntityRequest {
                entity_id: entity.into(),
                ..Default::default()
            }),
            feature: feature.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_reference_is_parked_once() {
        let mut list = Vec::new();
        assert!(add(&mut list, item("u1", "f@1")));
        assert!(!add(&mut list, item("u1", "f@1")));
        assert!(add(&mut list, item("u2", "f@1")));
        assert!(add(&mut list, item("u1", "g@1")));
        assert_eq!(list.len(), 3);
    }
}
