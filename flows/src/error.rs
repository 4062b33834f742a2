//! Flow errors: each says whether trying again can help.

/// Why a flow could not produce a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A passing condition (a busy device, a timeout); the substrate retries with backoff.
    #[error("{0}")]
    Transient(String),
    /// The input or params cannot work; retrying gives the same answer, so the job ends.
    #[error("{0}")]
    Permanent(String),
}

impl Error {
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_))
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Transient(m) | Error::Permanent(m) => m,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Permanent(format!("tensor computation failed: {e}"))
    }
}
