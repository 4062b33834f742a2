//! The enrichment index on KV: one list per missing entity under
//! `<tenant>.<entity hash>` in `<prefix>_partials`, replaced by compare-and-set; taking
//! it reads it from the leader and deletes that revision (at least once: a reference is
//! never lost, and at worst planned twice).

use async_nats::jetstream::kv;
use async_trait::async_trait;
use fstore_proto::wire::{PartialList, PartialRef};
use futures::StreamExt;
use prost::Message;

use super::{Layout, unavailable};
use crate::Error;
use crate::partials::{PartialIndex, add};

/// Tries of a compare-and-set before giving up.
const TRIES: usize = 16;

pub struct NatsPartials {
    layout: Layout,
    store: kv::Store,
}

impl NatsPartials {
    pub(crate) fn new(layout: Layout, store: kv::Store) -> Self {
        NatsPartials { layout, store }
    }
}

#[async_trait]
impl PartialIndex for NatsPartials {
    async fn park(&self, tenant: &str, entity: &str, item: PartialRef) -> Result<(), Error> {
        let key = self.layout.partials_key(tenant, entity);
        for _ in 0..TRIES {
            let entry = self.store.entry(&key).await.map_err(unavailable)?;
            let (mut list, revision) = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    (PartialList::decode(e.value)?.refs, Some(e.revision))
                }
                _ => (Vec::new(), None),
            };
            if !add(&mut list, item.clone()) {
                return Ok(());
            }
            let bytes = PartialList { refs: list }.encode_to_vec().into();
            let written = match revision {
                Some(r) => self.store.update(&key, bytes, r).await.is_ok(),
                None => self.store.create(&key, bytes).await.is_ok(),
            };
            if written {
                return Ok(());
            }
        }
        Err(Error::Unavailable(format!(
            "too much contention parking a reference to `{entity}`"
        )))
    }

    async fn take(&self, tenant: &str, entity: &str) -> Result<Vec<PartialRef>, Error> {
        let key = self.layout.partials_key(tenant, entity);
        // Every list read, kept across tries: a delete that landed with its answer lost,
        // then a park that made the key anew, must not drop the first list.
        let mut taken = Vec::new();
        for _ in 0..TRIES {
            // From the leader: a lagging replica may not have the latest reference.
            let Some((bytes, revision)) = super::kv::leader_entry(&self.store, &key).await? else {
                return Ok(taken);
            };
            if !bytes.is_empty() {
                for r in PartialList::decode(bytes)?.refs {
                    add(&mut taken, r);
                }
            }
            // Only the list read: a reference parked meanwhile is not deleted unseen.
            let deleted = self
                .store
                .delete_expect_revision(&key, Some(revision))
                .await;
            let Err(e) = deleted else {
                return Ok(taken);
            };
            match super::kv::leader_entry(&self.store, &key).await {
                // Parked meanwhile (or made anew): take that list too.
                Ok(Some((_, now))) if now != revision => continue,
                // Deleted with its answer lost, or not deleted: the references are
                // handed over either way; left parked, the sweep plans them again
                // (planning twice computes once).
                _ => {
                    tracing::warn!(error = %e, key, "deleting taken references failed; the sweep may plan them again");
                    return Ok(taken);
                }
            }
        }
        Err(Error::Unavailable(format!(
            "too much contention taking the references to `{entity}`"
        )))
    }

    async fn list(&self) -> Result<Vec<(String, PartialRef)>, Error> {
        let mut keys = self.store.keys().await.map_err(unavailable)?;
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            found.push(key.map_err(unavailable)?);
        }
        let mut out = Vec::new();
        for key in found {
            let Some((tenant, _)) = key.split_once('.') else {
                continue;
            };
            let tenant = crate::token::decode(tenant).unwrap_or_else(|| tenant.to_string());
            if let Some(bytes) = self.store.get(&key).await.map_err(unavailable)?
                && !bytes.is_empty()
            {
                for r in PartialList::decode(bytes)?.refs {
                    out.push((tenant.clone(), r));
                }
            }
        }
        Ok(out)
    }
}
