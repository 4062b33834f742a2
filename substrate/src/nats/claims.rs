//! Claims on the KV bucket `<prefix>_claims`. A claim is a key created with "expected
//! last sequence" of its current entry (0, or the revision of a delete marker) and a
//! TTL; its revision is the generation. Beside the claims, in the same bucket: the
//! requests that joined a compute (`joined.<key>.<generation>.<request id>`, one entry
//! each, listed by subject in one request) and the computes a cancelled ticket gave up
//! (`abandoned.<key>.<generation>`), which every process watches into memory so that a
//! worker checks each job without a round trip; and the computes whose jobs were
//! submitted (`submitted.<key>.<generation>`): a claim older than the orphan bound
//! without one is taken over (deleted by compare-and-set, then claimed again), so a
//! planner that died between claiming and submitting blocks its key for seconds.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::kv::{connected, mirror_watch, put_with_ttl};
use super::{Layout, unavailable};
use crate::task::Background;
use crate::token;
use crate::{Claim, ClaimStore, Error};

pub struct NatsClaims {
    js: jetstream::Context,
    layout: Layout,
    store: kv::Store,
    orphan_after: Duration,
    /// The abandoned keys the watch has seen, until their TTL.
    abandoned: Arc<moka::sync::Cache<String, ()>>,
}

impl NatsClaims {
    /// The claims over `store`; the watch of abandoned computes runs on `background`.
    pub(crate) async fn start(
        js: jetstream::Context,
        layout: Layout,
        store: kv::Store,
        ttl: Duration,
        orphan_after: Duration,
        background: &Background,
    ) -> Result<Self, Error> {
        let abandoned = Arc::new(
            moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
        );
        let watch = store
            .watch_with_history(layout.abandoned_filter())
            .await
            .map_err(unavailable)?;
        let seen = abandoned.clone();
        mirror_watch(background, "nats abandoned-claims watch", watch, move |e| {
            if e.operation == kv::Operation::Put {
                seen.insert(e.key, ());
            }
        });
        Ok(NatsClaims {
            js,
            layout,
            store,
            orphan_after,
            abandoned,
        })
    }

    /// Whether the claim `entry` was made past the orphan bound and its compute never
    /// marked submitted.
    async fn orphaned(&self, key: &str, entry: &kv::Entry) -> Result<bool, Error> {
        let age_ns = time_now_ns() - entry.created.unix_timestamp_nanos();
        if age_ns < self.orphan_after.as_nanos() as i128 {
            return Ok(false);
        }
        let marker = self
            .store
            .entry(self.layout.submitted_key(key, entry.revision))
            .await
            .map_err(unavailable)?;
        Ok(marker.is_none_or(|m| m.operation != kv::Operation::Put))
    }

    /// The requests that joined compute `generation` of `key`: the subjects of its
    /// `joined.<key>.<generation>.<holder>` entries, in one request.
    async fn holders(&self, key: &str, generation: u64) -> Result<Vec<String>, Error> {
        let prefix = self
            .layout
            .kv_subject(&self.store.name, &self.layout.joined_key(key, generation));
        let mut subjects = self
            .store
            .stream
            .info_with_subjects(format!("{prefix}.*"))
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(s) = subjects.next().await {
            let (subject, _) = s.map_err(unavailable)?;
            if let Some(holder) = subject
                .strip_prefix(&prefix)
                .and_then(|h| h.strip_prefix('.'))
            {
                out.push(holder.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl ClaimStore for NatsClaims {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<Claim, Error> {
        connected(&self.js)?;
        let mut entry = self.store.entry(key).await.map_err(unavailable)?;
        if let Some(e) = &entry
            && e.operation == kv::Operation::Put
            && self.orphaned(key, e).await?
        {
            // Its planner died before submitting: take it over, unless someone did.
            tracing::warn!(
                key,
                generation = e.revision,
                "taking over a claim whose compute was never submitted"
            );
            match self
                .store
                .delete_expect_revision(key, Some(e.revision))
                .await
            {
                Ok(()) | Err(_) => entry = self.store.entry(key).await.map_err(unavailable)?,
            }
        }
        let expect = match entry {
            Some(e) if e.operation == kv::Operation::Put => return Ok(Claim::Held(e.revision)),
            Some(e) => e.revision,
            None => 0,
        };
        match put_with_ttl(
            &self.js,
            &self.layout,
            &self.store,
            key,
            Bytes::from_static(b"1"),
            Some(ttl),
            Some(expect),
        )
        .await
        {
            Ok(generation) => Ok(Claim::Won(generation)),
            // Someone else won it meanwhile: join theirs (its generation is read back).
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                match self.store.entry(key).await.map_err(unavailable)? {
                    Some(e) if e.operation == kv::Operation::Put => Ok(Claim::Held(e.revision)),
                    _ => Ok(Claim::Held(0)),
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn submitted(&self, key: &str, generation: u64, ttl: Duration) -> Result<(), Error> {
        put_with_ttl(
            &self.js,
            &self.layout,
            &self.store,
            &self.layout.submitted_key(key, generation),
            Bytes::from_static(b"1"),
            Some(ttl),
            None,
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, key: &str, generation: u64) -> Result<(), Error> {
        // Only our own claim: a later generation's claim stays.
        match self
            .store
            .delete_expect_revision(key, Some(generation))
            .await
        {
            Ok(()) => Ok(()),
            // Another generation's claim is there now: it stays.
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn join(
        &self,
        key: &str,
        generation: u64,
        holder: &str,
        ttl: Duration,
    ) -> Result<(), Error> {
        // One entry per holder: joiners never race each other (request ids are tokens).
        let k = format!(
            "{}.{}",
            self.layout.joined_key(key, generation),
            token::encode(holder)
        );
        put_with_ttl(
            &self.js,
            &self.layout,
            &self.store,
            &k,
            Bytes::from_static(b"1"),
            Some(ttl),
            None,
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn joiners(&self, key: &str, generation: u64) -> Result<Vec<String>, Error> {
        self.holders(key, generation).await
    }

    async fn withdraw(
        &self,
        key: &str,
        generation: u64,
        holder: &str,
    ) -> Result<Vec<String>, Error> {
        // A stream purge, not a KV delete: no marker is left to be listed.
        let k = format!(
            "{}.{}",
            self.layout.joined_key(key, generation),
            token::encode(holder)
        );
        self.store
            .stream
            .purge()
            .filter(self.layout.kv_subject(&self.store.name, &k))
            .await
            .map_err(unavailable)?;
        self.holders(key, generation).await
    }

    async fn abandon(&self, key: &str, generation: u64, ttl: Duration) -> Result<(), Error> {
        let k = self.layout.abandoned_key(key, generation);
        put_with_ttl(
            &self.js,
            &self.layout,
            &self.store,
            &k,
            Bytes::from_static(b"1"),
            Some(ttl),
            None,
        )
        .await
        .map_err(unavailable)?;
        self.abandoned.insert(k, ());
        self.release(key, generation).await
    }

    fn is_abandoned(&self, key: &str, generation: u64) -> bool {
        self.abandoned
            .contains_key(&self.layout.abandoned_key(key, generation))
    }
}

/// Wall-clock now in Unix nanoseconds, as KV entry times are.
fn time_now_ns() -> i128 {
    i128::from(crate::time::now_ms()) * 1_000_000
}
