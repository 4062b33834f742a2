//! The trust boundary's settings: who may call (`[auth]`), how the listener encrypts
//! (`[tls]`) and how much each tenant may ask (`[quotas]`). The NATS connection's TLS
//! and credentials are `nats.*` keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Authentication of callers by API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether calls need an API key. Unset: on for `serve`, off for `dev` (which says
    /// so when it starts) and for a server built in code with `enabled` left unset: on.
    pub enabled: Option<bool>,
    /// How long a replica remembers what a presented key resolved to: the longest a
    /// revoked key is still accepted.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: None,
            cache_ttl: Duration::from_secs(1),
        }
    }
}

impl AuthConfig {
    /// Whether calls need a key: on unless turned off.
    pub fn required(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// TLS of the gRPC listener (rustls). Off without `cert_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Clients must present a certificate this CA signed (mTLS); none: any client.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked: a changed certificate is served to new
    /// connections without a restart.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval: Duration::from_secs(1),
        }
    }
}

impl TlsConfig {
    pub(super) fn validate(&self) -> Result<(), super::Error> {
        let rule = |text: &str| Err(super::Error::Rule(text.to_string()));
        if self.cert_file.is_some() != self.key_file.is_some() {
            return rule("tls.cert_file and tls.key_file go together");
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            return rule(
                "tls.client_ca_file needs tls.cert_file and tls.key_file: mTLS is TLS first",
            );
        }
        if self.reload_interval.is_zero() {
            return rule("tls.reload_interval must be above zero");
        }
        Ok(())
    }
}

/// How much one tenant may ask of one replica: calls per second, with a burst. Refused
/// calls are RESOURCE_EXHAUSTED with a `retry-after-ms` hint. (Jobs waiting per tenant
/// and flow are bounded by `queue.max_queued_per_tenant`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Calls per second of each tenant on each replica; 0: unbounded.
    pub calls_per_second: f64,
    /// Calls a tenant may make at once above its rate.
    pub burst: u32,
    /// Per tenant: its own rate and burst in place of the ones above.
    pub tenants: BTreeMap<String, TenantQuota>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            calls_per_second: 0.0,
            burst: 100,
            tenants: BTreeMap::new(),
        }
    }
}

/// One tenant's quota; what it leaves unset is the `[quotas]` default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantQuota {
    pub calls_per_second: Option<f64>,
    pub burst: Option<u32>,
}

impl QuotaConfig {
    /// `tenant`'s calls per second (0: unbounded) and burst.
    pub fn of(&self, tenant: &str) -> (f64, u32) {
        let own = self.tenants.get(tenant);
        (
            own.and_then(|q| q.calls_per_second)
                .unwrap_or(self.calls_per_second),
            own.and_then(|q| q.burst).unwrap_or(self.burst),
        )
    }

    pub(super) fn validate(&self) -> Result<(), super::Error> {
        let all = std::iter::once((None, self.calls_per_second, self.burst)).chain(
            self.tenants
                .keys()
                .map(|t| (Some(t.as_str()), self.of(t).0, self.of(t).1)),
        );
        for (tenant, rate, burst) in all {
            let at = tenant.map_or("quotas".to_string(), |t| format!("quotas.tenants.\"{t}\""));
            if !rate.is_finite() || rate < 0.0 {
                return Err(super::Error::Rule(format!(
                    "{at}.calls_per_second must be 0 (unbounded) or more"
                )));
            }
            if burst == 0 {
                return Err(super::Error::Rule(format!("{at}.burst must be at least 1")));
            }
        }
        Ok(())
    }
}
