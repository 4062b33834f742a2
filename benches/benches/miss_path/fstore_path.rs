//! The fstore path: a store on the bench's nats-server, a SYNC GetFeatures for a new
//! entity per call, and the sizes of the job and value messages it sends.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fstore_benches::{Call, channels};
use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use fstore_substrate::Error as SubstrateError;
use fstore_substrate::log::{FeatureLog, LogQuery, LogStream};
use futures::StreamExt;
use tonic::transport::Channel;

use crate::measure::Fresh;
use crate::settings::Settings;

pub(crate) const FEATURE: &str = "bench.miss";
pub(crate) const TENANT: &str = "bench";

/// Used when fstore's message sizes cannot be observed.
pub(crate) const FALLBACK_JOB_BYTES: usize = 160;
pub(crate) const FALLBACK_VALUE_BYTES: usize = 100;

/// One SYNC GetFeatures for a new entity: must answer READY, computed for this call.
#[derive(Debug, Clone)]
pub(crate) struct FstoreMiss {
    pub(crate) client: FeatureStoreClient<Channel>,
    pub(crate) ids: Fresh,
    pub(crate) wait_ms: u64,
}

impl FstoreMiss {
    pub(crate) fn request(&self, entity: String) -> api::GetFeaturesRequest {
        api::GetFeaturesRequest {
            entities: vec![api::EntityRequest {
                entity_id: entity,
                ..Default::default()
            }],
            features: vec![FEATURE.to_string()],
            mode: api::Mode::Sync as i32,
            wait_ms: self.wait_ms,
            ..Default::default()
        }
    }
}

impl Call for FstoreMiss {
    async fn call(&mut self) -> Result<(), String> {
        let request = self.request(self.ids.next());
        let r = self
            .client
            .get_features(request)
            .await
            .map_err(|s| format!("GetFeatures: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        match r.results.as_slice() {
            [one]
                if one.status() == api::Status::Ready && !one.from_cache && r.ticket.is_empty() =>
            {
                Ok(())
            }
            [one] => Err(format!(
                "answered {} (from_cache {}, error {:?}, ticket {:?})",
                one.status().as_str_name(),
                one.from_cache,
                one.error,
                r.ticket
            )),
            many => Err(format!("{} results, expected 1", many.len())),
        }
    }
}

/// The encoded sizes of fstore's job and value messages, seen by subscribing to their
/// subjects during one miss.
pub(crate) async fn observe_sizes(
    observer: &async_nats::Client,
    call: &mut FstoreMiss,
) -> anyhow::Result<(usize, usize)> {
    let mut jobs = observer.subscribe("fstore.jobs.>").await?;
    let mut values = observer.subscribe("$KV.fstore_values.>").await?;
    observer.flush().await?;
    call.call()
        .await
        .map_err(|e| anyhow::anyhow!("the sizing call failed: {e}"))?;
    let job = first_len(&mut jobs).await.unwrap_or(FALLBACK_JOB_BYTES);
    let value = first_len(&mut values).await.unwrap_or(FALLBACK_VALUE_BYTES);
    jobs.unsubscribe().await?;
    values.unsubscribe().await?;
    Ok((job, value))
}

/// The payload length of the next message on `sub`, if one comes within 2 s.
pub(crate) async fn first_len(sub: &mut async_nats::Subscriber) -> Option<usize> {
    tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .ok()
        .flatten()
        .map(|m| m.payload.len())
}

pub(crate) struct FstoreSide {
    pub(crate) running: fstore::server::Running,
    pub(crate) callers: Vec<FstoreMiss>,
    pub(crate) job_bytes: usize,
    pub(crate) value_bytes: usize,
}

/// Whether the store writes its feature log: `Off` measures what the log costs, with a
/// log that keeps nothing in place of the JetStream one (the product always logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Log {
    On,
    Off,
}

/// A feature log that keeps nothing: the baseline of the log's cost.
struct Unlogged;

#[async_trait::async_trait]
impl FeatureLog for Unlogged {
    async fn append(&self, _id: &str, _record: api::LogRecord) -> Result<u64, SubstrateError> {
        Ok(0)
    }

    async fn read(&self, _query: LogQuery) -> Result<LogStream, SubstrateError> {
        Ok(futures::stream::empty().boxed())
    }
}

pub(crate) async fn start_fstore(s: &Settings, url: &str, log: Log) -> anyhow::Result<FstoreSide> {
    let mut config = fstore_tests::test_config();
    config.server.default_tenant = Some(TENANT.into());
    config.server.recheck_interval = Duration::from_millis(100);
    config.worker.slots = s.slots;
    config.worker.max_wait = s.batch_wait;
    config.limits.max_wait = config.limits.max_wait.max(Duration::from_millis(s.wait_ms));
    config.nats.url = Some(url.to_string());
    let mut substrate = fstore::server::substrate(&config).await?;
    if log == Log::Off {
        substrate.log = Arc::new(Unlogged);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = fstore::server::start(
        config,
        substrate,
        fstore_flows::Catalog::builtins(),
        listener,
    )
    .await?;
    let chans = channels(&running.url(), s.channels).await?;
    let mut admin = FeatureStoreClient::new(chans[0].clone());
    admin
        .register_feature(api::RegisterFeatureRequest {
            definition: Some(fstore_tests::build::feature(
                FEATURE,
                "test.probe@1",
                &[("value", "1")],
                &[],
                3_600_000,
            )),
            force: false,
        })
        .await
        .context("registering the bench feature")?;
    let ids = Fresh::new("e");
    let callers: Vec<FstoreMiss> = chans
        .into_iter()
        .map(|ch| FstoreMiss {
            client: FeatureStoreClient::new(ch),
            ids: ids.clone(),
            wait_ms: s.wait_ms,
        })
        .collect();
    let observer = async_nats::connect(url).await?;
    let (job_bytes, value_bytes) = observe_sizes(&observer, &mut callers[0].clone()).await?;
    drop(observer);
    Ok(FstoreSide {
        running,
        callers,
        job_bytes,
        value_bytes,
    })
}
