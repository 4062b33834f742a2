//! Refresh-ahead: a value read when less than `cache.refresh_ahead` of its TTL is left
//! is recomputed on the batch lane before it expires, through the same claim as any
//! compute (one refresh per key, however many replicas read it), off the call's path.

use std::sync::Arc;

use fstore_proto::api;
use fstore_substrate::task::spawn_named;
use fstore_substrate::time::now_ms;
use fstore_substrate::{ComputeJob, Lane, ValueEnvelope};

use super::job::{job, job_inputs};
use super::{Claimed, NodeStates, Planner};
use crate::keys::ValueKey;
use crate::registry::Node;
use crate::request::ValidRequest;

/// Keys remembered as sent for refresh before the expired ones are swept.
const REFRESHING_MAX: usize = 10_000;

impl Planner {
    /// Whether a value just read is close enough to expiry (less than
    /// `cache.refresh_ahead` of its TTL left) to be recomputed now, and this replica has
    /// not already sent it to be.
    pub(super) fn due_for_refresh(
        &self,
        node: &Node,
        env: &ValueEnvelope,
        key: &ValueKey,
        now: i64,
    ) -> bool {
        let share = self.options.refresh_ahead;
        if share <= 0.0 || (env.expires_at_ms - now) as f64 >= share * node.ttl_ms as f64 {
            return false;
        }
        let mut sent = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        if sent.get(key.as_str()) == Some(&env.expires_at_ms) {
            return false;
        }
        if sent.len() >= REFRESHING_MAX {
            sent.retain(|_, expires| *expires > now);
        }
        sent.insert(key.to_string(), env.expires_at_ms);
        true
    }

    /// Refresh-ahead: recomputes a value that callers still read before it expires, on
    /// the batch lane, through the same claim (so one refresh per key, however many
    /// replicas read it). Off the call's path: the caller has its answer already.
    pub(super) fn refresh(
        &self,
        request: &ValidRequest,
        entity: &api::EntityRequest,
        node: &Arc<Node>,
        key: &ValueKey,
        states: &NodeStates,
        (watermark, now): (i64, i64),
    ) {
        let Ok(Ok(inputs)) = job_inputs(entity, node, states, &[]) else {
            return; // an input failed or went missing: the value expires as it would
        };
        let template = ComputeJob {
            lane: Lane::Batch as i32,
            ..job(request, entity, node, key, inputs, now)
        };
        let planner = self.clone();
        let key = key.clone();
        let window = (self.options.refresh_ahead * node.ttl_ms as f64) as i64;
        spawn_named(&self.tasks, "refresh-ahead", async move {
            // Another replica may have refreshed it already: then there is nothing to do.
            let recheck = async || {
                let fresh = planner
                    .substrate
                    .results
                    .get(key.as_str(), watermark)
                    .await?
                    .filter(|env| env.expires_at_ms - now_ms() > window);
                Ok(fresh.map(|_| ()))
            };
            let job = |generation| ComputeJob {
                generation,
                ..template
            };
            match planner.claim_and_submit(&key, recheck, job).await {
                Ok(Claimed::Submitted(..)) => {
                    fstore_substrate::metrics::global().refreshes.inc();
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(key = %key, error = %e, "refresh-ahead not sent"),
            }
        });
    }
}
