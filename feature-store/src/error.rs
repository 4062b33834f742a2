//! Errors of the feature store. They become gRPC statuses in one place: [`crate::status`].

/// What went wrong serving a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A feature, version or ticket that does not exist (for this tenant).
    #[error("{0}")]
    NotFound(String),
    /// A request that can never succeed as sent: the message says what to change.
    #[error("{0}")]
    InvalidArgument(String),
    /// A feature definition the registry refuses: a cycle, an unknown dependency or
    /// flow, a type mismatch.
    #[error("feature definition refused: {0}")]
    Definition(String),
    /// A definition whose flow workers have served but none serves right now (none
    /// started yet, all restarting, or cut off from NATS): worth retrying.
    #[error(
        "feature `{feature}`: no worker serves flow {flow} right now (none has sent a heartbeat lately); start one and retry, or register with force"
    )]
    NoWorker { feature: String, flow: String },
    /// A call that is well formed but cannot be done in the state things are in (a
    /// rollback to a generation the gate rejected): the message says what state it needs.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A call without a valid credential (or without a tenant where one is required).
    #[error("{0}")]
    Unauthenticated(String),
    /// A caller whose key does not allow the call: another role, another tenant.
    #[error("{0}")]
    PermissionDenied(String),
    /// A tenant over its calls per second on this replica.
    #[error(
        "tenant `{tenant}` is over its quota of {rate} calls per second (burst {burst}); retry after {retry_after_ms} ms"
    )]
    QuotaExceeded {
        tenant: String,
        rate: f64,
        burst: u32,
        retry_after_ms: u64,
    },
    /// A listener could not be bound: the address is taken, malformed or not ours.
    #[error("cannot listen on {addr}: {source}; pick another address")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// TLS files that cannot be used (at start, or at a reload that keeps the old ones).
    #[error("TLS: {0}; fix the tls.* setting that names it")]
    Tls(String),
    /// A broken invariant of the feature store itself: never the caller's fault.
    #[error("internal error: {0}; please report it")]
    Internal(String),
    #[error(transparent)]
    Substrate(#[from] fstore_substrate::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
