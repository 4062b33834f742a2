//! The embedded key store: API key records in memory, by id.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use fstore_proto::wire::ApiKeyRecord;

use super::store::lock;
use crate::Error;
use crate::keys::KeyStore;

#[derive(Default)]
pub struct EmbeddedKeys {
    records: Mutex<HashMap<String, ApiKeyRecord>>,
}

fn id(record: &ApiKeyRecord) -> String {
    record
        .key
        .as_ref()
        .map(|k| k.id.clone())
        .unwrap_or_default()
}

#[async_trait]
impl KeyStore for EmbeddedKeys {
    async fn put(&self, record: ApiKeyRecord) -> Result<(), Error> {
        lock(&self.records).insert(id(&record), record);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>, Error> {
        Ok(lock(&self.records).get(id).cloned())
    }

    async fn list(&self) -> Result<Vec<ApiKeyRecord>, Error> {
        Ok(lock(&self.records).values().cloned().collect())
    }
}
