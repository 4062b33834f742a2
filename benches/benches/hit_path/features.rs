//! The bench's features: `b.f000`.. answered from the value cache and the
//! snapshot-served `b.s000`.., registered, warmed and published before the cases run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fstore_proto::api::{self, feature_store_client::FeatureStoreClient};
use tonic::transport::Channel;

use super::{ENTITY, FEATURES};

/// Where a case's features are answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// The value cache (TTL), as computed on demand.
    Cached,
    /// The published generation in memory (`serving = "snapshot"`).
    Snapshot,
}

impl Serving {
    pub fn name(self) -> &'static str {
        match self {
            Serving::Cached => "cached",
            Serving::Snapshot => "snapshot",
        }
    }

    pub fn feature(self, i: usize) -> String {
        match self {
            Serving::Cached => feature_name(i),
            Serving::Snapshot => format!("b.s{i:03}"),
        }
    }
}

pub fn feature_name(i: usize) -> String {
    format!("b.f{i:03}")
}

/// Registers `b.f000`..`b.f249` and the snapshot-served `b.s000`..`b.s249` (probe
/// flow, no inputs, 1 h TTL).
pub async fn register(client: &mut FeatureStoreClient<Channel>) -> anyhow::Result<()> {
    for serving in [Serving::Cached, Serving::Snapshot] {
        for i in 0..FEATURES {
            let mut def = api::FeatureDefinition {
                name: serving.feature(i),
                entity_type: "item".into(),
                flow: "test.probe@1".into(),
                params: HashMap::from([("value".to_string(), i.to_string())]),
                ttl_ms: 3_600_000,
                ..Default::default()
            };
            if serving == Serving::Snapshot {
                def.set_serving(api::Serving::Snapshot);
            }
            client
                .register_feature(api::RegisterFeatureRequest {
                    definition: Some(def),
                    force: false,
                })
                .await
                .with_context(|| format!("registering {}", serving.feature(i)))?;
        }
    }
    Ok(())
}

/// Publishes a generation of every snapshot-served feature for the bench entity: a
/// staged backfill, through the gate.
pub async fn publish(client: &mut FeatureStoreClient<Channel>) -> anyhow::Result<()> {
    let start = api::StartBackfillRequest {
        features: (0..FEATURES)
            .map(|i| Serving::Snapshot.feature(i))
            .collect(),
        entities: vec![api::EntityRequest {
            entity_id: ENTITY.into(),
            ..Default::default()
        }],
        stage: true,
        ..Default::default()
    };
    let b = client
        .start_backfill(futures::stream::iter([start]))
        .await?
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client
            .get_publish_status(api::GetPublishStatusRequest {
                feature: Serving::Snapshot.feature(FEATURES - 1),
            })
            .await?
            .into_inner();
        if status.features.first().is_some_and(|f| f.published > 0) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "backfill {} did not publish within 60 s",
            b.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Computes every feature for the bench entity and waits until all are READY.
pub async fn warm(client: &mut FeatureStoreClient<Channel>) -> anyhow::Result<()> {
    let request = api::GetFeaturesRequest {
        entities: vec![api::EntityRequest {
            entity_id: ENTITY.into(),
            ..Default::default()
        }],
        features: (0..FEATURES).map(feature_name).collect(),
        mode: api::Mode::Sync as i32,
        wait_ms: 10_000,
        ..Default::default()
    };
    for _ in 0..10 {
        let r = client.get_features(request.clone()).await?.into_inner();
        let ready = r
            .results
            .iter()
            .filter(|r| r.status() == api::Status::Ready)
            .count();
        if r.results.len() == FEATURES && ready == FEATURES {
            return Ok(());
        }
        if let Some(bad) = r.results.iter().find(|r| r.status() == api::Status::Failed) {
            bail!("warming: {} failed: {}", bad.feature, bad.error);
        }
    }
    bail!("warming: the features were not all READY after 10 SYNC calls")
}
