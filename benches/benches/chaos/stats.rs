//! What the chaos clients count: calls by kind and how they ended, results checked
//! against the reference, errors retried, and the first examples of each problem.

use std::collections::BTreeMap;

use crate::load::Kind;

/// First few descriptions of one kind of problem.
#[derive(Debug, Default)]
pub(crate) struct Examples(pub(crate) Vec<String>);

impl Examples {
    pub(crate) fn add(&mut self, s: String) {
        if self.0.len() < 5 {
            self.0.push(s);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) sent: BTreeMap<Kind, u64>,
    pub(crate) done: BTreeMap<Kind, u64>,
    /// Accepted and not final within the bound, or a ticket that vanished.
    pub(crate) lost: u64,
    /// Refused (or unanswered) on every try until the bound.
    pub(crate) never_accepted: u64,
    /// Errors seen and retried, by code.
    pub(crate) retried: BTreeMap<String, u64>,
    /// Tickets some replica answered NOT_FOUND while they were being followed.
    pub(crate) ticket_not_found: u64,
    /// Answered with an error a retry cannot help (a call the store should have taken).
    pub(crate) refused: u64,
    pub(crate) ready: u64,
    pub(crate) failed_expected: u64,
    pub(crate) failed_unexpected: u64,
    pub(crate) wrong: u64,
    /// READY values of `chaos.ver`: (tenant, version, value), checked at the end.
    pub(crate) ver_seen: Vec<(usize, u32, f64)>,
    pub(crate) lost_examples: Examples,
    pub(crate) wrong_examples: Examples,
}

impl Stats {
    pub(crate) fn merge(&mut self, o: Stats) {
        for (k, v) in o.sent {
            *self.sent.entry(k).or_default() += v;
        }
        for (k, v) in o.done {
            *self.done.entry(k).or_default() += v;
        }
        for (k, v) in o.retried {
            *self.retried.entry(k).or_default() += v;
        }
        self.lost += o.lost;
        self.never_accepted += o.never_accepted;
        self.ticket_not_found += o.ticket_not_found;
        self.refused += o.refused;
        self.ready += o.ready;
        self.failed_expected += o.failed_expected;
        self.failed_unexpected += o.failed_unexpected;
        self.wrong += o.wrong;
        self.ver_seen.extend(o.ver_seen);
        for e in o.lost_examples.0 {
            self.lost_examples.add(e);
        }
        for e in o.wrong_examples.0 {
            self.wrong_examples.add(e);
        }
    }
}
