//! The one boundary where errors become gRPC statuses: every [`Error`] here, and the
//! one error tonic makes before a call reaches us — a request over the decoding limit —
//! rewritten by [`RequestSizeLayer`] to RESOURCE_EXHAUSTED naming the setting.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use fstore_substrate::Error as SubstrateError;
use tonic::{Code, Status};

use crate::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument(_) | Error::Definition(_) => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::NoWorker { .. } => Code::Unavailable,
            Error::Listen { .. } | Error::Tls(_) | Error::Internal(_) => Code::Internal,
            Error::Substrate(SubstrateError::Unavailable(_)) => Code::Unavailable,
            Error::Substrate(SubstrateError::QueueFull { .. }) => Code::ResourceExhausted,
            Error::QuotaExceeded { .. } => Code::ResourceExhausted,
            Error::Substrate(SubstrateError::TooLarge { .. }) => Code::InvalidArgument,
            Error::Substrate(SubstrateError::Codec(_)) => Code::Internal,
            Error::Substrate(SubstrateError::Cursor(_)) => Code::InvalidArgument,
            Error::Substrate(SubstrateError::Storage(_)) => Code::Unavailable,
        };
        let message = match &e {
            // Name the setting the operator can raise.
            Error::Substrate(SubstrateError::QueueFull { kind, .. }) => {
                let setting = match kind {
                    fstore_substrate::error::QueueLimit::PerFlow => "queue.max_queued_per_flow",
                    fstore_substrate::error::QueueLimit::PerTenant => "queue.max_queued_per_tenant",
                };
                format!("{e} (setting {setting})")
            }
            Error::QuotaExceeded { tenant, .. } => {
                format!("{e} (setting quotas.calls_per_second, or quotas.tenants.\"{tenant}\")")
            }
            _ => e.to_string(),
        };
        let mut status = Status::new(code, message);
        let retry_after_ms = match &e {
            Error::Substrate(SubstrateError::QueueFull { retry_after_ms, .. })
            | Error::QuotaExceeded { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        };
        if let Some(ms) = retry_after_ms
            && let Ok(v) = ms.to_string().parse()
        {
            status.metadata_mut().insert("retry-after-ms", v);
        }
        status
    }
}

/// The code's name as the gRPC spec writes it (`NOT_FOUND`): what the CLI prints and
/// the HTTP API's error bodies carry.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Rewrites tonic's OUT_OF_RANGE "decoded message length too large" — answered before
/// the call is decoded, so an oversize request costs nothing — into RESOURCE_EXHAUSTED
/// that names `limits.max_request_bytes`. Our own calls never answer OUT_OF_RANGE.
#[derive(Debug, Clone, Copy)]
pub struct RequestSizeLayer {
    limit: usize,
}

impl RequestSizeLayer {
    pub fn new(limit: usize) -> Self {
        RequestSizeLayer { limit }
    }
}

impl<S> tower::Layer<S> for RequestSizeLayer {
    type Service = RequestSize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSize {
            inner,
            limit: self.limit,
        }
    }
}

/// The service [`RequestSizeLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct RequestSize<S> {
    inner: S,
    limit: usize,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, B> tower::Service<Req> for RequestSize<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let limit = self.limit;
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut response = answer.await?;
            oversize_to_exhausted(response.headers_mut(), limit);
            Ok(response)
        })
    }
}

/// The header rewrite of [`RequestSizeLayer`].
fn oversize_to_exhausted(headers: &mut http::HeaderMap, limit: usize) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != Code::OutOfRange || !status.message().contains("decoded message length") {
        return;
    }
    let found = status
        .message()
        .split("found ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("more");
    let exhausted = Status::resource_exhausted(format!(
        "the request is {found} bytes, more than limits.max_request_bytes ({limit}); \
         split it into several calls"
    ));
    if exhausted.add_header(headers).is_err() {
        tracing::warn!("could not rewrite an oversize request's status");
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
        let s: Status = Error::Internal("planning order broke".into()).into();
        assert_eq!(s.code(), Code::Internal);
        let s: Status = Error::Substrate(SubstrateError::QueueFull {
            kind: fstore_substrate::error::QueueLimit::PerTenant,
            scope: "flow f@1 for tenant t".into(),
            limit: 3,
            retry_after_ms: 250,
        })
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "the queue is full: flow f@1 for tenant t has 3 jobs waiting or running, the most allowed per tenant of a flow; retry after 250 ms (setting queue.max_queued_per_tenant)"
        );
        assert_eq!(
            s.metadata()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok()),
            Some("250")
        );
    }

    #[test]
    fn oversize_requests_name_the_limit() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 20971520 bytes, the limit is: 16777216 bytes",
        )
        .add_header(&mut headers)
        .expect("header");
        oversize_to_exhausted(&mut headers, 16_777_216);
        let s = Status::from_header_map(&headers).expect("status");
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "the request is 20971520 bytes, more than limits.max_request_bytes (16777216); split it into several calls"
        );
        // Anything else passes untouched.
        let mut headers = http::HeaderMap::new();
        Status::not_found("no feature")
            .add_header(&mut headers)
            .expect("header");
        oversize_to_exhausted(&mut headers, 1);
        assert_eq!(
            Status::from_header_map(&headers).map(|s| s.code()),
            Some(Code::NotFound)
        );
    }
}
