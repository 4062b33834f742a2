//! The verbs of the `fstore` binary, one module per group, and [`Store`]: the calls the
//! client verbs make.

pub mod client;
pub mod demo;
pub mod dlq;
pub mod flow;
pub mod run;

use fstore::client::Client;
use fstore_proto::api;
use tonic::Status;
use tonic::codec::Streaming;

/// The feature store as the verbs see it: one method per call, each with the tenant
/// header, answering the server's message or the status it sent, unchanged.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
}

impl Store {
    pub async fn connect(
        addr: &str,
        tenant: Option<String>,
    ) -> Result<Store, fstore::client::Error> {
        Ok(Store {
            client: Client::connect(addr, tenant).await?,
        })
    }

    pub async fn register_file(
        &mut self,
        text: &str,
    ) -> Result<Vec<api::RegisterFeatureResponse>, fstore::client::Error> {
        self.client.register_file(text).await
    }

    pub async fn get_features(
        &self,
        req: api::GetFeaturesRequest,
    ) -> Result<api::GetFeaturesResponse, Status> {
        let c = &self.client;
        Ok(c.raw().get_features(c.request(req)).await?.into_inner())
    }

    pub async fn get_ticket(&self, ticket: String) -> Result<api::GetFeaturesResponse, Status> {
        let c = &self.client;
        let req = c.request(api::GetTicketRequest { ticket });
        Ok(c.raw().get_ticket(req).await?.into_inner())
    }

    pub async fn watch_features(
        &self,
        req: api::WatchFeaturesRequest,
    ) -> Result<Streaming<api::WatchEvent>, Status> {
        let c = &self.client;
        Ok(c.raw().watch_features(c.request(req)).await?.into_inner())
    }

    pub async fn describe_feature(
        &self,
        feature: String,
    ) -> Result<api::DescribeFeatureResponse, Status> {
        let c = &self.client;
        let req = c.request(api::DescribeFeatureRequest { feature });
        Ok(c.raw().describe_feature(req).await?.into_inner())
    }

    pub async fn list_features(&self, prefix: String) -> Result<api::ListFeaturesResponse, Status> {
        let c = &self.client;
        let req = c.request(api::ListFeaturesRequest { prefix });
        Ok(c.raw().list_features(req).await?.into_inner())
    }

    pub async fn list_flows(&self) -> Result<api::ListFlowsResponse, Status> {
        let c = &self.client;
        let req = c.request(api::ListFlowsRequest {});
        Ok(c.raw().list_flows(req).await?.into_inner())
    }

    /// Invalidates a feature for one entity, or for all when `entity_id` is empty.
    pub async fn invalidate(
        &self,
        feature: String,
        entity_id: String,
    ) -> Result<api::InvalidateResponse, Status> {
        let c = &self.client;
        let req = c.request(api::InvalidateRequest { feature, entity_id });
        Ok(c.raw().invalidate(req).await?.into_inner())
    }

    pub async fn list_dead_letters(
        &self,
        limit: u32,
    ) -> Result<api::ListDeadLettersResponse, Status> {
        let c = &self.client;
        let req = c.request(api::ListDeadLettersRequest { limit });
        Ok(c.raw().list_dead_letters(req).await?.into_inner())
    }

    pub async fn replay_dead_letter(
        &self,
        id: String,
    ) -> Result<api::ReplayDeadLetterResponse, Status> {
        let c = &self.client;
        let req = c.request(api::ReplayDeadLetterRequest { id });
        Ok(c.raw().replay_dead_letter(req).await?.into_inner())
    }

    /// Drops one dead letter, or all of the tenant's when `id` is empty.
    pub async fn purge_dead_letters(
        &self,
        id: String,
    ) -> Result<api::PurgeDeadLettersResponse, Status> {
        let c = &self.client;
        let req = c.request(api::PurgeDeadLettersRequest { id });
        Ok(c.raw().purge_dead_letters(req).await?.into_inner())
    }
}
