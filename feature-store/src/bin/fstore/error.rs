//! How the `fstore` binary reports a failed verb.

/// An argument or file the user must change; no call was made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A [`Usage`] error, ready for `?`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// The cause chain, a gRPC status as `Code: message` (as before the split).
pub fn text(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            parts.push(format!("{:?}: {}", s.code(), s.message()));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}
