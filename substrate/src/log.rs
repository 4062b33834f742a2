//! The feature log: every settled compute (a value READY or FAILED) and every stored set
//! of request-time inputs, appended once, durably, before the job that produced it is
//! acked. It is the offline half of the store — training exports read it — and the
//! result-ready event stream: a record's place in the log (its sequence) is the cursor a
//! subscriber resumes from.
//!
//! Two backends: a JetStream stream (`nats/log.rs`) and a directory of append-only
//! segment files (`embedded/log.rs`). Both de-duplicate an append by id (a redelivered
//! job settles again under the same id), both read from a sequence or a time, and both
//! follow the log live.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use fstore_proto::api::{self, LogEvent, LogRecord, log_record::Kind};
use fstore_proto::wire::job_input::Source;
use futures::stream::BoxStream;

use crate::{ComputeJob, Error, ValueEnvelope};

/// Where the log lives and how long it keeps records.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The embedded log's directory; None keeps it in memory. (NATS: the stream.)
    pub dir: Option<PathBuf>,
    /// Records older than this are dropped (zero: kept regardless of age).
    pub max_age: Duration,
    /// The log's size bound: the oldest records go first.
    pub max_bytes: u64,
    /// The embedded log's segment size: retention drops whole segments.
    pub segment_bytes: u64,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Records after this sequence (0: from the oldest kept).
    After(u64),
    /// Records appended at or after this time, Unix ms.
    Time(i64),
    /// Only records appended from now on.
    Now,
}

/// A feature the query selects: a name, and a version or every version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFilter {
    pub name: String,
    pub version: Option<u32>,
}

/// What to read from the log.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub tenant: String,
    /// Empty: every feature.
    pub features: Vec<FeatureFilter>,
    /// Empty: every entity.
    pub entities: HashSet<String>,
    /// INPUTS records too.
    pub include_inputs: bool,
    pub start: Start,
    /// Keep reading records as they are appended; otherwise end at the record that was
    /// last when the read started.
    pub follow: bool,
    /// End before records of this time, Unix ms (0: no bound). Only for reads that do
    /// not follow.
    pub until_ms: i64,
}

impl LogQuery {
    /// Whether `record` is one this query asks for.
    pub fn matches(&self, record: &LogRecord) -> bool {
        if record.tenant != self.tenant {
            return false;
        }
        if !self.entities.is_empty() && !self.entities.contains(&record.entity_id) {
            return false;
        }
        let time_ok = match self.start {
            Start::Time(from) => record.computed_at_ms >= from,
            _ => true,
        } && (self.until_ms <= 0 || record.computed_at_ms < self.until_ms);
        if !time_ok {
            return false;
        }
        match record.kind() {
            Kind::Inputs => self.include_inputs,
            Kind::Value => {
                self.features.is_empty()
                    || self.features.iter().any(|f| {
                        f.name == record.feature && f.version.is_none_or(|v| v == record.version)
                    })
            }
            Kind::Unspecified => false,
        }
    }
}

/// Log events as a read yields them, oldest first.
pub type LogStream = BoxStream<'static, Result<LogEvent, Error>>;

/// The durable, append-only log of settled computes and stored inputs.
#[async_trait]
pub trait FeatureLog: Send + Sync + 'static {
    /// Appends `record` and returns its sequence. Appending again under an `id` the log
    /// has seen within its de-duplication window appends nothing and returns 0.
    async fn append(&self, id: &str, record: LogRecord) -> Result<u64, Error>;
    /// The records `query` selects, oldest first. A start after the log's last record,
    /// or before its oldest kept one, is an [`Error::Cursor`].
    async fn read(&self, query: LogQuery) -> Result<LogStream, Error>;
}

/// The record of a settled job: its identity, the envelope stored for it, the request
/// inputs it read and the requests it answered (`tickets`: the submitters in the job and
/// the callers that joined its claim).
pub fn value_record(job: &ComputeJob, envelope: &ValueEnvelope, joined: Vec<String>) -> LogRecord {
    let mut tickets = job.tickets.clone();
    for t in &joined {
        crate::store::add_once(&mut tickets, t);
    }
    let mut record = LogRecord {
        kind: Kind::Value.into(),
        tenant: job.tenant.clone(),
        entity_id: job.entity_id.clone(),
        feature: job.feature.clone(),
        version: job.feature_version,
        lineage_hash: job.lineage_hash.clone(),
        value_key: job.value_key.clone(),
        value: envelope.value.clone(),
        error: envelope.error.clone(),
        attempts: envelope.attempts,
        computed_at_ms: envelope.computed_at_ms,
        planned_at_ms: envelope.planned_at_ms,
        tickets,
        coverage: envelope.coverage.clone(),
        ..Default::default()
    };
    record.set_status(if envelope.error.is_empty() {
        api::Status::Ready
    } else {
        api::Status::Failed
    });
    for input in &job.inputs {
        match &input.source {
            Some(Source::Value(v)) if !input.request_input.is_empty() => {
                record.inputs.insert(input.request_input.clone(), v.clone());
            }
            Some(Source::ValueKey(key)) => {
                record.dependencies.insert(input.name.clone(), key.clone());
            }
            _ if !input.key.is_empty() => {
                record
                    .dependencies
                    .insert(input.name.clone(), input.key.clone());
            }
            _ => {}
        }
    }
    record
}

/// The de-duplication id of a job's record: one record per compute (key, generation).
pub fn record_id(job: &ComputeJob) -> String {
    format!("log.{}.{}", job.value_key, job.generation)
}

#[cfg(test)]
mod tests {
    use fstore_proto::api::{Value, value};
    use fstore_proto::wire::JobInput;

    use super::*;

    fn f64(x: f64) -> Value {
        Value {
            kind: Some(value::Kind::F64(x)),
        }
    }

    #[test]
    fn a_record_keeps_request_inputs_and_dependency_keys_apart() {
        let job = ComputeJob {
            value_key: "k".into(),
            tenant: "t".into(),
            feature: "f".into(),
            feature_version: 2,
            tickets: vec!["a".into()],
            inputs: vec![
                JobInput {
                    name: "x".into(),
                    source: Some(Source::Value(f64(1.0))),
                    request_input: "setting".into(),
                    key: String::new(),
                    ..Default::default()
                },
                JobInput {
                    name: "dep".into(),
                    source: Some(Source::Value(f64(2.0))),
                    request_input: String::new(),
                    key: "dk".into(),
                    ..Default::default()
                },
                JobInput {
                    name: "later".into(),
                    source: Some(Source::ValueKey("lk".into())),
                    request_input: String::new(),
                    key: String::new(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let env = ValueEnvelope {
            value: Some(f64(3.0)),
            computed_at_ms: 10,
            attempts: 1,
            ..Default::default()
        };
        let r = value_record(&job, &env, vec!["b".into(), "a".into()]);
        assert_eq!(r.status(), api::Status::Ready);
        assert_eq!(r.inputs.get("setting"), Some(&f64(1.0)));
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.dependencies.get("dep").map(String::as_str), Some("dk"));
        assert_eq!(r.dependencies.get("later").map(String::as_str), Some("lk"));
        assert_eq!(r.tickets, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn queries_select_by_tenant_feature_version_entity_and_time() {
        let rec = |tenant: &str, feature: &str, version, entity: &str, at| {
            let mut r = LogRecord {
                tenant: tenant.into(),
                feature: feature.into(),
                version,
                entity_id: entity.into(),
                computed_at_ms: at,
                ..Default::default()
            };
            r.set_kind(Kind::Value);
            r
        };
        let q = LogQuery {
            tenant: "t".into(),
            features: vec![FeatureFilter {
                name: "f".into(),
                version: Some(2),
            }],
            entities: HashSet::from(["e".to_string()]),
            include_inputs: false,
            start: Start::Time(100),
            follow: false,
            until_ms: 200,
        };
        assert!(q.matches(&rec("t", "f", 2, "e", 150)));
        assert!(!q.matches(&rec("u", "f", 2, "e", 150)), "another tenant");
        assert!(!q.matches(&rec("t", "f", 1, "e", 150)), "another version");
        assert!(!q.matches(&rec("t", "g", 2, "e", 150)), "another feature");
        assert!(!q.matches(&rec("t", "f", 2, "x", 150)), "another entity");
        assert!(!q.matches(&rec("t", "f", 2, "e", 99)), "before the range");
        assert!(
            !q.matches(&rec("t", "f", 2, "e", 200)),
            "the range's end is open"
        );
        let mut inputs = rec("t", "", 0, "e", 150);
        inputs.set_kind(Kind::Inputs);
        assert!(!q.matches(&inputs), "inputs only when asked for");
        assert!(
            LogQuery {
                include_inputs: true,
                ..q
            }
            .matches(&inputs)
        );
    }
}
