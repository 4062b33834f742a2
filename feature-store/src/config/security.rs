//! The security settings: who may call (`[auth]`).

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
