//! What goes back over HTTP: JSON bodies, server-sent events, and refusals as `{code,
//! message}` with the HTTP status of their gRPC code (as grpc-gateway maps them).

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value as Json, json};
use tonic::{Code, Status};

use super::Events;

pub(super) fn json_response(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn sse(events: Events) -> Response {
    let events = events.map(|item| {
        Ok::<_, Infallible>(match item {
            Ok((id, json)) => {
                let event = Event::default().data(json.to_string());
                match id {
                    Some(id) => event.id(id),
                    None => event,
                }
            }
            Err(status) => Event::default()
                .event("error")
                .data(error_json(&status).to_string()),
        })
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The HTTP status of a gRPC code (as grpc-gateway maps them).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn retry_after_ms(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn error_json(status: &Status) -> Json {
    let mut body = json!({
        "code": crate::status::code_name(status.code()),
        "message": status.message(),
    });
    if let Some(ms) = retry_after_ms(status) {
        body["retryAfterMs"] = json!(ms);
    }
    body
}

/// A refused call as HTTP: the status of its code, `{code, message}` (and `retryAfterMs`
/// with a `Retry-After` header when the server says when to retry).
pub fn error_response(status: Status) -> Response {
    let mut response = json_response(http_status(status.code()), error_json(&status));
    if let Some(ms) = retry_after_ms(&status)
        && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// An HTTP error as the body type tonic's routes answer with (for the auth layer).
pub fn error_body(status: Status) -> http::Response<tonic::body::Body> {
    error_response(status).map(tonic::body::Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        let mut s = Status::resource_exhausted("over quota");
        s.metadata_mut()
            .insert("retry-after-ms", "1500".parse().expect("ascii"));
        let r = error_response(s);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
