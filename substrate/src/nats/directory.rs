//! The flow directory on KV: `<prefix>_flows` keeps the spec of every flow ever
//! advertised; `<prefix>_workers` keeps one heartbeat per (flow, worker) with a TTL of
//! three heartbeats, so live workers are the keys that exist.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use fstore_flows::{FlowSpec, ModelInfo};
use futures::StreamExt;

use super::{Layout, unavailable};
use crate::store::{Advert, FlowEntry};
use crate::{Error, FlowDirectory};

pub struct NatsDirectory {
    js: jetstream::Context,
    layout: Layout,
    flows: kv::Store,
    workers: kv::Store,
    heartbeat: Duration,
}

impl NatsDirectory {
    pub(crate) fn new(
        js: jetstream::Context,
        layout: Layout,
        flows: kv::Store,
        workers: kv::Store,
        heartbeat: Duration,
    ) -> Self {
        NatsDirectory {
            js,
            layout,
            flows,
            workers,
            heartbeat,
        }
    }
}

#[async_trait]
impl FlowDirectory for NatsDirectory {
    async fn advertise(&self, worker_id: &str, adverts: &[Advert]) -> Result<(), Error> {
        for advert in adverts {
            let spec = &advert.spec;
            let flow = spec.id.to_string();
            let json = serde_json::to_vec(spec).map_err(|e| Error::Codec(e.to_string()))?;
            self.flows
                .put(self.layout.flow_key(&flow), json.into())
                .await
                .map_err(unavailable)?;
            let key = self.layout.worker_key(&flow, worker_id);
            let model =
                serde_json::to_vec(&advert.model).map_err(|e| Error::Codec(e.to_string()))?;
            let mut h = async_nats::HeaderMap::new();
            let ttl = super::kv::ttl_secs(self.heartbeat * 3);
            h.insert(
                async_nats::header::NATS_MESSAGE_TTL,
                ttl.to_string().as_str(),
            );
            self.js
                .publish_with_headers(
                    self.layout.kv_subject(&self.workers.name, &key),
                    h,
                    model.into(),
                )
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn withdraw(&self, worker_id: &str) -> Result<(), Error> {
        let mut keys = self.workers.keys().await.map_err(unavailable)?;
        let mut mine = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            if self.layout.is_key_of_worker(&k, worker_id) {
                mine.push(k);
            }
        }
        for k in mine {
            self.workers.purge(&k).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<FlowEntry>, Error> {
        let mut live: HashMap<String, u32> = HashMap::new();
        let mut models: HashMap<String, Vec<(String, ModelInfo)>> = HashMap::new();
        let mut keys = self.workers.keys().await.map_err(unavailable)?;
        let mut worker_keys = Vec::new();
        while let Some(k) = keys.next().await {
            worker_keys.push(k.map_err(unavailable)?);
        }
        for k in worker_keys {
            let Some((flow, worker)) = self.layout.parse_worker_key(&k) else {
                continue;
            };
            // Read from the leader: a lagging replica may not have the key yet.
            let Some((bytes, _)) = super::kv::leader_entry(&self.workers, &k).await? else {
                continue;
            };
            *live.entry(flow.clone()).or_default() += 1;
            if let Ok(Some(model)) = serde_json::from_slice::<Option<ModelInfo>>(&bytes) {
                models.entry(flow).or_default().push((worker, model));
            }
        }
        let mut out = Vec::new();
        let mut flows = self.flows.keys().await.map_err(unavailable)?;
        while let Some(k) = flows.next().await {
            let k = k.map_err(unavailable)?;
            // From the leader: a flow skipped on a lagging replica's answer would read
            // as unknown, and a definition using it be refused.
            let Some((bytes, _)) = super::kv::leader_entry(&self.flows, &k).await? else {
                continue;
            };
            let spec: FlowSpec =
                serde_json::from_slice(&bytes).map_err(|e| Error::Codec(e.to_string()))?;
            out.push(FlowEntry {
                spec,
                live_workers: live.get(&k).copied().unwrap_or(0),
                models: models.remove(&k).unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(out)
    }
}
