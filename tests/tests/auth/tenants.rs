//! Tenants apart: nothing of another tenant reachable or revealed, definitions per
//! tenant, and features an owner shares read-only.

use std::time::Duration;

use fstore_proto::api::{self, Status};
use fstore_tests::TestClient;
use fstore_tests::build::{self, feature};
use fstore_tests::harness::{Backend, Harness};
use tonic::Code;

use super::{config, key};

pub(crate) async fn tenants_cannot_see_each_other(b: Backend) -> anyhow::Result<()> {
    let h = Harness::with_config(b, config()).await?;
    let keys = h.running.substrate.keys.clone();
    let a = h
        .client
        .with_key(&key(&keys, "acme", &["read", "write", "admin"]).await?);
    let other = h
        .client
        .with_key(&key(&keys, "globex", &["read", "write", "admin"]).await?);

    a.register(feature(
        "slow",
        "test.probe@1",
        &[("delay_ms", "3000")],
        &[],
        600_000,
    ))
    .await?;
    let pending = a.get(build::get(&["e1"], &["slow"])).await?;
    assert_eq!(pending.results[0].status(), Status::Pending);
    let ticket = pending.ticket.clone();
    assert!(!ticket.is_empty());

    // A foreign ticket answers exactly as an unknown one does.
    let foreign = other
        .ticket(&ticket)
        .await
        .expect_err("another tenant's ticket");
    let unknown_id = format!("{}0", &ticket[..ticket.len() - 1]);
    let unknown = other
        .ticket(&unknown_id)
        .await
        .expect_err("an unknown ticket");
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(
        foreign.message().replace(&ticket, "ID"),
        unknown.message().replace(&unknown_id, "ID"),
        "a foreign ticket reveals nothing an unknown one does not"
    );
    let cancel = other
        .raw
        .clone()
        .cancel_ticket(other.req(api::CancelTicketRequest {
            ticket: ticket.clone(),
        }))
        .await
        .expect_err("cancelling another tenant's ticket");
    assert_eq!(cancel.code(), Code::NotFound);
    assert_eq!(a.ticket(&ticket).await?.ticket, ticket, "still the owner's");

    // A key acts for its own tenant only, whatever the metadata says.
    let posing = other.with_tenant("acme");
    let posing = TestClient {
        key: other.key.clone(),
        ..posing
    };
    let s = posing
        .ticket(&ticket)
        .await
        .expect_err("naming another tenant");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("globex"), "{s:?}");

    // Keys: an admin manages its own tenant's only.
    let mut raw = other.raw.clone();
    let s = raw
        .create_api_key(other.req(api::CreateApiKeyRequest {
            tenant: "acme".into(),
            roles: vec!["admin".into()],
            label: String::new(),
        }))
        .await
        .expect_err("a key of another tenant");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let listed = raw
        .list_api_keys(other.req(api::ListApiKeysRequest {}))
        .await?
        .into_inner();
    assert!(
        listed.keys.iter().all(|k| k.tenant == "globex"),
        "{listed:?}"
    );
    let acme_keys = a
        .raw
        .clone()
        .list_api_keys(a.req(api::ListApiKeysRequest {}))
        .await?
        .into_inner();
    let s = raw
        .revoke_api_key(other.req(api::RevokeApiKeyRequest {
            id: acme_keys.keys[0].id.clone(),
        }))
        .await
        .expect_err("revoking another tenant's key");
    assert_eq!(s.code(), Code::NotFound);

    // Dead letters of one tenant are not another's to list, replay or purge.
    a.register(feature(
        "broken",
        "test.probe@1",
        &[("fail", "permanent")],
        &[],
        600_000,
    ))
    .await?;
    let r = a.get(build::sync(&["e1"], &["broken"], 10_000)).await?;
    assert_eq!(r.results[0].status(), Status::Failed);
    let theirs = raw
        .list_dead_letters(other.req(api::ListDeadLettersRequest { limit: 0 }))
        .await?
        .into_inner();
    assert_eq!(theirs.total, 0, "{theirs:?}");
    h.stop().await;
    Ok(())
}

/// Before, the registry was shared: B re-registering a feature A reads made A's next
/// read answer B's value (666 instead of 1).
pub(crate) async fn definitions_belong_to_their_tenant(b: Backend) -> anyhow::Result<()> {
    let h = Harness::with_config(b, config()).await?;
    let keys = h.running.substrate.keys.clone();
    let a = h
        .client
        .with_key(&key(&keys, "acme", &["read", "write"]).await?);
    let other = h
        .client
        .with_key(&key(&keys, "globex", &["read", "write"]).await?);
    let score = |value: &str| feature("score", "test.probe@1", &[("value", value)], &[], 600_000);
    let mine = a.register(score("1")).await?;
    let theirs = other.register(score("666")).await?;
    let version = |r: &api::RegisterFeatureResponse| r.feature.as_ref().map(|d| d.version);
    assert_eq!(version(&mine), Some(1));
    assert_eq!(
        version(&theirs),
        Some(1),
        "globex's own first version, not acme's second"
    );
    // A feature of globex reading `score` reads globex's.
    other
        .register(feature(
            "doubled",
            "num.affine@1",
            &[("scale", "2")],
            &[("x", "score")],
            600_000,
        ))
        .await?;

    let read = |c: &TestClient, f: &'static str| {
        let c = c.clone();
        async move {
            let r = c.get(build::sync(&["e1"], &[f], 10_000)).await?;
            assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
            anyhow::Ok(build::f64_of(&r.results[0]))
        }
    };
    assert_eq!(read(&a, "score").await?, Some(1.0));
    assert_eq!(read(&other, "score").await?, Some(666.0));
    assert_eq!(read(&other, "doubled").await?, Some(1332.0));
    assert_eq!(
        read(&a, "score").await?,
        Some(1.0),
        "acme's value is acme's"
    );
    let missing = a
        .get(build::get(&["e1"], &["doubled"]))
        .await
        .expect_err("not acme's");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // Listings and stats are per tenant.
    let listed = |c: &TestClient| {
        let c = c.clone();
        async move {
            let l = c
                .raw
                .clone()
                .list_features(c.req(api::ListFeaturesRequest::default()))
                .await?
                .into_inner();
            let mut names: Vec<String> = l.features.iter().map(|f| f.name.clone()).collect();
            names.sort();
            anyhow::Ok(names)
        }
    };
    assert_eq!(listed(&a).await?, ["score"]);
    assert_eq!(listed(&other).await?, ["doubled", "score"]);
    let described = a
        .raw
        .clone()
        .describe_feature(a.req(api::DescribeFeatureRequest {
            feature: "score".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(
        described.definition.as_ref().map(|d| d.tenant.as_str()),
        Some("acme")
    );
    assert!(
        described.dependents.is_empty(),
        "globex's `doubled` is not acme's dependent"
    );
    let stats = described.stats.unwrap_or_default();
    assert_eq!(
        stats.misses + stats.hits,
        2,
        "acme's two reads only: {stats:?}"
    );
    h.stop().await;
    Ok(())
}

/// A feature shared read-only with a named tenant: that tenant reads the owner's
/// values as `owner/name` (SYNC and through a ticket of its own), sees it listed and
/// described without the owner's traffic; nobody else sees it; nobody but the owner
/// changes it.
pub(crate) async fn a_feature_is_shared_read_only_with_named_tenants(
    b: Backend,
) -> anyhow::Result<()> {
    let h = Harness::with_config(b, config()).await?;
    let keys = h.running.substrate.keys.clone();
    let owner = h
        .client
        .with_key(&key(&keys, "acme", &["read", "write"]).await?);
    let reader = h
        .client
        .with_key(&key(&keys, "globex", &["read", "write"]).await?);
    let stranger = h.client.with_key(&key(&keys, "initech", &["read"]).await?);
    let mut score = feature("score", "test.probe@1", &[("value", "7")], &[], 600_000);
    score.shared_with = vec!["globex".into()];
    owner.register(score).await?;
    let slow = feature("slow", "test.probe@1", &[("delay_ms", "300")], &[], 600_000);
    owner
        .register(api::FeatureDefinition {
            shared_with: vec!["globex".into()],
            ..slow
        })
        .await?;

    let r = reader
        .get(build::sync(&["e1"], &["acme/score"], 10_000))
        .await?;
    assert_eq!(r.results[0].status(), Status::Ready, "{r:?}");
    assert_eq!(build::f64_of(&r.results[0]), Some(7.0));
    assert_eq!(
        r.results[0].feature, "acme/score",
        "named as the reader asked"
    );
    // A pending read gets a ticket of the reader's, not the owner's.
    let pending = reader.get(build::get(&["e2"], &["acme/slow"])).await?;
    assert!(!pending.ticket.is_empty());
    let done = reader
        .until_done(&pending.ticket, Duration::from_secs(10))
        .await?;
    assert_eq!(done.results[0].status(), Status::Ready, "{done:?}");
    let s = owner
        .ticket(&pending.ticket)
        .await
        .expect_err("the reader's ticket");
    assert_eq!(s.code(), Code::NotFound);

    // Nobody else reads it; a feature that does not exist answers alike.
    let refused = stranger
        .get(build::get(&["e1"], &["acme/score"]))
        .await
        .expect_err("not shared");
    let missing = stranger
        .get(build::get(&["e1"], &["acme/nothing"]))
        .await
        .expect_err("absent");
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(
        refused.message().replace("score", "X"),
        missing.message().replace("nothing", "X")
    );
    // One namespace per call.
    reader
        .register(feature("own", "test.probe@1", &[], &[], 600_000))
        .await?;
    let mixed = reader
        .get(build::get(&["e1"], &["own", "acme/score"]))
        .await
        .expect_err("mixed");
    assert_eq!(mixed.code(), Code::InvalidArgument);
    // Read-only: no name with an owner can be registered or invalidated by the reader.
    let s = reader
        .register(feature("acme/score", "test.probe@1", &[], &[], 600_000))
        .await
        .expect_err("a foreign name");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = reader
        .raw
        .clone()
        .invalidate(reader.req(api::InvalidateRequest {
            feature: "acme/score".into(),
            entity_id: String::new(),
        }))
        .await
        .expect_err("invalidating the owner's values");
    assert!(
        matches!(s.code(), Code::NotFound | Code::InvalidArgument),
        "{s:?}"
    );

    let listed = reader
        .raw
        .clone()
        .list_features(reader.req(api::ListFeaturesRequest::default()))
        .await?
        .into_inner();
    let mut names: Vec<&str> = listed.features.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["acme/score", "acme/slow", "own"]);
    let described = reader
        .raw
        .clone()
        .describe_feature(reader.req(api::DescribeFeatureRequest {
            feature: "acme/score".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(described.definition.map(|d| d.tenant), Some("acme".into()));
    assert!(
        described.stats.is_none(),
        "the owner's traffic is the owner's"
    );
    h.stop().await;
    Ok(())
}
