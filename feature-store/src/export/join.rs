//! The point-in-time ("as of") join: for each label row `(entity, t)` and each feature,
//! the READY value with the latest `computed_at <= t` — never a later one, so a model is
//! not trained on values its label could not have seen.
//!
//! The log is read once, in any order. Per entity, the label rows are sorted by time; a
//! record computed at `c` is offered to the rows at or after `c`. The best value of a row
//! only grows with its time (a later row has every candidate an earlier one has), so an
//! offer walks forward from the first row at or after `c` and stops at the first row that
//! already holds something as new: each record costs a binary search and the rows it
//! actually improves. Ties on `computed_at` go to the record appended last.

use std::collections::HashMap;
use std::sync::Arc;

use fstore_proto::api::{self, LogRecord, log_record::Kind};

/// A feature as the export asks for it: every version of a name, or one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub name: String,
    pub version: Option<u32>,
}

impl Selection {
    pub fn matches(&self, record: &LogRecord) -> bool {
        self.name == record.feature && self.version.is_none_or(|v| v == record.version)
    }
}

/// The value a label row gets for one feature.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOfValue {
    pub computed_at_ms: i64,
    pub version: u32,
    /// The log sequence of its record: the tie-break between equal times.
    pub sequence: u64,
    pub value: Arc<api::Value>,
}

impl AsOfValue {
    fn order(&self) -> (i64, u64) {
        (self.computed_at_ms, self.sequence)
    }
}

/// The join's state: the labels, and per (row, feature) the best value offered so far.
#[derive(Debug)]
pub struct AsOf {
    selections: Vec<Selection>,
    /// Per entity, its rows as (time, row), sorted by time.
    rows: HashMap<String, Vec<(i64, usize)>>,
    /// `rows × selections`, row-major.
    best: Vec<Option<AsOfValue>>,
    /// The latest label time: records after it cannot be chosen.
    until_ms: i64,
}

impl AsOf {
    /// A join of the label rows `(entities[i], times_ms[i])` with `selections`.
    pub fn new(entities: &[String], times_ms: &[i64], selections: Vec<Selection>) -> AsOf {
        let mut rows: HashMap<String, Vec<(i64, usize)>> = HashMap::new();
        for (row, (entity, &at)) in entities.iter().zip(times_ms).enumerate() {
            rows.entry(entity.clone()).or_default().push((at, row));
        }
        for r in rows.values_mut() {
            r.sort_unstable();
        }
        let best = vec![None; entities.len() * selections.len()];
        AsOf {
            selections,
            rows,
            best,
            until_ms: times_ms.iter().copied().max().unwrap_or(i64::MIN),
        }
    }

    /// The entities of the labels.
    pub fn entities(&self) -> impl Iterator<Item = &String> {
        self.rows.keys()
    }

    /// The latest label time, Unix ms.
    pub fn until_ms(&self) -> i64 {
        self.until_ms
    }

    /// Offers one log record to every label row it may answer.
    pub fn offer(&mut self, sequence: u64, record: &LogRecord) {
        if record.kind() != Kind::Value || record.status() != api::Status::Ready {
            return;
        }
        let (Some(value), Some(rows)) = (&record.value, self.rows.get(&record.entity_id)) else {
            return;
        };
        let c = record.computed_at_ms;
        let start = rows.partition_point(|(t, _)| *t < c);
        if start == rows.len() {
            return;
        }
        let n = self.selections.len();
        let mut shared: Option<Arc<api::Value>> = None;
        for (s, selection) in self.selections.iter().enumerate() {
            if !selection.matches(record) {
                continue;
            }
            for &(_, row) in &rows[start..] {
                let slot = &mut self.best[row * n + s];
                if slot.as_ref().is_some_and(|b| b.order() >= (c, sequence)) {
                    break;
                }
                let value = shared.get_or_insert_with(|| Arc::new(value.clone()));
                *slot = Some(AsOfValue {
                    computed_at_ms: c,
                    version: record.version,
                    sequence,
                    value: value.clone(),
                });
            }
        }
    }

    /// The value of label row `row` for selection `s` (None: nothing computed at or
    /// before the row's time).
    pub fn value(&self, row: usize, s: usize) -> Option<&AsOfValue> {
        self.best
            .get(row * self.selections.len() + s)
            .and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(entity: &str, feature: &str, version: u32, at: i64, x: f64) -> LogRecord {
        let mut r = LogRecord {
            entity_id: entity.into(),
            feature: feature.into(),
            version,
            computed_at_ms: at,
            value: Some(api::Value {
                kind: Some(api::value::Kind::F64(x)),
            }),
            ..Default::default()
        };
        r.set_kind(Kind::Value);
        r.set_status(api::Status::Ready);
        r
    }

    fn x(j: &AsOf, row: usize, s: usize) -> Option<f64> {
        j.value(row, s).and_then(|v| match v.value.kind {
            Some(api::value::Kind::F64(x)) => Some(x),
            _ => None,
        })
    }

    fn all(name: &str) -> Selection {
        Selection {
            name: name.into(),
            version: None,
        }
    }

    /// A hand-built history: `f` of u1 computed at 100 (1.0), 200 (2.0) and 300 (3.0),
    /// labels at 50, 150, 200, 250 and 299; the records arrive out of order.
    #[test]
    fn each_label_gets_the_latest_value_at_or_before_it_never_a_later_one() {
        let entities: Vec<String> = ["u1", "u1", "u1", "u1", "u1", "u2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let times = [50, 150, 200, 250, 299, 1_000];
        let mut j = AsOf::new(&entities, &times, vec![all("f")]);
        j.offer(3, &ready("u1", "f", 1, 300, 3.0));
        j.offer(1, &ready("u1", "f", 1, 100, 1.0));
        j.offer(2, &ready("u1", "f", 1, 200, 2.0));
        j.offer(4, &ready("u9", "f", 1, 100, 9.0));
        assert_eq!(x(&j, 0, 0), None, "nothing existed at 50");
        assert_eq!(x(&j, 1, 0), Some(1.0));
        assert_eq!(
            x(&j, 2, 0),
            Some(2.0),
            "computed exactly at the label time counts"
        );
        assert_eq!(x(&j, 3, 0), Some(2.0));
        assert_eq!(
            x(&j, 4, 0),
            Some(2.0),
            "the value of 300 is after 299: never chosen"
        );
        assert_eq!(x(&j, 5, 0), None, "u2 has no value at all");
        assert_eq!(j.value(2, 0).map(|v| v.computed_at_ms), Some(200));
    }

    #[test]
    fn failures_other_features_and_versions_are_not_chosen() {
        let entities = vec!["u1".to_string()];
        let mut j = AsOf::new(
            &entities,
            &[1_000],
            vec![
                all("f"),
                Selection {
                    name: "f".into(),
                    version: Some(1),
                },
            ],
        );
        j.offer(1, &ready("u1", "f", 1, 100, 1.0));
        j.offer(2, &ready("u1", "f", 2, 200, 2.0));
        let mut failed = ready("u1", "f", 2, 300, 0.0);
        failed.set_status(api::Status::Failed);
        j.offer(3, &failed);
        j.offer(4, &ready("u1", "g", 1, 400, 4.0));
        assert_eq!(
            x(&j, 0, 0),
            Some(2.0),
            "every version: the newest READY one"
        );
        assert_eq!(j.value(0, 0).map(|v| v.version), Some(2));
        assert_eq!(x(&j, 0, 1), Some(1.0), "f@1 only");
    }

    #[test]
    fn equal_times_go_to_the_record_appended_last() {
        let entities = vec!["u1".to_string(), "u1".to_string()];
        let mut j = AsOf::new(&entities, &[100, 200], vec![all("f")]);
        j.offer(5, &ready("u1", "f", 1, 100, 5.0));
        j.offer(4, &ready("u1", "f", 1, 100, 4.0));
        assert_eq!((x(&j, 0, 0), x(&j, 1, 0)), (Some(5.0), Some(5.0)));
        assert_eq!(j.until_ms(), 200);
    }
}
