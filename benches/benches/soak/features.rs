//! The soak's features (a probe root, a dependent, a 3-deep chain with a short TTL, a
//! text statistic and a failing probe) and the values their results must have.

use fstore_proto::api;
use fstore_tests::build::{self, feature};

pub(crate) const ROOT: &str = "soak.root";
pub(crate) const DEP: &str = "soak.dep";
pub(crate) const C1: &str = "soak.c1";
pub(crate) const C2: &str = "soak.c2";
pub(crate) const C3: &str = "soak.c3";
pub(crate) const TEXT: &str = "soak.text";
pub(crate) const FAIL: &str = "soak.fail";
pub(crate) const FAIL_DEP: &str = "soak.fail_dep";
/// Features of hits, misses and SYNC calls.
pub(crate) const GOOD: [&str; 4] = [ROOT, DEP, C3, TEXT];
/// Entities the failing probe refuses.
pub(crate) const BAD_ENTITIES: usize = 8;
/// Short TTL of the chain: values expire many times during the run.
pub(crate) const SHORT_TTL_MS: u64 = 2_000;
pub(crate) const LONG_TTL_MS: u64 = 600_000;

pub(crate) fn bad_entity(i: usize) -> String {
    format!("bad-{i}")
}

pub(crate) fn warm_entity(i: usize) -> String {
    format!("w-{i}")
}

pub(crate) fn text_of(entity: &str) -> String {
    format!("soak text of {entity}")
}

/// Dependencies before dependents.
pub(crate) fn definitions() -> Vec<api::FeatureDefinition> {
    let bad = (0..BAD_ENTITIES)
        .map(bad_entity)
        .collect::<Vec<_>>()
        .join(",");
    vec![
        feature(
            ROOT,
            "test.probe@1",
            &[("delay_ms", "5"), ("value", "10")],
            &[],
            LONG_TTL_MS,
        ),
        feature(
            DEP,
            "num.affine@1",
            &[("scale", "2"), ("offset", "1")],
            &[("x", ROOT)],
            LONG_TTL_MS,
        ),
        feature(
            C1,
            "test.probe@1",
            &[("delay_ms", "5"), ("value", "3")],
            &[],
            SHORT_TTL_MS,
        ),
        feature(
            C2,
            "num.affine@1",
            &[("scale", "2")],
            &[("x", C1)],
            SHORT_TTL_MS,
        ),
        feature(
            C3,
            "num.affine@1",
            &[("offset", "1")],
            &[("x", C2)],
            SHORT_TTL_MS,
        ),
        feature(
            TEXT,
            "text.stats@1",
            &[("stat", "chars")],
            &[("text", "request:text")],
            LONG_TTL_MS,
        ),
        feature(
            FAIL,
            "test.probe@1",
            &[
                ("delay_ms", "5"),
                ("value", "5"),
                ("fail", "permanent"),
                ("fail_entities", &bad),
            ],
            &[],
            LONG_TTL_MS,
        ),
        feature(
            FAIL_DEP,
            "num.affine@1",
            &[("scale", "3")],
            &[("x", FAIL)],
            LONG_TTL_MS,
        ),
    ]
}

/// What a READY value must be; None for a pair that must be FAILED.
pub(crate) fn expected(entity: &str, feature: &str) -> Option<f64> {
    let refused = entity.starts_with("bad-");
    match feature {
        ROOT => Some(10.0),
        DEP => Some(21.0),
        C1 => Some(3.0),
        C2 => Some(6.0),
        C3 => Some(7.0),
        TEXT => Some(text_of(entity).chars().count() as f64),
        FAIL if !refused => Some(5.0),
        FAIL_DEP if !refused => Some(15.0),
        _ => None,
    }
}

pub(crate) fn request(entities: &[String], features: &[&str]) -> api::GetFeaturesRequest {
    let text: Vec<String> = entities.iter().map(|e| text_of(e)).collect();
    let mut req = build::get(&[], features);
    req.entities = entities
        .iter()
        .zip(&text)
        .map(|(e, t)| build::entity(e, &[("text", build::text(t))]))
        .collect();
    req
}
