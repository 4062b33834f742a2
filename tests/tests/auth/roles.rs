//! Roles: every RPC of the service descriptor checked, keys revoked live, and the
//! binary's keys (`serve` starts closed; `fstore auth`).

use std::time::Duration;

use fstore::auth::{Role, policy};
use fstore_proto::api;
use fstore_tests::TestClient;
use fstore_tests::harness::{Backend, Harness};
use fstore_tests::wait_until;
use prost::Message;
use tonic::Code;

use super::{config, key};

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

pub(crate) async fn every_rpc_is_checked(b: Backend) -> anyhow::Result<()> {
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

pub(crate) async fn a_revoked_key_is_refused_by_every_replica(b: Backend) -> anyhow::Result<()> {
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

/// The binary: an embedded `fstore serve` with no keys prints one admin key of its
/// default tenant; with it the CLI makes a read key (printed once, on stdout) that
/// reads but cannot register; without a key every call is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_starts_closed_and_the_cli_manages_keys() -> anyhow::Result<()> {
    use fstore_tests::process::{Proc, fstore_binary};
    let dir = tempfile::tempdir()?;
    let args = ["serve", "--listen", "127.0.0.1:0"];
    let mut serve = Proc::fstore("serve", &args, &[], dir.path())?;
    let addr = serve.listening(Duration::from_secs(30)).await?;
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
