//! The flow directory on KV: `<prefix>_flows` keeps the spec of every flow ever
//! advertised; `<prefix>_workers` keeps one heartbeat per (flow, worker) with a TTL of
//! three heartbeats, so live workers are the keys that exist.
//!
//! The specs are also mirrored into memory by a watch: a listing of the bucket that a
//! stalled or lagging node cuts short still names every flow this process has seen, so
//! a known flow never reads as unknown (a registration using it would be refused).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use fstore_flows::{FlowSpec, ModelInfo};
use futures::StreamExt;

use super::{Layout, unavailable};
use crate::store::{Advert, FlowEntry};
use crate::task::Background;
use crate::{Error, FlowDirectory};

/// Flow specs by their key in the flows bucket.
type Specs = Arc<RwLock<HashMap<String, FlowSpec>>>;

/// Leader reads of a listing in flight at once.
const LEADER_READS: usize = 16;

/// A worker's heartbeat for one flow, the value of its key in the workers bucket.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    model: Option<ModelInfo>,
    slots: u32,
}

impl Heartbeat {
    /// A heartbeat as this version writes it, or as earlier ones did (the model alone:
    /// `null` or its info), so a rolling upgrade lists every live worker.
    fn parse(bytes: &[u8]) -> Heartbeat {
        if let Ok(beat) = serde_json::from_slice::<Heartbeat>(bytes) {
            return beat;
        }
        Heartbeat {
            model: serde_json::from_slice::<Option<ModelInfo>>(bytes).unwrap_or_default(),
            slots: 0,
        }
    }
}

pub struct NatsDirectory {
    js: jetstream::Context,
    layout: Layout,
    flows: kv::Store,
    workers: kv::Store,
    heartbeat: Duration,
    known: Specs,
}

impl NatsDirectory {
    /// Mirrors the flows bucket into memory; the watch runs on `background` until the
    /// backend closes.
    pub(crate) async fn start(
        js: jetstream::Context,
        layout: Layout,
        flows: kv::Store,
        workers: kv::Store,
        heartbeat: Duration,
        background: &Background,
    ) -> Result<Self, Error> {
        let known: Specs = Arc::default();
        let watch = flows
            .watch_all_from_revision(1)
            .await
            .map_err(unavailable)?;
        let mirror = known.clone();
        super::kv::mirror_watch(background, "nats flow watch", watch, move |e| {
            if e.operation == kv::Operation::Put
                && let Ok(spec) = serde_json::from_slice::<FlowSpec>(&e.value)
            {
                let mut map = mirror.write().unwrap_or_else(|p| p.into_inner());
                map.insert(e.key, spec);
            }
        });
        Ok(NatsDirectory {
            js,
            layout,
            flows,
            workers,
            heartbeat,
            known,
        })
    }

    /// Every spec in the bucket, read from its leader, over those seen already: a
    /// listing cut short by a stalled node loses none; one that fails outright
    /// answers what was seen, if anything.
    async fn specs(&self) -> Result<HashMap<String, FlowSpec>, Error> {
        let mut specs = self.known.read().unwrap_or_else(|p| p.into_inner()).clone();
        match self.listed_specs().await {
            Ok(listed) => specs.extend(listed),
            Err(e) if specs.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "listing the flows failed; answering the flows seen so far")
            }
        }
        Ok(specs)
    }

    async fn listed_specs(&self) -> Result<Vec<(String, FlowSpec)>, Error> {
        let mut keys = self.flows.keys().await.map_err(unavailable)?;
        let mut found = Vec::new();
        while let Some(k) = keys.next().await {
            found.push(k.map_err(unavailable)?);
        }
        let mut out = Vec::new();
        for k in found {
            // From the leader: a lagging replica may not have the key yet.
            let Some((bytes, _)) = super::kv::leader_entry(&self.flows, &k).await? else {
                continue;
            };
            let spec: FlowSpec =
                serde_json::from_slice(&bytes).map_err(|e| Error::Codec(e.to_string()))?;
            out.push((k, spec));
        }
        Ok(out)
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
            self.known
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.layout.flow_key(&flow), spec.clone());
            let key = self.layout.worker_key(&flow, worker_id);
            let beat = Heartbeat {
                model: advert.model.clone(),
                slots: advert.slots,
            };
            let beat = serde_json::to_vec(&beat).map_err(|e| Error::Codec(e.to_string()))?;
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
                    beat.into(),
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
        let mut keys = self.workers.keys().await.map_err(unavailable)?;
        let mut worker_keys = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            if let Some((flow, worker)) = self.layout.parse_worker_key(&k) {
                worker_keys.push((k, flow, worker));
            }
        }
        // Each read from the leader (a lagging replica may not have the key yet), a
        // few at a time.
        let beats: Vec<_> = futures::stream::iter(worker_keys)
            .map(|(k, flow, worker)| async move {
                let entry = super::kv::leader_entry(&self.workers, &k).await?;
                Ok::<_, Error>(entry.map(|(bytes, _)| (flow, worker, Heartbeat::parse(&bytes))))
            })
            .buffer_unordered(LEADER_READS)
            .collect()
            .await;
        let mut live: HashMap<String, (u32, u32)> = HashMap::new();
        let mut models: HashMap<String, Vec<(String, ModelInfo)>> = HashMap::new();
        for beat in beats {
            let Some((flow, worker, beat)) = beat? else {
                continue;
            };
            let (workers, slots) = live.entry(flow.clone()).or_default();
            *workers += 1;
            *slots += beat.slots;
            if let Some(model) = beat.model {
                models.entry(flow).or_default().push((worker, model));
            }
        }
        let mut out: Vec<FlowEntry> = self
            .specs()
            .await?
            .into_iter()
            .map(|(k, spec)| {
                let (live_workers, slots) = live.get(&k).copied().unwrap_or_default();
                FlowEntry {
                    spec,
                    live_workers,
                    slots,
                    models: models.remove(&k).unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_of_this_version_and_of_earlier_ones_parse() {
        let model = ModelInfo {
            name: "all-MiniLM-L6-v2".into(),
            loaded: true,
            ..ModelInfo::default()
        };
        let now = Heartbeat {
            model: Some(model.clone()),
            slots: 3,
        };
        let bytes = serde_json::to_vec(&now).expect("json");
        assert_eq!(Heartbeat::parse(&bytes), now);
        // Earlier workers wrote the model alone.
        let old = serde_json::to_vec(&Some(model.clone())).expect("json");
        assert_eq!(
            Heartbeat::parse(&old),
            Heartbeat {
                model: Some(model),
                slots: 0
            }
        );
        assert_eq!(Heartbeat::parse(b"null"), Heartbeat::default());
        assert_eq!(Heartbeat::parse(b"garbage"), Heartbeat::default());
    }
}
