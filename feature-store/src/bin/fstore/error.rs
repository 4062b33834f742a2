//! How the `fstore` binary reports a failed verb: the gRPC status it received (code and
//! message, as sent), or the local cause, and an exit code per class ([`EXIT_CODES`]).

use fstore::client;
use fstore::status::code_name;
use serde_json::{Value as Json, json};
use tonic::{Code, Status};

/// The exit-code table, also shown by `fstore --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure (INTERNAL, UNKNOWN, a flow's error, a port in use, ...)
  2  a request to change: bad arguments or files, INVALID_ARGUMENT, NOT_FOUND,
     ALREADY_EXISTS, FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED, PERMISSION_DENIED
  3  no server to answer: cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED
  4  the server is full, try later: RESOURCE_EXHAUSTED

A failed call prints `error: <CODE>: <message>` on stderr, or with --json
{\"error\": {\"code\": \"<CODE>\", \"message\": ...}} (code null for a local error).";

/// An argument or file the user must change; no call was made. Exits 2, like clap's
/// own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A [`Usage`] error, ready for `?`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// A failure as the binary reports it.
#[derive(Debug, PartialEq)]
pub struct Report {
    /// The gRPC code the server answered, if the failure is a call's status.
    pub code: Option<Code>,
    /// The context, then the status's message or the local cause chain.
    pub message: String,
    pub exit_code: u8,
}

impl Report {
    /// Reads the failure: the first [`Status`] in the chain gives the code and the
    /// message (the contexts above it are kept as a prefix), as does an export's
    /// failure, with the code of its class; otherwise the whole chain.
    pub fn of(e: &anyhow::Error) -> Report {
        let mut parts = Vec::new();
        for cause in e.chain() {
            if let Some(export) = cause.downcast_ref::<fstore::export::Error>() {
                parts.push(export.to_string());
                return Report {
                    code: Some(export.code()),
                    message: parts.join(": "),
                    exit_code: exit_code(export.code()),
                };
            }
            if let Some(status) = cause.downcast_ref::<Status>() {
                parts.push(status.message().to_string());
                return Report {
                    code: Some(status.code()),
                    message: parts.join(": "),
                    exit_code: exit_code(status.code()),
                };
            }
            // Transport errors repeat their source's message in their own; say it once.
            let message = cause.to_string();
            if parts.last() != Some(&message) {
                parts.push(message);
            }
        }
        Report {
            code: None,
            message: parts.join(": "),
            exit_code: local_exit_code(e),
        }
    }

    /// `error: NOT_FOUND: no feature ...`, or `error: <cause>` for a local failure.
    pub fn text(&self) -> String {
        match self.code {
            Some(code) => format!("error: {}: {}", code_name(code), self.message),
            None => format!("error: {}", self.message),
        }
    }

    /// `{"error": {"code": "NOT_FOUND", "message": ...}}`; the code is null for a local
    /// failure.
    pub fn json(&self) -> Json {
        json!({ "error": { "code": self.code.map(code_name), "message": self.message } })
    }
}

/// The exit code for a failure that is not a call's status: the first cause that has a
/// class decides.
fn local_exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        match cause.downcast_ref::<client::Error>() {
            Some(client::Error::Connect { .. }) => return 3,
            Some(client::Error::Definitions(_) | client::Error::Tls(_)) => return 2,
            Some(client::Error::Register { .. }) | None => {}
        }
        if cause.is::<Usage>()
            || cause.is::<crate::input::Error>()
            || cause.is::<crate::entities::Error>()
        {
            return 2;
        }
    }
    1
}

/// The exit code for a status code ([`EXIT_CODES`]).
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unauthenticated
        | Code::PermissionDenied => 2,
        Code::Unavailable | Code::DeadlineExceeded => 3,
        Code::ResourceExhausted => 4,
        Code::Cancelled
        | Code::Unknown
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss => 1,
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn a_status_keeps_its_code_and_message() {
        let e = anyhow::Error::from(Status::not_found("no feature named `nope`"));
        let r = Report::of(&e);
        assert_eq!(r.text(), "error: NOT_FOUND: no feature named `nope`");
        assert_eq!(r.exit_code, 2);
        assert_eq!(
            r.json(),
            json!({"error": {"code": "NOT_FOUND", "message": "no feature named `nope`"}})
        );
    }

    #[test]
    fn context_above_a_status_is_a_prefix() {
        let e = Err::<(), _>(Status::resource_exhausted("queue of flow f is full"))
            .context("watching")
            .expect_err("an error");
        let r = Report::of(&e);
        assert_eq!(r.code, Some(Code::ResourceExhausted));
        assert_eq!(r.message, "watching: queue of flow f is full");
        assert_eq!(r.exit_code, 4);
    }

    #[test]
    fn a_refused_registration_reports_the_servers_status() {
        let e = anyhow::Error::from(client::Error::Register {
            count: 3,
            status: Status::invalid_argument("feature definition refused: a cycle"),
        });
        assert_eq!(
            Report::of(&e).text(),
            "error: INVALID_ARGUMENT: cannot register the file's 3 definitions (none was registered): feature definition refused: a cycle"
        );
    }

    #[test]
    fn local_failures_have_no_code() {
        let r = Report::of(&usage("name a dead letter, or pass --all"));
        assert_eq!(r.text(), "error: name a dead letter, or pass --all");
        assert_eq!(r.exit_code, 2);
        assert_eq!(r.json()["error"]["code"], Json::Null);
        let r = Report::of(&anyhow::Error::from(client::Error::Definitions(
            fstore::definitions::Error::Source {
                feature: "a".into(),
                input: "x".into(),
            },
        )));
        assert_eq!(r.exit_code, 2);
        let r = Report::of(&anyhow::anyhow!("the flow failed"));
        assert_eq!((r.code, r.exit_code), (None, 1));
    }

    #[test]
    fn an_export_failure_reports_its_class() {
        let e = anyhow::Error::from(fstore::export::Error::Invalid("name a feature".into()));
        assert_eq!(
            Report::of(&e).text(),
            "error: INVALID_ARGUMENT: name a feature"
        );
        let e = anyhow::Error::from(fstore::export::Error::from(Status::not_found(
            "no feature named `x`",
        )));
        let r = Report::of(&e);
        assert_eq!(r.text(), "error: NOT_FOUND: no feature named `x`");
        assert_eq!(r.exit_code, 2);
    }

    #[tokio::test]
    async fn no_server_exits_3() {
        let e = fstore::client::Client::connect("http://127.0.0.1:1", None)
            .await
            .err()
            .map(anyhow::Error::from)
            .expect("nothing listens on port 1");
        let r = Report::of(&e);
        assert_eq!((r.code, r.exit_code), (None, 3));
        assert!(
            r.message
                .starts_with("cannot reach the feature store at http://127.0.0.1:1")
        );
    }

    #[test]
    fn every_class_has_its_exit_code() {
        assert_eq!(exit_code(Code::Unavailable), 3);
        assert_eq!(exit_code(Code::Internal), 1);
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }
}
