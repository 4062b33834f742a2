//! What the fuzz targets (`fuzz/`, cargo-fuzz on nightly) check on arbitrary bytes,
//! and what the corpus replay (`tests/tests/fuzz_corpus.rs`, in CI) checks on every
//! saved input: each input is refused with an error or accepted with its invariants,
//! and nothing panics. One function per target.

use std::sync::{Arc, OnceLock};

use fstore::config::Limits;
use fstore::names::{FeatureRef, check_entity_id, check_name, check_tenant};
use fstore::registry::{Registry, Snapshot};
use fstore_proto::{api, wire};
use fstore_substrate::{Substrate, convert, token};
use prost::Message;

/// A target's check of one input.
pub type Check = fn(&[u8]);

/// Every target, by the name of its file under `fuzz/fuzz_targets/` and its corpus.
pub const TARGETS: [(&str, Check); 6] = [
    ("references", references),
    ("tokens", tokens),
    ("registration", registration),
    ("wire", wire),
    ("tickets_and_cursors", tickets_and_cursors),
    ("requests", requests),
];

/// Feature references and names: what parses prints back to itself.
pub fn references(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = FeatureRef::parse(s) {
        assert_eq!(
            FeatureRef::parse(&r.to_string()).ok(),
            Some(r.clone()),
            "{s:?}"
        );
        assert!(check_name("feature", &r.name).is_ok(), "{s:?}");
    }
    let _ = check_name("feature", s);
    let _ = check_tenant(s);
    let _ = check_entity_id(s);
}

/// Subject and key tokens: one token of safe bytes (no `.`, `*`, `>`, space), never
/// empty, decoding back to what was encoded; decoding any text never panics.
pub fn tokens(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let t = token::encode(&s);
    assert!(!t.is_empty());
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{t:?}"
    );
    assert_eq!(token::decode(&t).as_deref(), Some(&*s));
    let _ = token::decode(&s);
}

/// Registration files: parsed or refused, features and schedules.
pub fn registration(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = fstore::definitions::parse(s);
    let _ = fstore::definitions::schedules(s);
}

/// Wire messages decoded from any bytes, and every value in them converted for a flow.
pub fn wire(data: &[u8]) {
    let values = |vs: &mut dyn Iterator<Item = &api::Value>| {
        for v in vs {
            if let Ok(f) = convert::to_flow(v) {
                let _ = convert::to_wire(&f);
            }
        }
    };
    if let Ok(job) = wire::ComputeJob::decode(data) {
        values(&mut job.inputs.iter().filter_map(|i| match &i.source {
            Some(wire::job_input::Source::Value(v)) => Some(v),
            _ => None,
        }));
    }
    if let Ok(env) = wire::ValueEnvelope::decode(data) {
        values(&mut env.value.iter());
    }
    if let Ok(t) = wire::Ticket::decode(data) {
        values(&mut t.results.iter().filter_map(|r| r.value.as_ref()));
    }
    let _ = wire::JobList::decode(data);
    let _ = wire::DeadLetter::decode(data);
    let _ = wire::BackfillRecord::decode(data);
    let _ = wire::PublishRecord::decode(data);
    let _ = wire::PartialList::decode(data);
    let _ = wire::ApiKeyRecord::decode(data);
    if let Ok(v) = api::Value::decode(data) {
        values(&mut std::iter::once(&v));
    }
}

/// A substrate and a registry with a few features, made once per process.
struct World {
    runtime: tokio::runtime::Runtime,
    substrate: Substrate,
    snapshot: Arc<Snapshot>,
    tickets: fstore::tickets::Tickets,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = crate::test_config();
        let (substrate, snapshot) = runtime.block_on(async {
            let substrate = fstore_substrate::embedded::substrate(&config.embedded_options())
                .expect("embedded");
            let adverts = fstore_substrate::worker::adverts(&fstore_flows::Catalog::builtins());
            substrate
                .directory
                .advertise("fuzz", &adverts)
                .await
                .expect("advertise");
            let registry = Registry::load(&substrate).await.expect("registry");
            let defs = vec![
                crate::build::feature("a", "test.probe@1", &[], &[], 60_000),
                crate::build::feature(
                    "t",
                    "text.stats@1",
                    &[],
                    &[("text", "request:text")],
                    60_000,
                ),
                crate::build::feature("b", "num.affine@1", &[], &[("x", "a")], 60_000),
            ];
            registry
                .register("fuzz", defs, false)
                .await
                .expect("register");
            (substrate, registry.snapshot("fuzz"))
        });
        let tickets = fstore::tickets::Tickets::new(
            substrate.tickets.clone(),
            std::time::Duration::from_secs(3600),
        );
        World {
            runtime,
            substrate,
            snapshot,
            tickets,
        }
    })
}

/// Ticket ids and log cursors: any id is an unknown ticket (NOT_FOUND, never a
/// panic); any cursor or time range is a query or a refusal.
pub fn tickets_and_cursors(data: &[u8]) {
    let w = world();
    let id = String::from_utf8_lossy(data);
    let got = w.runtime.block_on(w.tickets.get("fuzz", &id));
    assert!(matches!(got, Err(fstore::Error::NotFound(_))), "{got:?}");
    let mut eight = [0u8; 8];
    for (i, b) in data.iter().take(8).enumerate() {
        eight[i] = *b;
    }
    let n = u64::from_le_bytes(eight);
    let sub = api::SubscribeEventsRequest {
        after_sequence: Some(n),
        features: vec![id.to_string()],
        ..Default::default()
    };
    let _ = fstore::events::subscription("fuzz".into(), &sub, &w.snapshot);
    let range = api::ReadLogRequest {
        from_ms: n as i64,
        to_ms: (n as i64).wrapping_mul(3),
        ..Default::default()
    };
    let _ = fstore::events::range("fuzz".into(), &range, &w.snapshot, 1_700_000_000_000);
}

/// GetFeatures requests decoded from any bytes, checked against a registry: valid or
/// refused, never a panic.
pub fn requests(data: &[u8]) {
    let Ok(req) = api::GetFeaturesRequest::decode(data) else {
        return;
    };
    let w = world();
    let limits = Limits::default();
    let _ = w.runtime.block_on(fstore::request::ValidRequest::new(
        "fuzz".into(),
        &req,
        &w.snapshot,
        &limits,
        1_700_000_000_000,
        w.substrate.inputs.as_ref(),
    ));
}
