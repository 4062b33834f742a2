//! API keys as stored: per key its public id, tenant, roles and the SHA-256 of the
//! whole key, never the key itself. Shared by every replica (on NATS through a bucket,
//! embedded in memory), so a key created or revoked on one is seen by all.

use async_trait::async_trait;
use fstore_proto::wire::ApiKeyRecord;

use crate::Error;

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores `record` under its id, replacing what was there (a revocation).
    async fn put(&self, record: ApiKeyRecord) -> Result<(), Error>;
    /// The record of key `id`, if one was ever stored.
    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>, Error>;
    /// Every stored record (revoked ones included), in no particular order.
    async fn list(&self) -> Result<Vec<ApiKeyRecord>, Error>;
}
