//! What this replica served, per tenant and feature version: the operator's staleness view in
//! DescribeFeature and `fstore describe`. Each call counts once: a hit is a value found
//! stored, a miss is a compute the call started, a coalesced call joined a compute that
//! was already running; ages are those of the values answered. Every replica reports
//! its figures to the substrate (`ServedReports`) each `server.stats_interval`, and the
//! view adds up this replica's live figures and the others' reports ([`merge`]).

use std::collections::HashMap;

use fstore_proto::api::{self, FeatureResult, Status};
use fstore_proto::wire::ServedReport;

use crate::planner::Origin;

/// Upper bounds of the age buckets, in ms, and their labels.
const AGE_BUCKETS: [(i64, &str); 6] = [
    (1_000, "1s"),
    (10_000, "10s"),
    (60_000, "1m"),
    (600_000, "10m"),
    (3_600_000, "1h"),
    (i64::MAX, "+Inf"),
];

/// Counts per tenant and feature version (`name@version`): each tenant's features are
/// its own, and so are their figures.
#[derive(Debug, Default)]
pub struct ServedStats {
    by_feature: std::sync::Mutex<HashMap<(String, String), Served>>,
}

#[derive(Debug, Default, Clone)]
struct Served {
    hits: u64,
    misses: u64,
    coalesced: u64,
    failures: u64,
    last_computed_at_ms: i64,
    ages: [u64; AGE_BUCKETS.len()],
    partial: u64,
    complete: u64,
    oldest_partial_at_ms: i64,
}

impl ServedStats {
    /// One call: `ids` are the requested feature versions (results cycle through them,
    /// entity-major), `origins` how the call's first plan came by each result, and
    /// `answer` what it answered.
    pub fn record(&self, tenant: &str, ids: &[&str], origins: &[Origin], answer: &[FeatureResult]) {
        let mut map = self.by_feature.lock().unwrap_or_else(|p| p.into_inner());
        for ((r, origin), id) in answer.iter().zip(origins).zip(ids.iter().cycle()) {
            let s = map
                .entry((tenant.to_string(), (*id).to_string()))
                .or_default();
            match r.status() {
                Status::Failed => s.failures += 1,
                _ => match origin {
                    Origin::Stored | Origin::Published => s.hits += 1,
                    Origin::Computed => s.misses += 1,
                    Origin::Joined => s.coalesced += 1,
                },
            }
            if matches!(r.status(), Status::Ready | Status::Stale) {
                let age = r.age_ms as i64;
                if let Some(i) = AGE_BUCKETS.iter().position(|(le, _)| age <= *le) {
                    s.ages[i] += 1;
                }
                s.last_computed_at_ms = s.last_computed_at_ms.max(r.computed_at_ms);
                if let Some(c) = &r.coverage {
                    if c.resolved < c.total {
                        s.partial += 1;
                        if s.oldest_partial_at_ms == 0 || r.computed_at_ms < s.oldest_partial_at_ms
                        {
                            s.oldest_partial_at_ms = r.computed_at_ms;
                        }
                    } else {
                        s.complete += 1;
                    }
                }
            }
        }
    }

    /// The view of one feature version (`name@version`) of `tenant`.
    pub fn of(&self, tenant: &str, id: &str) -> api::FeatureStats {
        let s = self
            .by_feature
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_string(), id.to_string()))
            .cloned()
            .unwrap_or_default();
        let served = s.hits + s.misses + s.coalesced;
        api::FeatureStats {
            hits: s.hits,
            misses: s.misses,
            coalesced: s.coalesced,
            failures: s.failures,
            hit_rate: if served == 0 {
                0.0
            } else {
                s.hits as f64 / served as f64
            },
            last_computed_at_ms: s.last_computed_at_ms,
            ages: AGE_BUCKETS
                .iter()
                .zip(s.ages)
                .map(|((_, le), count)| api::AgeBucket {
                    le: (*le).to_string(),
                    count,
                })
                .collect(),
            partial: s.partial,
            complete: s.complete,
            oldest_partial_at_ms: s.oldest_partial_at_ms,
            replicas: 1,
        }
    }

    /// This replica's report of each tenant it served.
    pub fn reports(&self) -> Vec<(String, ServedReport)> {
        let keys: Vec<(String, String)> = self
            .by_feature
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut by_tenant: HashMap<String, ServedReport> = HashMap::new();
        for (tenant, id) in keys {
            let view = self.of(&tenant, &id);
            by_tenant
                .entry(tenant)
                .or_default()
                .features
                .insert(id, view);
        }
        by_tenant.into_iter().collect()
    }
}

/// The figures of several replicas as one: counts and age buckets added, the newest
/// computed_at, the oldest partial value, the hit rate of the sums, the replicas
/// counted.
pub fn merge(views: impl IntoIterator<Item = api::FeatureStats>) -> api::FeatureStats {
    let mut total = api::FeatureStats {
        ages: AGE_BUCKETS
            .iter()
            .map(|(_, le)| api::AgeBucket {
                le: (*le).to_string(),
                count: 0,
            })
            .collect(),
        ..Default::default()
    };
    for v in views {
        total.hits += v.hits;
        total.misses += v.misses;
        total.coalesced += v.coalesced;
        total.failures += v.failures;
        total.partial += v.partial;
        total.complete += v.complete;
        total.replicas += v.replicas;
        total.last_computed_at_ms = total.last_computed_at_ms.max(v.last_computed_at_ms);
        if v.oldest_partial_at_ms > 0
            && (total.oldest_partial_at_ms == 0
                || v.oldest_partial_at_ms < total.oldest_partial_at_ms)
        {
            total.oldest_partial_at_ms = v.oldest_partial_at_ms;
        }
        for bucket in v.ages {
            if let Some(b) = total.ages.iter_mut().find(|b| b.le == bucket.le) {
                b.count += bucket.count;
            }
        }
    }
    let served = total.hits + total.misses + total.coalesced;
    total.hit_rate = if served == 0 {
        0.0
    } else {
        total.hits as f64 / served as f64
    };
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(age_ms: u64) -> FeatureResult {
        let mut r = FeatureResult {
            age_ms,
            computed_at_ms: 5,
            ..Default::default()
        };
        r.set_status(Status::Ready);
        r
    }

    #[test]
    fn a_call_counts_once_by_origin() {
        let stats = ServedStats::default();
        // 1 compute and 199 callers that joined it, each answered READY once.
        stats.record("t", &["f@1"], &[Origin::Computed], &[ready(10)]);
        for _ in 0..199 {
            stats.record("t", &["f@1"], &[Origin::Joined], &[ready(10)]);
        }
        stats.record("t", &["f@1"], &[Origin::Stored], &[ready(20_000)]);
        let v = stats.of("t", "f@1");
        assert_eq!((v.hits, v.misses, v.coalesced), (1, 1, 199));
        assert_eq!(v.ages[0].count, 200);
        assert_eq!(v.ages[2].count, 1);
        assert!((v.hit_rate - 1.0 / 201.0).abs() < 1e-12);
    }

    #[test]
    fn values_of_related_entities_count_by_coverage() {
        let stats = ServedStats::default();
        let covered = |resolved, computed_at_ms| FeatureResult {
            coverage: Some(api::Coverage {
                resolved,
                total: 3,
                ..Default::default()
            }),
            computed_at_ms,
            ..ready(10)
        };
        for r in [covered(1, 30), covered(2, 20), covered(3, 10)] {
            stats.record("t", &["u@1"], &[Origin::Stored], &[r]);
        }
        let v = stats.of("t", "u@1");
        assert_eq!((v.partial, v.complete, v.oldest_partial_at_ms), (2, 1, 20));
    }

    #[test]
    fn replicas_add_up_through_their_reports() {
        let (a, b) = (ServedStats::default(), ServedStats::default());
        a.record("t", &["f@1"], &[Origin::Computed], &[ready(10)]);
        b.record("t", &["f@1"], &[Origin::Stored], &[ready(20_000)]);
        b.record("t", &["f@1"], &[Origin::Stored], &[ready(30)]);
        b.record("other", &["f@1"], &[Origin::Stored], &[ready(30)]);
        let reports = b.reports();
        let theirs = reports
            .iter()
            .find(|(tenant, _)| tenant == "t")
            .and_then(|(_, r)| r.features.get("f@1").cloned())
            .expect("b's report of t");
        let v = merge([a.of("t", "f@1"), theirs]);
        assert_eq!((v.hits, v.misses, v.replicas), (2, 1, 2));
        assert_eq!(v.ages[0].count, 2);
        assert_eq!(v.ages[2].count, 1);
        assert!((v.hit_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(reports.len(), 2, "one report per tenant");
    }
}
