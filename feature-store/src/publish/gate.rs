//! The anomaly gate: a staged generation measured against the published one. Each
//! check gives its measured value, its threshold and whether it passed; a generation is
//! published only if every check that applies passes. Absolute checks (failure and
//! null rates) always apply; the comparisons need a published generation; the
//! distribution checks apply to numbers (PSI over the previous deciles, the two-sample
//! Kolmogorov–Smirnov statistic), the vector ones to tensors (mean norm, mean cosine to
//! the same entity's previous vector).

use std::collections::HashMap;

use fstore_proto::api::{self, GateCheck, GateThresholds, value::Kind};
use fstore_proto::wire::GenerationEntry;

/// The thresholds a feature gets where its registration says nothing.
pub const DEFAULTS: GateThresholds = GateThresholds {
    max_row_change: Some(0.5),
    max_failure_rate: Some(0.05),
    max_null_rate: Some(0.05),
    max_psi: Some(0.25),
    max_ks: Some(0.2),
    max_norm_change: Some(0.2),
    min_cosine: Some(0.8),
};

/// PSI bins: the previous generation's deciles.
const BINS: usize = 10;
/// The share a PSI bin counts with when it is empty, so the logarithm stays finite.
const EMPTY_BIN: f64 = 1e-4;

/// Every check that applies to `new` (against `old`, the published generation, if
/// any), under `registered` thresholds filled in with [`DEFAULTS`].
pub fn check(
    registered: Option<&GateThresholds>,
    new: &[GenerationEntry],
    old: Option<&[GenerationEntry]>,
) -> Vec<GateCheck> {
    let pick = |f: fn(&GateThresholds) -> Option<f64>| {
        registered
            .and_then(f)
            .or_else(|| f(&DEFAULTS))
            .unwrap_or_default()
    };
    let mut checks = Vec::new();
    let at_most = |name: &str, value: f64, threshold: f64| GateCheck {
        name: name.to_string(),
        value,
        threshold,
        passed: value <= threshold,
    };
    let total = new.len().max(1) as f64;
    let failed = new.iter().filter(|e| e.failed).count() as f64;
    let null = new.iter().filter(|e| !e.failed && is_null(e)).count() as f64;
    checks.push(at_most(
        "failure_rate",
        failed / total,
        pick(|t| t.max_failure_rate),
    ));
    checks.push(at_most(
        "null_rate",
        null / total,
        pick(|t| t.max_null_rate),
    ));
    let Some(old) = old else {
        return checks;
    };
    let rows = |g: &[GenerationEntry]| g.iter().filter(|e| !e.failed).count() as f64;
    let (rows_new, rows_old) = (rows(new), rows(old));
    if rows_old > 0.0 {
        checks.push(at_most(
            "row_change",
            (rows_new - rows_old).abs() / rows_old,
            pick(|t| t.max_row_change),
        ));
    }
    let (nums_new, nums_old) = (numbers(new), numbers(old));
    if !nums_new.is_empty() && !nums_old.is_empty() {
        checks.push(at_most(
            "psi",
            psi(&nums_old, &nums_new),
            pick(|t| t.max_psi),
        ));
        checks.push(at_most("ks", ks(&nums_old, &nums_new), pick(|t| t.max_ks)));
    }
    let (vecs_new, vecs_old) = (vectors(new), vectors(old));
    if !vecs_new.is_empty() && !vecs_old.is_empty() {
        let mean_norm =
            |v: &HashMap<&str, &[f32]>| v.values().map(|x| norm(x)).sum::<f64>() / v.len() as f64;
        let (n_new, n_old) = (mean_norm(&vecs_new), mean_norm(&vecs_old));
        if n_old > 0.0 {
            checks.push(at_most(
                "norm_change",
                (n_new - n_old).abs() / n_old,
                pick(|t| t.max_norm_change),
            ));
        }
        let cosines: Vec<f64> = vecs_new
            .iter()
            .filter_map(|(id, v)| vecs_old.get(id).and_then(|o| cosine(v, o)))
            .collect();
        if !cosines.is_empty() {
            let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
            let threshold = pick(|t| t.min_cosine);
            checks.push(GateCheck {
                name: "cosine".to_string(),
                value: mean,
                threshold,
                passed: mean >= threshold,
            });
        }
    }
    checks
}

/// No value, a NaN number, or a tensor holding a NaN.
fn is_null(e: &GenerationEntry) -> bool {
    match e.value.as_ref().and_then(|v| v.kind.as_ref()) {
        None => true,
        Some(Kind::F64(x)) => x.is_nan(),
        Some(Kind::Tensor(t)) => t.data.iter().any(|x| x.is_nan()),
        Some(_) => false,
    }
}

/// The finite numbers of a generation (f64 and i64 values), sorted.
fn numbers(g: &[GenerationEntry]) -> Vec<f64> {
    let mut out: Vec<f64> = g
        .iter()
        .filter(|e| !e.failed)
        .filter_map(|e| match e.value.as_ref()?.kind.as_ref()? {
            Kind::F64(x) if x.is_finite() => Some(*x),
            Kind::I64(x) => Some(*x as f64),
            _ => None,
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// The tensors of a generation without NaN, by entity.
fn vectors(g: &[GenerationEntry]) -> HashMap<&str, &[f32]> {
    g.iter()
        .filter(|e| !e.failed)
        .filter_map(|e| match e.value.as_ref()?.kind.as_ref()? {
            Kind::Tensor(api::Tensor { data, .. }) if !data.iter().any(|x| x.is_nan()) => {
                Some((e.entity_id.as_str(), data.as_slice()))
            }
            _ => None,
        })
        .collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

/// None when either vector is zero or their lengths differ.
fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    Some(dot / (na * nb))
}

/// Population stability index of `new` against `old` (both sorted, non-empty), over
/// the deciles of `old`: Σ (pₙ − pₒ) · ln(pₙ / pₒ).
fn psi(old: &[f64], new: &[f64]) -> f64 {
    let edges: Vec<f64> = (1..BINS)
        .map(|i| old[(i * old.len() / BINS).min(old.len() - 1)])
        .collect();
    let shares = |xs: &[f64]| {
        let mut counts = [0usize; BINS];
        for x in xs {
            counts[edges.partition_point(|e| e <= x)] += 1;
        }
        counts.map(|c| (c as f64 / xs.len() as f64).max(EMPTY_BIN))
    };
    let (po, pn) = (shares(old), shares(new));
    po.iter()
        .zip(&pn)
        .map(|(o, n)| (n - o) * (n / o).ln())
        .sum()
}

/// The two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical
/// distribution functions of `a` and `b` (both sorted, non-empty).
fn ks(a: &[f64], b: &[f64]) -> f64 {
    let (mut i, mut j, mut gap) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        gap = gap.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    gap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: usize, kind: Option<Kind>) -> GenerationEntry {
        GenerationEntry {
            entity_id: format!("e{id}"),
            value: kind.map(|k| api::Value { kind: Some(k) }),
            ..Default::default()
        }
    }

    fn numbers_from(xs: impl Iterator<Item = f64>) -> Vec<GenerationEntry> {
        xs.enumerate()
            .map(|(i, x)| entry(i, Some(Kind::F64(x))))
            .collect()
    }

    fn by_name<'a>(checks: &'a [GateCheck], name: &str) -> &'a GateCheck {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
    }

    #[test]
    fn the_same_distribution_passes_every_check() {
        let old = numbers_from((0..1000).map(|i| (i % 97) as f64));
        let new = numbers_from((0..1000).map(|i| ((i * 7) % 97) as f64));
        let checks = check(None, &new, Some(&old));
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
        assert!(by_name(&checks, "psi").value < 0.01);
        assert!(by_name(&checks, "ks").value < 0.02);
    }

    #[test]
    fn a_shift_and_nans_are_refused_and_say_by_how_much() {
        let old = numbers_from((0..1000).map(|i| (i % 100) as f64 / 10.0));
        let new = numbers_from((0..1000).map(|i| {
            if i % 10 < 3 {
                f64::NAN
            } else {
                (i % 100) as f64 / 10.0 + 5.0
            }
        }));
        let checks = check(None, &new, Some(&old));
        let null = by_name(&checks, "null_rate");
        assert!(!null.passed && (null.value - 0.3).abs() < 1e-9, "{null:?}");
        assert!(!by_name(&checks, "psi").passed);
        let ks = by_name(&checks, "ks");
        assert!(!ks.passed && ks.value > 0.4, "{ks:?}");
        assert!(by_name(&checks, "row_change").passed, "NaN rows are rows");
    }

    #[test]
    fn registered_thresholds_replace_the_defaults_one_by_one() {
        let new: Vec<_> = (0..10)
            .map(|i| GenerationEntry {
                failed: i < 2,
                ..entry(i, Some(Kind::I64(1)))
            })
            .collect();
        let strict = check(None, &new, None);
        assert!(!by_name(&strict, "failure_rate").passed);
        let lenient = GateThresholds {
            max_failure_rate: Some(0.25),
            ..Default::default()
        };
        let checks = check(Some(&lenient), &new, None);
        assert!(by_name(&checks, "failure_rate").passed);
        assert_eq!(by_name(&checks, "null_rate").threshold, 0.05);
        assert_eq!(checks.len(), 2, "nothing to compare against: {checks:?}");
    }

    #[test]
    fn vectors_are_compared_by_norm_and_by_entity() {
        let tensor = |data: Vec<f32>| {
            Some(Kind::Tensor(api::Tensor {
                shape: vec![data.len() as u64],
                data,
            }))
        };
        let old: Vec<_> = (0..20).map(|i| entry(i, tensor(vec![1.0, 0.0]))).collect();
        let same: Vec<_> = (0..20).map(|i| entry(i, tensor(vec![2.0, 0.1]))).collect();
        let turned: Vec<_> = (0..20).map(|i| entry(i, tensor(vec![0.0, 1.0]))).collect();
        let checks = check(None, &same, Some(&old));
        assert!(by_name(&checks, "cosine").passed);
        let norm = by_name(&checks, "norm_change");
        assert!(!norm.passed && (norm.value - 1.0).abs() < 0.01, "{norm:?}");
        let checks = check(None, &turned, Some(&old));
        let cos = by_name(&checks, "cosine");
        assert!(!cos.passed && cos.value.abs() < 1e-9, "{cos:?}");
        assert!(by_name(&checks, "norm_change").passed);
    }

    #[test]
    fn ks_is_the_largest_gap_between_the_two_distribution_functions() {
        assert_eq!(ks(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert_eq!(ks(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert!((ks(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-12);
    }
}
