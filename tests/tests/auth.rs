//! The trust boundary, black-box over gRPC on every backend: two tenants, keys of each
//! role. Every RPC of the service descriptor is refused without a key and to a key of
//! another role; nothing of another tenant is reachable or revealed; a revoked key is
//! refused by every replica within the cache's time.

use std::sync::Arc;
use std::time::Duration;

use fstore::auth::{self, Role, policy};
use fstore_proto::api::{self, Status};
use fstore_substrate::KeyStore;
use fstore_tests::build::{self, feature};
use fstore_tests::harness::{Backend, Harness};
use fstore_tests::{TestClient, test_config, wait_until};
use prost::Message;
use tonic::Code;

const CACHE_TTL: Duration = Duration::from_millis(200);

fn config() -> fstore::Config {
    let mut c = test_config();
    c.auth.enabled = Some(true);
    c.auth.cache_ttl = CACHE_TTL;
    c.server.default_tenant = None;
    c
}

async fn key(keys: &Arc<dyn KeyStore>, tenant: &str, roles: &[&str]) -> anyhow::Result<String> {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    Ok(auth::create_key(keys.as_ref(), tenant, &roles, "test")
        .await?
        .secret)
}

/// Every method of `featurestore.v1.FeatureStore`, from the descriptor the server serves.
fn methods() -> anyhow::Result<Vec<String>> {
    let set = prost_types::FileDescriptorSet::decode(fstore_proto::FILE_DESCRIPTOR_SET)?;
    Ok(set
        .file
        .iter()
        .filter(|f| f.package() == "featurestore.v1")
        .flat_map(|f| f.service.iter())
        .filter(|s| s.name() == "FeatureStore")
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect())
}

/// Any message: an empty request decodes as every request type, and any answer decodes
/// as it (unknown fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct Anything {}

/// Calls `method` with an empty request as `client`'s caller: the status it ends with
/// (OK for an answer; a stream still open after a moment counts as admitted).
async fn call(client: &TestClient, method: &str) -> anyhow::Result<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(client.channel.clone());
    grpc.ready().await?;
    let path = format!("{}{method}", policy::SERVICE_PATH).parse()?;
    let codec = tonic_prost::ProstCodec::<Anything, Anything>::default();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        grpc.unary(client.req(Anything {}), path, codec),
    )
    .await;
    Ok(match answer {
        Ok(Ok(_)) | Err(_) => tonic::Status::ok("admitted"),
        Ok(Err(s)) => s,
    })
}

/// Whether `s` is a refusal by the trust boundary (as opposed to the call's own answer).
fn refused_by_auth(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied)
}

async fn every_rpc_is_checked(b: Backend) -> anyhow::Result<()> {
    let h = Harness::with_config(b, config()).await?;
    let keys = h.running.substrate.keys.clone();
    let methods = methods()?;
    assert!(methods.len() >= 27, "{methods:?}");
    let anonymous = h.client.clone();
    let mut by_role = Vec::new();
    for role in Role::ALL {
        let k = key(&keys, "acme", &[role.as_str()]).await?;
        by_role.push((role, h.client.with_key(&k)));
    }
    let forged = h.client.with_key("fsk_0123456789abcdef_not-a-real-secret");
    for method in &methods {
        let needed = policy::required(method);
        assert!(needed.is_some(), "{method} has no role: refused to all");
        for c in [&anonymous, &forged] {
            let s = call(c, method).await?;
            assert_eq!(s.code(), Code::Unauthenticated, "{method}: {}", s.message());
        }
        for (role, client) in &by_role {
            let s = call(client, method).await?;
            if Some(*role) == needed {
                assert!(
                    !refused_by_auth(&s),
                    "{method} refused to its role {role:?}: {s:?}"
                );
            } else {
                assert_eq!(
                    s.code(),
                    Code::PermissionDenied,
                    "{method} with a {role:?} key: {}",
                    s.message()
                );
                assert!(
                    s.message().contains(needed.map_or("", Role::as_str)),
                    "{s:?}"
                );
            }
        }
    }
    // Health stays open: load balancers probe it without a key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.client.channel.clone());
    let served = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?;
    assert_eq!(served.into_inner().status, 1, "SERVING");
    h.stop().await;
    Ok(())
}

async fn tenants_cannot_see_each_other(b: Backend) -> anyhow::Result<()> {
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

async fn a_revoked_key_is_refused_by_every_replica(b: Backend) -> anyhow::Result<()> {
    let h = Harness::with_config(b, config()).await?;
    let keys = h.running.substrate.keys.clone();
    let admin = h.client.with_key(&key(&keys, "acme", &["admin"]).await?);
    let (replica, other) = h.replica(config()).await?;
    // Made through the API, on one replica; used on both.
    let made = admin
        .raw
        .clone()
        .create_api_key(admin.req(api::CreateApiKeyRequest {
            tenant: String::new(),
            roles: vec!["read".into()],
            label: "reader".into(),
        }))
        .await?
        .into_inner();
    let key_id = made.key.as_ref().map(|k| k.id.clone()).unwrap_or_default();
    assert!(made.secret.starts_with(&format!("fsk_{key_id}_")));
    let readers = [
        h.client.with_key(&made.secret),
        other.with_key(&made.secret),
    ];
    for r in &readers {
        r.raw
            .clone()
            .list_features(r.req(api::ListFeaturesRequest::default()))
            .await?;
    }
    let revoked = admin
        .raw
        .clone()
        .revoke_api_key(admin.req(api::RevokeApiKeyRequest { id: key_id }))
        .await?
        .into_inner();
    assert!(revoked.revoked_at_ms > 0);
    for r in &readers {
        wait_until(
            Duration::from_secs(1),
            "the revoked key to be refused",
            || async {
                let s = r
                    .raw
                    .clone()
                    .list_features(r.req(api::ListFeaturesRequest::default()))
                    .await
                    .err()?;
                (s.code() == Code::Unauthenticated).then_some(())
            },
        )
        .await?;
    }
    replica.shutdown().await;
    h.stop().await;
    Ok(())
}

/// Before, the registry was shared: B re-registering a feature A reads made A's next
/// read answer B's value (666 instead of 1).
async fn definitions_belong_to_their_tenant(b: Backend) -> anyhow::Result<()> {
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

/// TLS itself, on a NATS harness over TLS: a plaintext client and a client without a
/// certificate are refused; a certificate rotated to a new authority on disk is served
/// to new connections within the reload interval, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_refuses_plaintext_and_strangers_and_reloads_its_certificate() -> anyhow::Result<()> {
    let certs = fstore_tests::tls::certs()?;
    // The server's own copies of its files, rotated below.
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::copy(&certs.server_cert, &cert)?;
    std::fs::copy(&certs.server_key, &key)?;
    let mut c = config();
    c.tls.reload_interval = Duration::from_millis(100);
    let h = Harness::with_config(Backend::NatsTls, c.clone()).await?;
    // The replica serves the copies.
    c.tls.cert_file = Some(cert.clone());
    c.tls.key_file = Some(key.clone());
    let (replica, _) = h.replica(c).await?;
    let url = replica.url();
    assert!(url.starts_with("https://"), "{url}");
    let keys = h.running.substrate.keys.clone();
    let secret = key_of(&keys).await?;
    let list = |tls: fstore::client::ClientTls, url: String| {
        let secret = secret.clone();
        async move {
            let c = fstore::client::Client::connect_with(&url, None, &tls)
                .await?
                .with_api_key(Some(secret));
            anyhow::Ok(c.list_features(String::new()).await?)
        }
    };
    list(certs.client(), url.clone()).await?;

    let plaintext = url.replacen("https://", "http://", 1);
    assert!(
        list(Default::default(), plaintext).await.is_err(),
        "plaintext is refused"
    );
    let stranger = fstore::client::ClientTls {
        ca_file: Some(certs.ca.clone()),
        ..Default::default()
    };
    assert!(
        list(stranger, url.clone()).await.is_err(),
        "no client certificate: refused"
    );

    // Rotate to a certificate of a new authority: clients that trust only the new one
    // get in once the replica has reloaded, without a restart.
    let [new_ca, new_cert, new_key] = fstore_tests::tls::another_authority(dir.path(), "next")?;
    let trusting_new = fstore::client::ClientTls {
        ca_file: Some(new_ca),
        ..certs.client()
    };
    assert!(
        list(trusting_new.clone(), url.clone()).await.is_err(),
        "not yet rotated"
    );
    std::fs::copy(&new_key, &key)?;
    std::fs::copy(&new_cert, &cert)?;
    wait_until(
        Duration::from_secs(5),
        "the rotated certificate to be served",
        || {
            let (tls, url) = (trusting_new.clone(), url.clone());
            let list = &list;
            async move { list(tls, url).await.ok() }
        },
    )
    .await?;
    replica.shutdown().await;
    h.stop().await;
    Ok(())
}

/// A wrong NATS password stops the process at start, saying where it could not connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_nats_password_is_refused_at_start() -> anyhow::Result<()> {
    let h = Harness::with_config(Backend::NatsTls, config()).await?;
    let mut c = h.fit(config())?;
    c.nats.password = Some("not-the-password".into());
    c.nats.url = h.nats.as_ref().map(|n| n.url());
    let e = fstore::server::substrate(&c)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("cannot connect to NATS")),
        "{e:?}"
    );
    h.stop().await;
    Ok(())
}

/// The binary: an embedded `fstore serve` with no keys prints one admin key of its
/// default tenant; with it the CLI makes a read key (printed once, on stdout) that
/// reads but cannot register; without a key every call is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_starts_closed_and_the_cli_manages_keys() -> anyhow::Result<()> {
    use fstore_tests::process::{Proc, free_port, fstore_binary};
    let dir = tempfile::tempdir()?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let serve = Proc::fstore("serve", &["serve", "--listen", &listen], &[], dir.path())?;
    let admin = wait_until(
        Duration::from_secs(30),
        "serve to print its first key",
        || async {
            let log = serve.log_text();
            let line = log
                .lines()
                .find(|l| l.trim_start().starts_with("FSTORE_API_KEY="))?;
            Some(
                line.trim()
                    .trim_start_matches("FSTORE_API_KEY=")
                    .to_string(),
            )
        },
    )
    .await?;
    let addr = format!("http://{listen}");
    let cli = |key: &str, args: &[&str]| {
        std::process::Command::new(fstore_binary()?)
            .args(["--addr", &addr])
            .args(args)
            .env("FSTORE_API_KEY", key)
            .output()
            .map_err(anyhow::Error::from)
    };
    let made = cli(
        &admin,
        &["auth", "create-key", "--role", "read", "--label", "cli"],
    )?;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let reader = String::from_utf8(made.stdout)?.trim().to_string();
    assert!(reader.starts_with("fsk_"), "{reader}");
    let listed = cli(&reader, &["ls"])?;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let file = dir.path().join("f.toml");
    std::fs::write(
        &file,
        "[[feature]]\nname = \"a\"\nentity_type = \"doc\"\nflow = \"test.probe@1\"\nttl = \"1m\"\n",
    )?;
    let file = file.display().to_string();
    let refused = cli(&reader, &["register", &file])?;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("write"), "a read key cannot register: {said}");
    let anonymous = cli("", &["ls"])?;
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("no credential"));
    let keys = cli(&admin, &["--json", "auth", "ls"])?;
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout)?;
    assert_eq!(keys.as_array().map(Vec::len), Some(2), "{keys}");
    Ok(())
}

async fn key_of(keys: &Arc<dyn KeyStore>) -> anyhow::Result<String> {
    key(keys, "acme", &["read"]).await
}

/// A feature shared read-only with a named tenant: that tenant reads the owner's
/// values as `owner/name` (SYNC and through a ticket of its own), sees it listed and
/// described without the owner's traffic; nobody else sees it; nobody but the owner
/// changes it.
async fn a_feature_is_shared_read_only_with_named_tenants(b: Backend) -> anyhow::Result<()> {
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

fstore_tests::on_every_backend!(
    tls;
    a_feature_is_shared_read_only_with_named_tenants,
    definitions_belong_to_their_tenant,
    every_rpc_is_checked,
    tenants_cannot_see_each_other,
    a_revoked_key_is_refused_by_every_replica,
);
