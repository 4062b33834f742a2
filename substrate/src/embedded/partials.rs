//! The embedded enrichment index, in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use fstore_proto::wire::PartialRef;

use super::store::lock;
use crate::Error;
use crate::partials::{PartialIndex, add};

#[derive(Default)]
pub struct EmbeddedPartials {
    parked: Mutex<HashMap<(String, String), Vec<PartialRef>>>,
}

#[async_trait]
impl PartialIndex for EmbeddedPartials {
    async fn park(&self, tenant: &str, entity: &str, item: PartialRef) -> Result<(), Error> {
        let mut parked = lock(&self.parked);
        add(
            parked
                .entry((tenant.to_string(), entity.to_string()))
                .or_default(),
            item,
        );
        Ok(())
    }

    async fn take(&self, tenant: &str, entity: &str) -> Result<Vec<PartialRef>, Error> {
        Ok(lock(&self.parked)
            .remove(&(tenant.to_string(), entity.to_string()))
            .unwrap_or_default())
    }

    async fn list(&self) -> Result<Vec<(String, PartialRef)>, Error> {
        Ok(lock(&self.parked)
            .iter()
            .flat_map(|((tenant, _), refs)| refs.iter().map(|r| (tenant.clone(), r.clone())))
            .collect())
    }
}
