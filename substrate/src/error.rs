//! Substrate errors.

/// What went wrong in the substrate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached; the caller may retry later.
    #[error("the compute substrate is unavailable: {0}")]
    Unavailable(String),
    /// A bounded queue is full; nothing was enqueued. Both backends count the same
    /// thing: jobs accepted and not yet settled (waiting or running).
    #[error(
        "the queue is full: {scope} has {limit} jobs waiting or running, the most allowed {kind}; retry after {retry_after_ms} ms"
    )]
    QueueFull {
        kind: QueueLimit,
        /// The flow (and tenant) whose queue is full.
        scope: String,
        limit: u64,
        retry_after_ms: u64,
    },
    /// A message larger than the backend carries (NATS: the server's `max_payload`):
    /// nothing was stored, and sending it again cannot help.
    #[error(
        "{what} is {bytes} bytes, more than the {limit} bytes a NATS message may carry (the server's max_payload); send less per call, or raise max_payload on the NATS servers"
    )]
    TooLarge {
        what: Message,
        bytes: usize,
        limit: usize,
    },
    /// A log read that starts where the log has nothing to give: ahead of its end, or
    /// before the oldest record it still keeps. The message says where the log stands.
    #[error("{0}")]
    Cursor(String),
    /// The embedded log's files could not be written or read.
    #[error(
        "the feature log's files failed: {0}; check the log directory (`log.dir`) and its disk"
    )]
    Storage(String),
    /// Stored bytes could not be decoded: a version mismatch or corruption.
    #[error("stored data could not be decoded: {0}")]
    Codec(String),
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Codec(e.to_string())
    }
}

/// Which queue bound a [`Error::QueueFull`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// Jobs of one flow, all tenants together.
    PerFlow,
    /// Jobs of one flow for one tenant.
    PerTenant,
}

impl std::fmt::Display for QueueLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueLimit::PerFlow => "per flow",
            QueueLimit::PerTenant => "per tenant of a flow",
        })
    }
}

/// What a backend stores as one message, for [`Error::TooLarge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A computed value's envelope.
    Value,
    /// A compute job, with its ready inputs inline.
    Job,
    /// A pending request's ticket: its entities and their inputs.
    Ticket,
    /// A feature log record: a value with the request inputs it read.
    LogRecord,
    /// An entity's stored request-time inputs.
    Inputs,
    /// A chunk of a backfill's entities, with their inputs.
    BackfillChunk,
    /// The values of one backfill chunk in a staged generation.
    GenerationChunk,
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Value => "the computed value",
            Message::Job => "the compute job (its ready inputs inline)",
            Message::Ticket => "the pending request's ticket (its entities and inputs)",
            Message::LogRecord => "the feature log record (the value and the inputs it read)",
            Message::Inputs => "the entity's stored inputs",
            Message::BackfillChunk => "a chunk of the backfill's entities (with their inputs)",
            Message::GenerationChunk => {
                "a chunk of a staged generation's values (lower backfill.chunk_entities)"
            }
        })
    }
}
