//! A feature request checked once: [`ValidRequest`] is built from a `GetFeaturesRequest`
//! (or a stored ticket) and everything downstream — the planner, tickets, the follower —
//! takes it as proof that names are well formed, limits hold, features resolve to exact
//! versions, every request input a node reads is present and typed right, and staleness
//! and wait bounds are in range.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fstore_proto::api;
use fstore_substrate::{InputStore, Lane};
use prost::Message;

use crate::config::Limits;
use crate::names::{FeatureRef, check_entity_id, check_name, truncate};
use crate::registry::{Node, NodeInput, Snapshot};
use crate::{Error, Result};

/// The longest staleness bound or TTL anyone may write, in ms (100 years). Larger
/// numbers would overflow time arithmetic, and mean "forever" anyway.
pub const MAX_DURATION_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// One requested feature.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// As the caller wrote it.
    pub(crate) requested: String,
    pub(crate) node: Arc<Node>,
    /// A value planned before this is not fresh enough.
    pub(crate) min_planned_at_ms: i64,
}

/// How the caller wants the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At once, with a ticket for what is pending.
    Async,
    /// Wait for the values up to a deadline.
    Sync,
}

/// A request that passed every check; built only by [`ValidRequest::new`] and
/// [`ValidRequest::from_ticket`] (its fields are the crate's alone).
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// The request's id: its ticket's id if it gets one. A UUID v7, so the time it was
    /// issued can be read back from it.
    pub(crate) id: String,
    /// Whose features and values: the caller's own, or those of the tenant that shared
    /// them with the caller.
    pub(crate) tenant: String,
    /// The tenant that asked: the ticket is its.
    pub(crate) caller: String,
    pub(crate) entities: Vec<api::EntityRequest>,
    pub(crate) features: Vec<Wanted>,
    /// Per feature name, for dependencies named in the request's staleness map.
    pub(crate) dependency_min_planned_at_ms: HashMap<String, i64>,
    pub(crate) allow_stale: bool,
    pub(crate) mode: Mode,
    /// When the call (or the ticket's first call) started.
    pub(crate) started_at_ms: i64,
    /// A call of its own, not a ticket read back: its first plan records the computes
    /// of others it joins.
    pub(crate) first_call: bool,
    /// The lane its computes wait in: interactive for calls, batch for backfills.
    pub(crate) lane: Lane,
    /// Snapshot-served features are answered from the published generation in memory
    /// (calls); a backfill computes them (it stages what comes next).
    pub(crate) from_snapshots: bool,
}

impl ValidRequest {
    /// Checks `req` against the limits and the registry as of `snapshot`. Request
    /// inputs the call did not send are looked up among the inputs stored for the
    /// entity (PutInputs) in `stored` before they are checked.
    pub async fn new(
        tenant: String,
        req: &api::GetFeaturesRequest,
        snapshot: &Snapshot,
        limits: &Limits,
        now_ms: i64,
        stored: &dyn InputStore,
    ) -> Result<Self> {
        let mode = match api::Mode::try_from(req.mode) {
            Ok(api::Mode::Async) => Mode::Async,
            Ok(api::Mode::Sync) => Mode::Sync,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "mode {} is unknown: use ASYNC (0) or SYNC (1)",
                    req.mode
                )));
            }
        };
        check_shape(req, limits)?;
        // check_shape bounded every staleness by MAX_DURATION_MS, far from i64's ends.
        let min_for = |staleness: Option<u64>| staleness.map_or(0, |s| now_ms - s as i64);
        let mut features = Vec::with_capacity(req.features.len());
        for f in &req.features {
            let r = FeatureRef::parse(f)?;
            let node = snapshot.resolve(&r)?;
            let staleness = req
                .max_staleness_ms_by_feature
                .get(f)
                .or_else(|| req.max_staleness_ms_by_feature.get(&r.name))
                .copied()
                .or(req.max_staleness_ms);
            features.push(Wanted {
                requested: f.clone(),
                node,
                min_planned_at_ms: min_for(staleness),
            });
        }
        let mut dependency_min = HashMap::new();
        for (name, staleness) in &req.max_staleness_ms_by_feature {
            let r = FeatureRef::parse(name)?;
            snapshot.resolve(&r)?;
            dependency_min.insert(r.name, min_for(Some(*staleness)));
        }
        let mut valid = ValidRequest {
            id: uuid::Uuid::now_v7().simple().to_string(),
            caller: tenant.clone(),
            tenant,
            entities: req.entities.clone(),
            features,
            dependency_min_planned_at_ms: dependency_min,
            allow_stale: req.allow_stale,
            mode,
            started_at_ms: now_ms,
            first_call: true,
            lane: Lane::Interactive,
            from_snapshots: true,
        };
        valid.complete_inputs(stored).await?;
        valid.check_inputs()?;
        Ok(valid)
    }

    /// Fills the request inputs an entity lacks from those stored for it; what the call
    /// sent wins. Reads the store only for entities that lack one.
    async fn complete_inputs(&mut self, stored: &dyn InputStore) -> Result<()> {
        let mut needed = BTreeSet::new();
        for w in &self.features {
            for n in w.node.upstream.iter().chain(std::iter::once(&w.node)) {
                for i in &n.inputs {
                    if let NodeInput::Request { name, .. } = i {
                        needed.insert(name.as_str());
                    }
                }
            }
        }
        for e in &mut self.entities {
            if needed.iter().all(|n| e.inputs.contains_key(*n)) {
                continue;
            }
            let Some(found) = stored.get(&self.tenant, &e.entity_id).await? else {
                continue;
            };
            for (name, value) in found.inputs {
                if needed.contains(name.as_str()) {
                    e.inputs.entry(name).or_insert(value);
                }
            }
        }
        Ok(())
    }

    /// The request a stored ticket holds, resolved against the registry as it is now. The
    /// inputs are checked again: a dependency that floats to a new version may read
    /// request inputs the first call did not send.
    pub fn from_ticket(ticket: fstore_proto::wire::Ticket, snapshot: &Snapshot) -> Result<Self> {
        let features = ticket
            .features
            .iter()
            .map(|f| {
                Ok(Wanted {
                    requested: f.requested.clone(),
                    node: snapshot.resolve(&FeatureRef {
                        name: f.name.clone(),
                        version: Some(f.version),
                    })?,
                    min_planned_at_ms: f.min_planned_at_ms,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let valid = ValidRequest {
            id: ticket.id,
            caller: if ticket.caller.is_empty() {
                ticket.tenant.clone()
            } else {
                ticket.caller
            },
            tenant: ticket.tenant,
            entities: ticket.entities,
            features,
            dependency_min_planned_at_ms: HashMap::new(),
            allow_stale: ticket.allow_stale,
            mode: Mode::Async,
            started_at_ms: ticket.created_at_ms,
            first_call: false,
            lane: Lane::Interactive,
            from_snapshots: true,
        };
        valid.check_inputs()?;
        Ok(valid)
    }

    /// Every request input a requested feature, or anything upstream of it, reads is
    /// present for every entity and of the type the flow takes.
    fn check_inputs(&self) -> Result<()> {
        for e in &self.entities {
            for w in &self.features {
                for n in w.node.upstream.iter().chain(std::iter::once(&w.node)) {
                    for i in &n.inputs {
                        if let NodeInput::Request {
                            name, value_type, ..
                        } = i
                        {
                            let v = e.inputs.get(name).ok_or_else(|| {
                                Error::InvalidArgument(format!(
                                    "feature `{}` needs request input `{name}` ({value_type}) for entity `{}`",
                                    n.id,
                                    truncate(&e.entity_id, 80)
                                ))
                            })?;
                            if fstore_substrate::convert::wire_type(v) != Some(*value_type) {
                                return Err(Error::InvalidArgument(format!(
                                    "request input `{name}` of entity `{}` must be a {value_type} value (feature `{}`)",
                                    truncate(&e.entity_id, 80),
                                    n.id
                                )));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Counts, names and sizes, before anything is resolved.
fn check_shape(req: &api::GetFeaturesRequest, limits: &Limits) -> Result<()> {
    if req.entities.is_empty() {
        return Err(Error::InvalidArgument(
            "no entities: send at least one entity id".into(),
        ));
    }
    if req.features.is_empty() {
        return Err(Error::InvalidArgument(
            "no features: name at least one feature".into(),
        ));
    }
    if req.entities.len() > limits.max_entities {
        return Err(Error::InvalidArgument(format!(
            "{} entities is more than the limit of {} per call (limits.max_entities); split the request",
            req.entities.len(),
            limits.max_entities
        )));
    }
    if req.features.len() > limits.max_features {
        return Err(Error::InvalidArgument(format!(
            "{} features is more than the limit of {} per call (limits.max_features); split the request",
            req.features.len(),
            limits.max_features
        )));
    }
    let items = req.entities.len() * req.features.len();
    if items > limits.max_items {
        return Err(Error::InvalidArgument(format!(
            "{items} entity × feature pairs is more than the limit of {} per call (limits.max_items); split the request",
            limits.max_items
        )));
    }
    let stalenesses = req
        .max_staleness_ms
        .iter()
        .map(|s| ("max_staleness_ms", s))
        .chain(
            req.max_staleness_ms_by_feature
                .values()
                .map(|s| ("max_staleness_ms_by_feature", s)),
        );
    for (what, s) in stalenesses {
        if *s > MAX_DURATION_MS {
            return Err(Error::InvalidArgument(format!(
                "{what} is {s} ms, more than the limit of {MAX_DURATION_MS} ms (100 years); \
                 leave it unset to accept values of any age"
            )));
        }
    }
    for e in &req.entities {
        check_entity_id(&e.entity_id)?;
        let mut bytes = 0;
        for (name, value) in &e.inputs {
            check_name("request input", name)?;
            bytes += name.len() + value.encoded_len();
        }
        if bytes > limits.max_input_bytes {
            return Err(Error::InvalidArgument(format!(
                "request inputs of entity `{}` are {bytes} bytes, more than the limit of {} (limits.max_input_bytes)",
                truncate(&e.entity_id, 80),
                limits.max_input_bytes
            )));
        }
    }
    Ok(())
}

/// How long a call may wait: its own bound (`wait_ms`, 0 for the default), the server's
/// cap and the gRPC deadline, whichever is first.
pub fn wait_bound(limits: &Limits, wait_ms: u64, grpc_deadline: Option<Duration>) -> Duration {
    let asked = if wait_ms == 0 {
        limits.default_wait
    } else {
        Duration::from_millis(wait_ms)
    };
    let mut bound = asked.min(limits.max_wait);
    if let Some(deadline) = grpc_deadline {
        // Leave room to send the answer before the caller gives up.
        bound = bound.min(deadline.saturating_sub(Duration::from_millis(20)));
    }
    bound
}

#[cfg(test)]
mod tests {
    use fstore_substrate::embedded::EmbeddedInputs;

    use super::*;

    fn request(mode: i32, staleness: Option<u64>) -> api::GetFeaturesRequest {
        api::GetFeaturesRequest {
            entities: vec![api::EntityRequest {
                entity_id: "e".into(),
                inputs: Default::default(),
            }],
            features: vec!["f".into()],
            mode,
            max_staleness_ms: staleness,
            ..Default::default()
        }
    }

    fn message(r: Result<ValidRequest>) -> String {
        match r {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn unknown_mode_is_refused() {
        let snapshot = Snapshot::default();
        let m = message(
            ValidRequest::new(
                "t".into(),
                &request(99, None),
                &snapshot,
                &Limits::default(),
                1_000,
                &EmbeddedInputs::default(),
            )
            .await,
        );
        assert!(m.contains("mode 99 is unknown"), "{m}");
    }

    #[tokio::test]
    async fn huge_staleness_is_refused_not_overflowed() {
        let snapshot = Snapshot::default();
        let m = message(
            ValidRequest::new(
                "t".into(),
                &request(0, Some(1 << 63)),
                &snapshot,
                &Limits::default(),
                1_000,
                &EmbeddedInputs::default(),
            )
            .await,
        );
        assert!(
            m.contains("max_staleness_ms is 9223372036854775808 ms"),
            "{m}"
        );
        let mut r = request(0, None);
        r.max_staleness_ms_by_feature.insert("f".into(), u64::MAX);
        let m = message(
            ValidRequest::new(
                "t".into(),
                &r,
                &snapshot,
                &Limits::default(),
                1_000,
                &EmbeddedInputs::default(),
            )
            .await,
        );
        assert!(m.contains("max_staleness_ms_by_feature is"), "{m}");
        // At the bound it is accepted (and fails later only because `f` is unknown).
        let m = message(
            ValidRequest::new(
                "t".into(),
                &request(0, Some(MAX_DURATION_MS)),
                &snapshot,
                &Limits::default(),
                1_000,
                &EmbeddedInputs::default(),
            )
            .await,
        );
        assert!(m.contains("no feature named `f`"), "{m}");
    }

    #[test]
    fn wait_is_bounded_three_ways() {
        let limits = Limits::default();
        assert_eq!(wait_bound(&limits, 0, None), limits.default_wait);
        assert_eq!(wait_bound(&limits, u64::MAX, None), limits.max_wait);
        assert_eq!(
            wait_bound(&limits, 10_000, Some(Duration::from_millis(120))),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn limits_name_themselves() {
        let mut r = request(0, None);
        r.entities = (0..3)
            .map(|i| api::EntityRequest {
                entity_id: format!("e{i}"),
                inputs: Default::default(),
            })
            .collect();
        let limits = Limits {
            max_entities: 2,
            ..Limits::default()
        };
        let m = match check_shape(&r, &limits) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        assert!(
            m.contains("the limit of 2 per call (limits.max_entities)"),
            "{m}"
        );
    }
}
