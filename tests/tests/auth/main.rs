//! The trust boundary, black-box over gRPC on every backend (and over TLS): two
//! tenants, keys of each role. One module per concept:
//! - [`roles`]: every RPC of the service descriptor refused without a key and to a key
//!   of another role; keys revoked live; `serve` starting closed and the CLI's keys
//! - [`tenants`]: nothing of another tenant reachable or revealed; definitions per
//!   tenant; features shared read-only
//! - [`tls`]: plaintext and strangers refused, certificates reloaded, NATS credentials

mod roles;
mod tenants;
mod tls;

use roles::*;
use tenants::*;

use std::sync::Arc;
use std::time::Duration;

use fstore_substrate::KeyStore;
use fstore_tests::test_config;

const CACHE_TTL: Duration = Duration::from_millis(200);

pub(crate) fn config() -> fstore::Config {
    let mut c = test_config();
    c.auth.enabled = Some(true);
    c.auth.cache_ttl = CACHE_TTL;
    c.server.default_tenant = None;
    c
}

pub(crate) async fn key(
    keys: &Arc<dyn KeyStore>,
    tenant: &str,
    roles: &[&str],
) -> anyhow::Result<String> {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    Ok(
        fstore::auth::create_key(keys.as_ref(), tenant, &roles, "test")
            .await?
            .secret,
    )
}

fstore_tests::on_every_backend!(
    tls;
    a_feature_is_shared_read_only_with_named_tenants,
    definitions_belong_to_their_tenant,
    every_rpc_is_checked,
    tenants_cannot_see_each_other,
    a_revoked_key_is_refused_by_every_replica,
);
