//! What the clients count: calls by kind and outcome, checked results, latencies, and the
//! first examples of each kind of problem.

use std::collections::{BTreeMap, HashSet};

use fstore_proto::api::{self, Status};
use fstore_tests::build::f64_of;
use hdrhistogram::Histogram;

use crate::features::expected;
use crate::load::Kind;

/// First few descriptions of one kind of problem.
#[derive(Debug, Default)]
pub(crate) struct Examples(pub(crate) Vec<String>);

impl Examples {
    pub(crate) fn add(&mut self, s: String) {
        if self.0.len() < 3 {
            self.0.push(s);
        }
    }

    pub(crate) fn merge(&mut self, other: Examples) {
        for s in other.0 {
            self.add(s);
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) sent: BTreeMap<Kind, u64>,
    /// Calls that reached a final state (READY/FAILED everywhere, or an answered Invalidate).
    pub(crate) done: u64,
    /// Calls answered pending and followed by polling their ticket.
    pub(crate) followed: u64,
    pub(crate) polls: u64,
    pub(crate) refused: BTreeMap<String, u64>,
    pub(crate) lost: u64,
    pub(crate) ready: u64,
    pub(crate) from_cache: u64,
    pub(crate) failed_expected: u64,
    pub(crate) failed_unexpected: u64,
    pub(crate) wrong: u64,
    /// First answer of every call, µs.
    pub(crate) call_us: Histogram<u64>,
    /// First answer of hits, µs.
    pub(crate) hit_us: Histogram<u64>,
    /// From sending to final, for calls that went pending, µs.
    pub(crate) final_us: Histogram<u64>,
    pub(crate) lost_examples: Examples,
    pub(crate) wrong_examples: Examples,
    pub(crate) refused_examples: Examples,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            sent: BTreeMap::new(),
            done: 0,
            followed: 0,
            polls: 0,
            refused: BTreeMap::new(),
            lost: 0,
            ready: 0,
            from_cache: 0,
            failed_expected: 0,
            failed_unexpected: 0,
            wrong: 0,
            call_us: histogram(),
            hit_us: histogram(),
            final_us: histogram(),
            lost_examples: Examples::default(),
            wrong_examples: Examples::default(),
            refused_examples: Examples::default(),
        }
    }

    pub(crate) fn merge(&mut self, o: Stats) {
        for (k, v) in o.sent {
            *self.sent.entry(k).or_default() += v;
        }
        for (k, v) in o.refused {
            *self.refused.entry(k).or_default() += v;
        }
        self.done += o.done;
        self.followed += o.followed;
        self.polls += o.polls;
        self.lost += o.lost;
        self.ready += o.ready;
        self.from_cache += o.from_cache;
        self.failed_expected += o.failed_expected;
        self.failed_unexpected += o.failed_unexpected;
        self.wrong += o.wrong;
        let _ = self.call_us.add(&o.call_us);
        let _ = self.hit_us.add(&o.hit_us);
        let _ = self.final_us.add(&o.final_us);
        self.lost_examples.merge(o.lost_examples);
        self.wrong_examples.merge(o.wrong_examples);
        self.refused_examples.merge(o.refused_examples);
    }

    pub(crate) fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    pub(crate) fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    pub(crate) fn refuse(&mut self, what: &str, s: &tonic::Status) {
        *self.refused.entry(format!("{:?}", s.code())).or_default() += 1;
        self.refused_examples
            .add(format!("{what}: {:?}: {}", s.code(), s.message()));
    }

    pub(crate) fn lose(&mut self, why: String) {
        self.lost += 1;
        self.lost_examples.add(why);
    }

    /// Counts the results of a final answer; false if any result is still pending.
    pub(crate) fn settle(
        &mut self,
        wanted: &HashSet<(String, String)>,
        r: &api::GetFeaturesResponse,
    ) {
        let mut seen = HashSet::new();
        for x in &r.results {
            seen.insert((x.entity_id.clone(), x.feature.clone()));
            let want = expected(&x.entity_id, &x.feature);
            match (x.status(), want) {
                (Status::Ready, Some(v)) if f64_of(x).is_some_and(|g| (g - v).abs() < 1e-3) => {
                    self.ready += 1;
                    if x.from_cache {
                        self.from_cache += 1;
                    }
                }
                (Status::Failed, None) => self.failed_expected += 1,
                (Status::Failed, Some(_)) => {
                    self.failed_unexpected += 1;
                    self.wrong_examples.add(format!(
                        "{} of {} FAILED: {}",
                        x.feature, x.entity_id, x.error
                    ));
                }
                (s, want) => {
                    self.wrong += 1;
                    self.wrong_examples.add(format!(
                        "{} of {}: {} {:?}, expected {want:?}",
                        x.feature,
                        x.entity_id,
                        s.as_str_name(),
                        f64_of(x)
                    ));
                }
            }
        }
        if seen != *wanted {
            self.wrong += 1;
            self.wrong_examples.add(format!(
                "answered {} distinct results, asked for {}",
                seen.len(),
                wanted.len()
            ));
        }
        self.done += 1;
    }
}
