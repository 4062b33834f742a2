//! The security settings: who may call (`[auth]`) and how the listener encrypts
//! (`[tls]`). The NATS connection's TLS and credentials are `nats.*` keys.

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
