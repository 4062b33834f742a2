//! Who is calling: API keys, each of one tenant with a set of [`Role`]s. A key is
//! `fsk_<id>_<secret>`; the store keeps its public id and the SHA-256 of the whole key
//! ([`fstore_substrate::KeyStore`], shared by every replica), never the key. A replica
//! remembers what a presented key resolved to for `auth.cache_ttl`, so a call costs a
//! cache look-up, and a revocation is seen everywhere within that time.
//!
//! - [`policy`]: the role each RPC needs (default deny: an RPC missing there is refused)
//! - [`layer`]: the tower layer that authenticates every call before it is decoded

pub mod layer;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use fstore_proto::api;
use fstore_proto::wire::ApiKeyRecord;
use fstore_substrate::KeyStore;
use sha2::{Digest, Sha256};

use crate::names::check_tenant;
use crate::{Error, Result};

pub use layer::AuthLayer;

/// What a key allows. Roles do not imply each other: a key that reads and writes holds
/// both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Get, fetch, watch, subscribe, export, describe.
    Read,
    /// Register features, put inputs, invalidate, backfill, publish, rollback.
    Write,
    /// Dead letters and keys.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("unknown role `{text}`: give read, write or admin"))
            })
    }
}

/// An authenticated caller: the tenant its key belongs to and what the key allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub roles: Vec<Role>,
    pub key_id: String,
}

impl Principal {
    pub fn holds(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The prefix of every key: a key found in a log or a repository is recognisable.
const PREFIX: &str = "fsk_";

/// Checks presented keys against the key store, remembering each answer briefly.
pub struct Authenticator {
    keys: Arc<dyn KeyStore>,
    /// Presented key → who it is (or None: not a valid key), for `auth.cache_ttl`.
    cache: moka::future::Cache<String, Option<Arc<Principal>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(keys: Arc<dyn KeyStore>, cache_ttl: Duration) -> Self {
        Authenticator {
            keys,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// Who `presented` is: UNAUTHENTICATED unless it is a stored, unrevoked key. A store
    /// that does not answer is UNAVAILABLE and is not remembered.
    pub async fn authenticate(&self, presented: &str) -> Result<Arc<Principal>> {
        let found = self
            .cache
            .try_get_with_by_ref(presented, resolve(self.keys.as_ref(), presented))
            .await
            .map_err(|e| match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(shared) => {
                    Error::Substrate(fstore_substrate::Error::Unavailable(shared.to_string()))
                }
            })?;
        found.ok_or_else(|| {
            Error::Unauthenticated(
                "the API key is not valid (unknown, malformed or revoked): ask an admin of \
                 your tenant for a key (`fstore auth create-key`)"
                    .into(),
            )
        })
    }
}

/// The principal of a presented key, None if it is not a valid one.
async fn resolve(keys: &dyn KeyStore, presented: &str) -> Result<Option<Arc<Principal>>> {
    let Some(id) = key_id(presented) else {
        return Ok(None);
    };
    let Some(record) = keys.get(id).await? else {
        return Ok(None);
    };
    let Some(key) = record.key else {
        return Ok(None);
    };
    // Both sides are digests of a high-entropy secret: comparing them leaks nothing
    // about the secret.
    if key.revoked_at_ms != 0 || record.sha256.as_slice() != digest(presented).as_slice() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Principal {
        tenant: key.tenant,
        roles: key
            .roles
            .iter()
            .filter_map(|r| Role::parse(r).ok())
            .collect(),
        key_id: key.id,
    })))
}

/// The public id inside `fsk_<id>_<secret>`.
fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id) && !secret.is_empty()).then_some(id)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A key just created: its listing and the whole key, which is never shown again.
#[derive(Debug, Clone)]
pub struct Created {
    pub key: api::ApiKey,
    pub secret: String,
}

/// Creates a key of `tenant` with `roles` (at least one).
pub async fn create_key(
    keys: &dyn KeyStore,
    tenant: &str,
    roles: &[String],
    label: &str,
) -> Result<Created> {
    check_tenant(tenant)?;
    if roles.is_empty() {
        return Err(Error::InvalidArgument(
            "a key needs at least one role: read, write or admin".into(),
        ));
    }
    let mut parsed = roles
        .iter()
        .map(|r| Role::parse(r))
        .collect::<Result<Vec<_>>>()?;
    parsed.sort();
    parsed.dedup();
    if label.len() > 200 {
        return Err(Error::InvalidArgument(
            "a key's label is at most 200 bytes".into(),
        ));
    }
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    for buf in [&mut id[..], &mut secret[..]] {
        getrandom::fill(buf)
            .map_err(|e| Error::Internal(format!("the system's random source failed: {e}")))?;
    }
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = format!(
        "{PREFIX}{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let key = api::ApiKey {
        id,
        tenant: tenant.to_string(),
        roles: parsed.iter().map(|r| r.as_str().to_string()).collect(),
        label: label.to_string(),
        created_at_ms: fstore_substrate::time::now_ms(),
        revoked_at_ms: 0,
    };
    keys.put(ApiKeyRecord {
        key: Some(key.clone()),
        sha256: digest(&secret).to_vec(),
    })
    .await?;
    Ok(Created { key, secret })
}

/// Creates the key an admin of `caller` asked for: of its own tenant only.
pub async fn create_key_for(
    keys: &dyn KeyStore,
    caller: &str,
    req: &api::CreateApiKeyRequest,
) -> Result<api::CreatedApiKey> {
    if !req.tenant.is_empty() && req.tenant != caller {
        return Err(Error::PermissionDenied(format!(
            "an admin key of tenant `{caller}` creates keys of `{caller}` only; \
             keys of `{}` come from its own admins",
            req.tenant
        )));
    }
    let made = create_key(keys, caller, &req.roles, &req.label).await?;
    Ok(api::CreatedApiKey {
        key: Some(made.key),
        secret: made.secret,
    })
}

/// The keys of `tenant`, oldest first.
pub async fn list_keys(keys: &dyn KeyStore, tenant: &str) -> Result<Vec<api::ApiKey>> {
    let mut out: Vec<api::ApiKey> = keys
        .list()
        .await?
        .into_iter()
        .filter_map(|r| r.key)
        .filter(|k| k.tenant == tenant)
        .collect();
    out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    Ok(out)
}

/// Revokes key `id` of `tenant`; a key of another tenant is answered as unknown.
pub async fn revoke_key(keys: &dyn KeyStore, tenant: &str, id: &str) -> Result<api::ApiKey> {
    let unknown = || {
        Error::NotFound(format!(
            "no API key `{id}` in this tenant; `fstore auth ls` lists them"
        ))
    };
    let record = keys.get(id).await?.ok_or_else(unknown)?;
    let mut key = record.key.clone().ok_or_else(unknown)?;
    if key.tenant != tenant {
        return Err(unknown());
    }
    if key.revoked_at_ms == 0 {
        key.revoked_at_ms = fstore_substrate::time::now_ms();
        keys.put(ApiKeyRecord {
            key: Some(key.clone()),
            sha256: record.sha256,
        })
        .await?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fstore_substrate::embedded::EmbeddedKeys;

    #[tokio::test]
    async fn a_created_key_authenticates_until_revoked() {
        let keys: Arc<dyn KeyStore> = Arc::new(EmbeddedKeys::default());
        let auth = Authenticator::new(keys.clone(), Duration::from_millis(50));
        let made = create_key(
            keys.as_ref(),
            "team-a",
            &["write".into(), "read".into()],
            "ci",
        )
        .await
        .expect("created");
        assert!(made.secret.starts_with("fsk_"));
        let p = auth.authenticate(&made.secret).await.expect("valid");
        assert_eq!(p.tenant, "team-a");
        assert_eq!(p.roles, vec![Role::Read, Role::Write]);
        // The store never holds the key itself.
        let stored = keys.get(&made.key.id).await.expect("get").expect("stored");
        assert!(!format!("{stored:?}").contains(&made.secret[made.secret.len() - 20..]));

        // A wrong secret with a real id, and text that is no key, are refused.
        let forged = format!("fsk_{}_{}", made.key.id, "A".repeat(43));
        for bad in [
            forged.as_str(),
            "",
            "Bearer",
            "fsk_zz_x",
            "fsk_0123456789abcdef_",
        ] {
            let e = auth.authenticate(bad).await.expect_err(bad);
            assert!(matches!(e, Error::Unauthenticated(_)), "{bad}: {e}");
        }

        // A foreign tenant cannot revoke it; its own can, and the cache forgets it.
        assert!(matches!(
            revoke_key(keys.as_ref(), "team-b", &made.key.id).await,
            Err(Error::NotFound(_))
        ));
        let revoked = revoke_key(keys.as_ref(), "team-a", &made.key.id)
            .await
            .expect("revoked");
        assert!(revoked.revoked_at_ms > 0);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(auth.authenticate(&made.secret).await.is_err());
        let listed = list_keys(keys.as_ref(), "team-a").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(
            list_keys(keys.as_ref(), "team-b")
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn keys_need_known_roles() {
        let keys = EmbeddedKeys::default();
        assert!(create_key(&keys, "t", &[], "").await.is_err());
        assert!(create_key(&keys, "t", &["root".into()], "").await.is_err());
        assert!(
            create_key(&keys, "no spaces", &["read".into()], "")
                .await
                .is_err()
        );
    }
}
