//! Ready notifications: a cheap signal that a value key was written. The result store
//! stays the truth, so a lost notification only delays a waiter.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::Error;

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn publish(&self, key: &str) -> Result<(), Error>;
    /// Every notification published from now on (best effort: some may be lost).
    async fn subscribe(&self) -> Result<BoxStream<'static, String>, Error>;
}
