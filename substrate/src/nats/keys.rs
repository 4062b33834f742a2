//! API key records on KV: `<prefix>_keys`, keyed by the key's public id, never
//! expiring (a revoked key stays listed as revoked).

use async_nats::jetstream::kv;
use async_trait::async_trait;
use fstore_proto::wire::ApiKeyRecord;
use prost::Message;

use super::unavailable;
use crate::Error;
use crate::keys::KeyStore;

pub struct NatsKeys {
    store: kv::Store,
}

impl NatsKeys {
    pub(crate) fn new(store: kv::Store) -> Self {
        NatsKeys { store }
    }
}

#[async_trait]
impl KeyStore for NatsKeys {
    async fn put(&self, record: ApiKeyRecord) -> Result<(), Error> {
        let id = record
            .key
            .as_ref()
            .map(|k| k.id.clone())
            .unwrap_or_default();
        // Ids are generated hex; anything else never reaches a subject.
        let id = crate::token::encode(&id);
        self.store
            .put(&id, record.encode_to_vec().into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>, Error> {
        let key = crate::token::encode(id);
        match self.store.get(&key).await.map_err(unavailable)? {
            Some(bytes) if !bytes.is_empty() => Ok(Some(ApiKeyRecord::decode(bytes)?)),
            _ => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<ApiKeyRecord>, Error> {
        super::kv::decode_all(&self.store).await
    }
}
