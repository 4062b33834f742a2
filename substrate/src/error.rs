//! Substrate errors.

/// What went wrong in the substrate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached; the caller may retry later.
    #[error("the compute substrate is unavailable: {0}")]
    Unavailable(String),
    /// A bounded queue is full; nothing was enqueued.
    #[error(
        "the queue for {scope} is full ({limit} jobs waiting); retry after {retry_after_ms} ms"
    )]
    QueueFull {
        scope: String,
        limit: u64,
        retry_after_ms: u64,
    },
    /// Stored bytes could not be decoded: a version mismatch or corruption.
    #[error("stored data could not be decoded: {0}")]
    Codec(String),
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Codec(e.to_string())
    }
}
