//! The chaos run's features (one set per tenant) and the reference computation every READY
//! value is checked against: a probe root, an affine dependent of it, a text statistic
//! over a request input, a probe registered anew in versions during the run, a probe
//! with a 2 s TTL and a dependent of it (values expire during the run, and no answer
//! may be older than its TTL), and a poison probe that fails transiently forever, so
//! each of its jobs dead-letters.

use std::collections::HashMap;

use fstore_proto::api;
use fstore_tests::build::{self, feature};

pub(crate) const ROOT: &str = "chaos.root";
pub(crate) const DEP: &str = "chaos.dep";
pub(crate) const TEXT: &str = "chaos.text";
/// Registered again with a new `value` during the run: its value is its version's param.
pub(crate) const VER: &str = "chaos.ver";
pub(crate) const POISON: &str = "chaos.poison";
/// Expires every 2 s: recomputed during the run (so it is left out of the duplicate
/// check), and its dependent may find it expired in the queue (and compute it again).
pub(crate) const SHORT: &str = "chaos.short";
pub(crate) const SHORT_TTL_MS: u64 = 2_000;
pub(crate) const AFTER_SHORT: &str = "chaos.after_short";
/// Features of ordinary calls.
pub(crate) const GOOD: [&str; 6] = [ROOT, DEP, TEXT, VER, SHORT, AFTER_SHORT];
/// Long enough that nothing expires during a run: a second compute of a key is a
/// duplicate unless an invalidation explains it.
pub(crate) const TTL_MS: u64 = 3_600_000;

pub(crate) fn text_of(entity: &str) -> String {
    format!("chaos text of {entity}")
}

/// `chaos.ver` registered with `value` (`100 × n` for its n-th registration).
pub(crate) fn ver(value: u64) -> api::FeatureDefinition {
    feature(
        VER,
        "test.probe@1",
        &[("delay_ms", "5"), ("value", &value.to_string())],
        &[],
        TTL_MS,
    )
}

/// Dependencies before dependents.
pub(crate) fn definitions() -> Vec<api::FeatureDefinition> {
    vec![
        feature(
            ROOT,
            "test.probe@1",
            &[("delay_ms", "5"), ("value", "10")],
            &[],
            TTL_MS,
        ),
        feature(
            DEP,
            "num.affine@1",
            &[("scale", "2"), ("offset", "1")],
            &[("x", ROOT)],
            TTL_MS,
        ),
        feature(
            TEXT,
            "text.stats@1",
            &[("stat", "chars")],
            &[("text", "request:text")],
            TTL_MS,
        ),
        ver(100),
        feature(
            SHORT,
            "test.probe@1",
            &[("delay_ms", "5"), ("value", "3")],
            &[],
            SHORT_TTL_MS,
        ),
        feature(
            AFTER_SHORT,
            "num.affine@1",
            &[("scale", "1"), ("offset", "1")],
            &[("x", SHORT)],
            TTL_MS,
        ),
        // Transient on every try (fail_attempts defaults to a million): the job uses up
        // its attempts and is dead-lettered.
        feature(
            POISON,
            "test.probe@1",
            &[("value", "1"), ("fail", "transient")],
            &[],
            TTL_MS,
        ),
    ]
}

/// What a result must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Expect {
    Value(f64),
    /// FAILED with a reason (poison).
    Failed,
    /// `chaos.ver` at a version whose param is not known yet: checked at the end.
    Deferred,
}

/// The reference for `feature` (its name, `name@v` or bare) at `version` of `entity`;
/// `ver_values` are the known `value` params of `chaos.ver`'s versions.
pub(crate) fn reference(
    feature: &str,
    version: u32,
    entity: &str,
    ver_values: &HashMap<u32, f64>,
) -> Option<Expect> {
    let name = feature.split('@').next().unwrap_or(feature);
    Some(match name {
        ROOT => Expect::Value(10.0),
        DEP => Expect::Value(21.0),
        TEXT => Expect::Value(text_of(entity).chars().count() as f64),
        VER => ver_values
            .get(&version)
            .map_or(Expect::Deferred, |v| Expect::Value(*v)),
        POISON => Expect::Failed,
        SHORT => Expect::Value(3.0),
        AFTER_SHORT => Expect::Value(4.0),
        _ => return None,
    })
}

/// The TTL of a feature (its name, `name@v` or bare): no answer may be older.
pub(crate) fn ttl_ms(feature: &str) -> u64 {
    match feature.split('@').next().unwrap_or(feature) {
        SHORT => SHORT_TTL_MS,
        _ => TTL_MS,
    }
}

/// A request for `entities` × `features` with each entity's text input.
pub(crate) fn request(
    entities: &[String],
    features: &[&str],
    mode: api::Mode,
) -> api::GetFeaturesRequest {
    let mut req = build::get(&[], features);
    req.entities = entities
        .iter()
        .map(|e| build::entity(e, &[("text", build::text(&text_of(e)))]))
        .collect();
    req.mode = mode as i32;
    req
}
