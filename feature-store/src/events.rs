//! The feature log as callers read it: `SubscribeEvents` (the result-ready stream, live,
//! from a cursor) and `ReadLog` (a time range, what exports read), each checked once and
//! turned into one [`LogQuery`] of the tenant's records.

use std::collections::HashSet;
use std::pin::Pin;

use fstore_proto::api;
use fstore_substrate::log::FeatureFilter;
use fstore_substrate::{LogQuery, Start, Substrate};
use futures::{Stream, StreamExt};

use crate::names::{FeatureRef, check_entity_id};
use crate::registry::Snapshot;
use crate::{Error, Result};

/// Log events as the service streams them.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<api::LogEvent>> + Send>>;

/// The features asked for: each must be registered (a version, if named, too).
fn features(names: &[String], snapshot: &Snapshot) -> Result<Vec<FeatureFilter>> {
    names
        .iter()
        .map(|n| {
            let r = FeatureRef::parse(n)?;
            snapshot.resolve(&r)?;
            Ok(FeatureFilter {
                name: r.name,
                version: r.version,
            })
        })
        .collect()
}

fn entities(ids: &[String]) -> Result<HashSet<String>> {
    ids.iter()
        .map(|id| check_entity_id(id).map(|()| id.clone()))
        .collect()
}

/// A live subscription: after `after_sequence`, or from now on without one.
pub fn subscription(
    tenant: String,
    req: &api::SubscribeEventsRequest,
    snapshot: &Snapshot,
) -> Result<LogQuery> {
    Ok(LogQuery {
        tenant,
        features: features(&req.features, snapshot)?,
        entities: entities(&req.entity_ids)?,
        include_inputs: req.include_inputs,
        start: req.after_sequence.map_or(Start::Now, Start::After),
        follow: true,
        until_ms: 0,
    })
}

/// A bounded read of `[from_ms, to_ms)`; an open end reads up to the log's end now.
pub fn range(
    tenant: String,
    req: &api::ReadLogRequest,
    snapshot: &Snapshot,
    now_ms: i64,
) -> Result<LogQuery> {
    if req.from_ms < 0 || req.to_ms < 0 {
        return Err(Error::InvalidArgument(format!(
            "from_ms {} and to_ms {} must be Unix milliseconds (0: unbounded)",
            req.from_ms, req.to_ms
        )));
    }
    if req.to_ms != 0 && req.to_ms <= req.from_ms {
        return Err(Error::InvalidArgument(format!(
            "the time range is backwards or empty: to_ms {} is not after from_ms {}; swap them",
            req.to_ms, req.from_ms
        )));
    }
    if req.from_ms > now_ms {
        return Err(Error::InvalidArgument(format!(
            "from_ms {} is in the future (now is {now_ms}): the log has nothing there yet",
            req.from_ms
        )));
    }
    Ok(LogQuery {
        tenant,
        features: features(&req.features, snapshot)?,
        entities: entities(&req.entity_ids)?,
        include_inputs: req.include_inputs,
        start: if req.from_ms == 0 {
            Start::After(0)
        } else {
            Start::Time(req.from_ms)
        },
        follow: false,
        until_ms: req.to_ms,
    })
}

/// The events `query` selects.
pub async fn read(substrate: &Substrate, query: LogQuery) -> Result<EventStream> {
    let events = substrate.log.read(query).await?;
    Ok(Box::pin(events.map(|e| e.map_err(Error::from))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_that_cannot_hold_anything_are_refused() {
        let snapshot = Snapshot::default();
        let req = |from_ms, to_ms| api::ReadLogRequest {
            from_ms,
            to_ms,
            ..Default::default()
        };
        let m = |r: Result<LogQuery>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(m(range("t".into(), &req(200, 100), &snapshot, 1_000)).contains("backwards"));
        assert!(m(range("t".into(), &req(100, 100), &snapshot, 1_000)).contains("backwards"));
        assert!(m(range("t".into(), &req(-1, 0), &snapshot, 1_000)).contains("Unix milliseconds"));
        assert!(m(range("t".into(), &req(5_000, 0), &snapshot, 1_000)).contains("future"));
        let q = range("t".into(), &req(0, 500), &snapshot, 1_000).expect("a range");
        assert_eq!(
            (q.start, q.until_ms, q.follow),
            (Start::After(0), 500, false)
        );
        let unknown = api::ReadLogRequest {
            features: vec!["nope".into()],
            ..Default::default()
        };
        assert!(
            m(range("t".into(), &unknown, &snapshot, 1_000)).contains("no feature named `nope`")
        );
    }

    #[test]
    fn a_subscription_without_a_cursor_starts_now() {
        let snapshot = Snapshot::default();
        let q = subscription("t".into(), &Default::default(), &snapshot).expect("query");
        assert_eq!(q.start, Start::Now);
        let q = subscription(
            "t".into(),
            &api::SubscribeEventsRequest {
                after_sequence: Some(7),
                ..Default::default()
            },
            &snapshot,
        )
        .expect("query");
        assert_eq!(q.start, Start::After(7));
    }
}
