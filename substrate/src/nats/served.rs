//! What each serve replica served, on KV `<prefix>_served`: one key per (tenant,
//! replica), `<tenant>.<replica>`, each put with a TTL of a few reporting intervals, so
//! the live reports are the keys that exist.
//!
//! Listing them costs a consumer on the bucket's stream (the KV key listing), which
//! NATS keeps for a while after the listing; a caller that asks in a loop (DescribeFeature
//! retried every few ms) would pile them up to the server's consumer limit. A tenant's
//! listing is therefore reused for [`FRESH`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use fstore_proto::wire::ServedReport;
use futures::StreamExt;
use prost::Message as _;

use super::{Layout, unavailable};
use crate::{Error, ServedReports, token};

/// How long a tenant's listing of the reports is reused: reports are put every few
/// seconds, so a second-old listing is as good as a new one.
const FRESH: Duration = Duration::from_secs(1);

type Listing = Vec<(String, ServedReport)>;

pub struct NatsServed {
    js: jetstream::Context,
    layout: Layout,
    bucket: kv::Store,
    /// Each tenant's last listing and when it was read.
    recent: Mutex<HashMap<String, (Instant, Listing)>>,
}

impl NatsServed {
    pub(crate) fn new(js: jetstream::Context, layout: Layout, bucket: kv::Store) -> Self {
        NatsServed {
            js,
            layout,
            bucket,
            recent: Mutex::new(HashMap::new()),
        }
    }

    fn fresh(&self, tenant: &str) -> Option<Listing> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, listing)| listing.clone())
    }

    /// Every live report of `tenant`, read from the bucket.
    async fn read(&self, tenant: &str) -> Result<Listing, Error> {
        let prefix = format!("{}.", token::encode(tenant));
        let mut keys = self.bucket.keys().await.map_err(unavailable)?;
        let mut mine = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            if let Some(replica) = k.strip_prefix(&prefix).and_then(token::decode) {
                mine.push((k, replica));
            }
        }
        let mut out = Vec::with_capacity(mine.len());
        for (key, replica) in mine {
            // Expired between the listing and the read: gone, not an error.
            if let Some(bytes) = self.bucket.get(&key).await.map_err(unavailable)? {
                let report = ServedReport::decode(bytes.as_ref())
                    .map_err(|e| Error::Codec(format!("served report `{key}`: {e}")))?;
                out.push((replica, report));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ServedReports for NatsServed {
    async fn put(
        &self,
        tenant: &str,
        replica: &str,
        report: &ServedReport,
        ttl: Duration,
    ) -> Result<(), Error> {
        let key = format!("{}.{}", token::encode(tenant), token::encode(replica));
        let mut h = async_nats::HeaderMap::new();
        let ttl = super::kv::ttl_secs(ttl);
        h.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            ttl.to_string().as_str(),
        );
        self.js
            .publish_with_headers(
                self.layout.kv_subject(&self.bucket.name, &key),
                h,
                report.encode_to_vec().into(),
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list(&self, tenant: &str) -> Result<Vec<(String, ServedReport)>, Error> {
        if let Some(listing) = self.fresh(tenant) {
            return Ok(listing);
        }
        let listing = self.read(tenant).await?;
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string(), (Instant::now(), listing.clone()));
        Ok(listing)
    }
}
