//! TLS itself: plaintext and clients without a certificate refused, a rotated
//! certificate served without a restart, NATS credentials checked at start.

use std::time::Duration;

use fstore_tests::harness::{Backend, Harness};
use fstore_tests::wait_until;

use super::config;

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
    let secret = super::key(&keys, "acme", &["read"]).await?;
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
