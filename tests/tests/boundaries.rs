//! What the store refuses at its edges and how it counts, on both backends, over real
//! gRPC: unknown modes, staleness and TTL bounds, oversize messages and definitions,
//! all-or-nothing registration, a failed replay that must give its claim back, and
//! coalesced callers counted once.

use std::time::{Duration, Instant};

use fstore_proto::api::{self, Status};
use fstore_tests::build::{self, feature};
use fstore_tests::harness::{Backend, Harness};
use fstore_tests::{TestClient, test_config, wait_until};
use tonic::Code;

const LONG: Duration = Duration::from_secs(20);

fn probe(name: &str, params: &[(&str, &str)]) -> api::FeatureDefinition {
    feature(name, "test.probe@1", params, &[], 600_000)
}

fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> tonic::Status {
    match r {
        Ok(v) => tonic::Status::ok(format!("accepted: {v:?}")),
        Err(s) => s,
    }
}

/// Asserts that `r` was refused with `code` and a message that mentions `needle`.
fn assert_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    let s = refused(r);
    assert_eq!(s.code(), code, "{needle}: {}", s.message());
    assert!(
        s.message().contains(needle),
        "`{}` should mention `{needle}`",
        s.message()
    );
}

async fn requests_out_of_range_are_refused_naming_the_limit(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("ok", &[])).await?;

    let mut unknown_mode = build::get(&["e"], &["ok"]);
    unknown_mode.mode = 99;
    assert_refused(
        h.client.get(unknown_mode).await,
        Code::InvalidArgument,
        "mode 99 is unknown",
    );

    let mut stale = build::get(&["e"], &["ok"]);
    stale.max_staleness_ms = Some(1 << 63);
    assert_refused(
        h.client.get(stale).await,
        Code::InvalidArgument,
        "more than the limit of",
    );

    let mut forever = probe("forever", &[]);
    forever.ttl_ms = u64::MAX;
    assert_refused(
        h.client.register(forever).await,
        Code::InvalidArgument,
        "ttl_ms",
    );

    // A 5 MB description is refused the same way on every backend, before it reaches
    // the shared store.
    let mut wordy = probe("wordy", &[]);
    wordy.description = "x".repeat(5 * 1024 * 1024);
    assert_refused(
        h.client.register(wordy).await,
        Code::InvalidArgument,
        "more than the limit of 65536",
    );

    // 20 MB is refused before it is decoded, naming the setting.
    let mut huge = build::get(&["e"], &["ok"]);
    huge.entities[0]
        .inputs
        .insert("blob".into(), build::text(&"y".repeat(20 * 1024 * 1024)));
    let mut raw = h
        .client
        .raw
        .clone()
        .max_encoding_message_size(64 * 1024 * 1024);
    assert_refused(
        raw.get_features(h.client.req(huge)).await,
        Code::ResourceExhausted,
        "limits.max_request_bytes",
    );

    // 100,000 entities are refused by count, at once.
    let ids: Vec<String> = (0..100_000).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let many = build::get(&refs, &["ok"]);
    let started = Instant::now();
    let s = refused(h.client.get(many).await);
    let took = started.elapsed();
    println!("100,000 entities refused in {took:?}");
    assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
    assert!(
        s.message().contains("limits.max_entities"),
        "{}",
        s.message()
    );
    h.stop().await;
    Ok(())
}

async fn registration_is_all_or_nothing(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    let mut raw = h.client.raw.clone();
    let batch = |defs: Vec<api::FeatureDefinition>| {
        h.client.req(api::RegisterFeaturesRequest {
            definitions: defs,
            force: false,
        })
    };
    assert_refused(
        raw.register_features(batch(vec![
            probe("first", &[]),
            feature("second", "num.affine@1", &[], &[("x", "first")], 600_000),
            feature("third", "num.affine@1", &[], &[("x", "nope")], 600_000),
        ]))
        .await,
        Code::InvalidArgument,
        "unknown feature `nope`",
    );
    let listed = raw
        .list_features(h.client.req(api::ListFeaturesRequest::default()))
        .await?
        .into_inner();
    assert!(
        listed.features.is_empty(),
        "a refused file registers nothing: {:?}",
        listed.features
    );
    let done = raw
        .register_features(batch(vec![
            probe("first", &[]),
            feature("second", "num.affine@1", &[], &[("x", "first")], 600_000),
        ]))
        .await?
        .into_inner();
    assert_eq!(done.registered.len(), 2);
    assert!(done.registered.iter().all(|r| r.created));
    let r = h
        .client
        .get(build::sync(&["e"], &["second"], 10_000))
        .await?;
    assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
    h.stop().await;
    Ok(())
}

async fn a_failed_replay_gives_its_claim_back(b: Backend) -> anyhow::Result<()> {
    let mut config = test_config();
    config.worker.slots = 1;
    config.queue.max_queued_per_tenant = 1;
    let h = Harness::with_config(b, config).await?;
    let fixed_at = fstore_substrate::time::now_ms() + 1_000;
    let until = fixed_at.to_string();
    h.register(probe(
        "fragile",
        &[("fail", "transient"), ("fail_until_ms", &until)],
    ))
    .await?;
    h.register(probe("slow", &[("delay_ms", "1500")])).await?;
    let r = h
        .client
        .get(build::sync(&["e1"], &["fragile"], 10_000))
        .await?;
    assert_eq!(r.results[0].status(), Status::Failed, "{r:?}");
    let mut raw = h.client.raw.clone();
    let list = raw
        .list_dead_letters(h.client.req(api::ListDeadLettersRequest { limit: 0 }))
        .await?
        .into_inner();
    assert_eq!(list.total, 1, "{list:?}");
    let letter = list.dead_letters[0].clone();

    // The tenant's queue for the flow is full while `slow` runs: the replay is refused.
    // The dead-lettered job leaves the queue just after its failure is answered (the
    // result is written before the message is settled), so `slow` may be refused for
    // a moment first.
    wait_until(
        Duration::from_secs(5),
        "`slow` to be accepted once the failed job settles",
        || async {
            let r = h.client.get(build::get(&["e1"], &["slow"])).await.ok()?;
            (r.results[0].status() == Status::Pending).then_some(())
        },
    )
    .await?;
    assert_refused(
        raw.replay_dead_letter(h.client.req(api::ReplayDeadLetterRequest {
            id: letter.id.clone(),
        }))
        .await,
        Code::ResourceExhausted,
        "queue.max_queued_per_tenant",
    );
    let list = raw
        .list_dead_letters(h.client.req(api::ListDeadLettersRequest { limit: 0 }))
        .await?
        .into_inner();
    assert_eq!(list.total, 1, "a refused replay keeps its dead letter");

    // Once the queue drains and the stored failure expires, the key computes: the
    // refused replay left no claim for callers to coalesce onto.
    wait_until(
        LONG,
        "the value to compute after the refused replay",
        || async {
            let r = h
                .client
                .get(build::sync(&["e1"], &["fragile"], 2_000))
                .await
                .ok()?;
            (r.results[0].status() == Status::Ready).then_some(())
        },
    )
    .await?;
    h.stop().await;
    Ok(())
}

async fn coalesced_callers_count_once(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(probe("shared", &[("delay_ms", "3000")])).await?;
    let url = h.running.url();
    let clients: Vec<TestClient> =
        futures::future::try_join_all((0..8).map(|_| TestClient::connect(&url, None))).await?;
    let calls = (0..200).map(|i| {
        let c = clients[i % clients.len()].clone();
        async move { c.get(build::sync(&["one"], &["shared"], 15_000)).await }
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer?.results[0].status(), Status::Ready);
    }
    let stats = h.client.describe("shared").await?.stats.unwrap_or_default();
    println!(
        "200 callers of one compute: {} misses, {} coalesced, {} hits",
        stats.misses, stats.coalesced, stats.hits
    );
    assert_eq!(
        (stats.misses, stats.coalesced, stats.hits),
        (1, 199, 0),
        "a miss is a compute, a coalesced call joined one: {stats:?}"
    );
    let text = fstore_substrate::metrics::global().encode();
    let coalesced: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("fstore_coalesced_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0);
    assert_eq!(
        coalesced, 199.0,
        "fstore_coalesced_total counts each joining call once"
    );
    assert_eq!(h.computes("shared@1"), 1);
    h.stop().await;
    Ok(())
}

async fn messages_nats_cannot_carry_are_refused_as_bad_input(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(feature(
        "words",
        "text.stats@1",
        &[],
        &[("text", "request:text")],
        600_000,
    ))
    .await?;
    let with_text = |ids: &[&str], bytes: usize| {
        let mut r = build::get(ids, &["words"]);
        for e in &mut r.entities {
            e.inputs
                .insert("text".into(), build::text(&"w ".repeat(bytes / 2)));
        }
        r
    };
    // Three entities of 600 KB each: every job fits in a NATS message, the pending
    // request's ticket (1.8 MB) does not.
    let pending = h.client.get(with_text(&["a", "b", "c"], 600_000)).await;
    // One entity of just under limits.max_input_bytes: its job does not fit.
    let big_job = h.client.get(with_text(&["d"], 1_048_000)).await;
    match b {
        Backend::Embedded => {
            assert!(pending.is_ok(), "{pending:?}");
            assert!(big_job.is_ok(), "{big_job:?}");
        }
        Backend::Nats | Backend::NatsTls => {
            // Before: UNAVAILABLE ("NATS did not answer"), which callers retry forever.
            assert_refused(pending, Code::InvalidArgument, "pending request's ticket");
            assert_refused(big_job, Code::InvalidArgument, "max_payload");
        }
    }
    h.stop().await;
    Ok(())
}

/// A ticket names a feature version the replica reading it does not know, even after
/// reading its registry again (a replica lagging behind a registration): the ticket
/// proves the version exists, so the answer is UNAVAILABLE, worth retrying, not
/// NOT_FOUND (the chaos run's followers were told their tickets did not exist).
async fn a_ticket_naming_a_version_not_seen_yet_is_unavailable(b: Backend) -> anyhow::Result<()> {
    let h = Harness::start(b).await?;
    h.register(feature(
        "t",
        "test.probe@1",
        &[("value", "1")],
        &[],
        600_000,
    ))
    .await?;
    let r = h.client.get(build::get(&["e"], &["t"])).await?;
    let ticket = fstore_proto::wire::Ticket {
        id: "0123456789abcdef0123456789abcdef".into(),
        tenant: h
            .client
            .tenant
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        created_at_ms: fstore_substrate::time::now_ms(),
        entities: vec![api::EntityRequest {
            entity_id: "e".into(),
            ..Default::default()
        }],
        features: vec![fstore_proto::wire::TicketFeature {
            requested: "t@2".into(),
            name: "t".into(),
            version: 2,
            min_planned_at_ms: 0,
        }],
        ..Default::default()
    };
    h.running.substrate.tickets.put(ticket).await?;
    let refused = h.client.ticket("0123456789abcdef0123456789abcdef").await;
    let s = refused.expect_err("a version nobody registered");
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(s.message().contains("caught up"), "{s:?}");
    // The real ticket reads as usual.
    assert!(h.client.ticket(&r.ticket).await.is_ok());
    h.stop().await;
    Ok(())
}

fstore_tests::on_every_backend!(
    requests_out_of_range_are_refused_naming_the_limit,
    registration_is_all_or_nothing,
    a_failed_replay_gives_its_claim_back,
    coalesced_callers_count_once,
    messages_nats_cannot_carry_are_refused_as_bad_input,
    a_ticket_naming_a_version_not_seen_yet_is_unavailable,
);
