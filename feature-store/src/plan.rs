//! What planning a request answers: its results in request order, how each node's
//! state was come by ([`Origin`]), the keys still pending, and the computes it claimed
//! and joined.

use fstore_proto::api::{FeatureResult, Status};
use fstore_proto::wire::ClaimRef;

use crate::keys::ValueKey;

/// How a plan came by a node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Found in the result store (a value or a failure).
    Stored,
    /// This plan claimed the key and submitted its compute (a miss).
    Computed,
    /// Another caller's compute of the key was already running: this plan joined it.
    Joined,
    /// Answered from the published generation held in memory (snapshot serving).
    Published,
}

/// The results of a plan, in request order (entity-major), how each was come by, and the
/// keys still pending.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub results: Vec<FeatureResult>,
    /// One per result.
    pub origins: Vec<Origin>,
    pub pending_keys: Vec<ValueKey>,
    /// Every compute (of the requested features and their dependencies) this plan
    /// claimed, and those of others it joined: what cancelling its ticket gives up.
    pub claimed: Vec<ClaimRef>,
    pub joined: Vec<ClaimRef>,
    /// Some requested node cannot be submitted until values it reads are known (a
    /// related input): only a later plan submits it.
    pub awaiting: bool,
}

impl Plan {
    pub fn is_pending(&self) -> bool {
        !self.pending_keys.is_empty()
    }

    /// Marks the READY results that this call's first plan (its `origins`) found stored as
    /// from cache: "stored before this call planned it" is what the first look-up saw,
    /// which a millisecond clock cannot tell when a value was computed the moment the
    /// call started.
    pub fn mark_cached(&mut self, first: &[Origin]) {
        for (r, origin) in self.results.iter_mut().zip(first) {
            if matches!(origin, Origin::Stored | Origin::Published) && r.status() == Status::Ready {
                r.from_cache = true;
            }
        }
    }
}
