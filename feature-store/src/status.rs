//! The one boundary where errors become gRPC statuses.

use fstore_substrate::Error as SubstrateError;
use tonic::{Code, Status};

use crate::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument(_) | Error::Definition(_) => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Substrate(SubstrateError::Unavailable(_)) => Code::Unavailable,
            Error::Substrate(SubstrateError::QueueFull { .. }) => Code::ResourceExhausted,
            Error::Substrate(SubstrateError::Codec(_)) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let Error::Substrate(SubstrateError::QueueFull { retry_after_ms, .. }) = &e
            && let Ok(v) = retry_after_ms.to_string().parse()
        {
            status.metadata_mut().insert("retry-after-ms", v);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let s: Status = Error::NotFound("no feature `x`".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "no feature `x`");
        let s: Status = Error::Substrate(SubstrateError::QueueFull {
            scope: "flow f".into(),
            limit: 3,
            retry_after_ms: 250,
        })
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.metadata()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok()),
            Some("250")
        );
    }
}
