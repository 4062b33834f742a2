//! The HTTP/JSON API: every call of `featurestore.v1.FeatureStore` as JSON, on the gRPC
//! listener (HTTP/1.1 and h2), for curl and for clients without gRPC.
//!
//! It is a transcoder, not a second implementation: each route names its RPC, its
//! request is the RPC's request message read as proto3 JSON (pbjson) from the body,
//! the path and the query string, and it calls the same [`Service`] method a gRPC call
//! does, so tenants, quotas, validation and errors are the gRPC call's. Authentication
//! is the gRPC call's too: the [`AuthLayer`](crate::auth::AuthLayer) checks a route as
//! the RPC it names ([`rpc_of`]). Server streams are server-sent events, one JSON
//! message per event (the result-ready stream's `id` is its sequence: a reconnecting
//! `EventSource` resumes with `Last-Event-ID`). Errors are `{code, message}` with the
//! HTTP status of their gRPC code ([`http_status`], in `answer.rs`). `GET /openapi.json` describes it all,
//! generated from these routes and the proto's descriptors ([`openapi`]).

mod answer;
pub mod descriptors;
pub mod openapi;

use std::sync::{Arc, LazyLock};

use axum::extract::{FromRequestParts, RawPathParams};
use axum::response::Response;
use fstore_proto::api::feature_store_server::FeatureStore;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, future::BoxFuture};
use http::{HeaderValue, Method, StatusCode};
use prost_types::field_descriptor_proto::Type;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};
use tonic::Status;

pub use answer::{error_body, error_response, http_status};
use answer::{json_response, sse};

use crate::auth::Principal;
use crate::service::Service;

/// One HTTP route and the RPC it calls.
pub struct Route {
    pub method: Method,
    /// An axum path: `{name}` is a field of the request message.
    pub path: &'static str,
    /// The RPC's name in `featurestore.v1.FeatureStore`.
    pub rpc: &'static str,
    /// Whether the request message is (also) read from a JSON body.
    pub body: bool,
    call: Call,
}

type Answer = BoxFuture<'static, Result<Json, Status>>;
/// A server stream: each message as JSON, with the SSE event id it carries, if any.
type Events = BoxStream<'static, Result<(Option<String>, Json), Status>>;

#[derive(Clone, Copy)]
enum Call {
    Unary(fn(Service, Caller, Json) -> Answer),
    Stream(fn(Service, Caller, Json) -> BoxFuture<'static, Result<Events, Status>>),
}

/// Who calls: what the gRPC handler reads from the metadata and the extensions.
pub struct Caller {
    tenant: Option<HeaderValue>,
    principal: Option<Arc<Principal>>,
}

impl Caller {
    fn request<T>(self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = self.tenant
            && let Ok(v) = tonic::metadata::MetadataValue::try_from(t.as_bytes())
        {
            r.metadata_mut().insert(fstore_proto::TENANT_HEADER, v);
        }
        if let Some(p) = self.principal {
            r.extensions_mut().insert(p);
        }
        r
    }
}

macro_rules! unary {
    ($rpc:ident) => {
        Call::Unary(|svc, caller, json| {
            Box::pin(async move {
                let message = decode(json)?;
                let answer = FeatureStore::$rpc(&svc, caller.request(message)).await?;
                encode(&answer.into_inner())
            })
        })
    };
}

macro_rules! server_stream {
    ($rpc:ident, $id:expr) => {
        Call::Stream(|svc, caller, json| {
            Box::pin(async move {
                let message = decode(json)?;
                let stream = FeatureStore::$rpc(&svc, caller.request(message))
                    .await?
                    .into_inner();
                let events: Events = stream
                    .map(|item| item.and_then(|m| Ok((($id)(&m), encode(&m)?))))
                    .boxed();
                Ok(events)
            })
        })
    };
}

fn no_id<T>(_: &T) -> Option<String> {
    None
}

fn sequence(e: &fstore_proto::api::LogEvent) -> Option<String> {
    Some(e.sequence.to_string())
}

/// Every route, in the order the OpenAPI document lists them.
pub fn routes() -> &'static [Route] {
    static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
        let r = |method: Method, path, rpc, body, call| Route {
            method,
            path,
            rpc,
            body,
            call,
        };
        use Method as M;
        vec![
            r(
                M::POST,
                "/v1/features:get",
                "GetFeatures",
                true,
                unary!(get_features),
            ),
            r(
                M::GET,
                "/v1/tickets/{ticket}",
                "GetTicket",
                false,
                unary!(get_ticket),
            ),
            r(
                M::DELETE,
                "/v1/tickets/{ticket}",
                "CancelTicket",
                false,
                unary!(cancel_ticket),
            ),
            r(
                M::POST,
                "/v1/features:watch",
                "WatchFeatures",
                true,
                server_stream!(watch_features, no_id),
            ),
            r(
                M::POST,
                "/v1/features",
                "RegisterFeature",
                true,
                unary!(register_feature),
            ),
            r(
                M::POST,
                "/v1/features:batchRegister",
                "RegisterFeatures",
                true,
                unary!(register_features),
            ),
            r(
                M::GET,
                "/v1/features",
                "ListFeatures",
                false,
                unary!(list_features),
            ),
            r(
                M::GET,
                "/v1/features/{*feature}",
                "DescribeFeature",
                false,
                unary!(describe_feature),
            ),
            r(
                M::POST,
                "/v1/features:invalidate",
                "Invalidate",
                true,
                unary!(invalidate),
            ),
            r(M::GET, "/v1/flows", "ListFlows", false, unary!(list_flows)),
            r(M::POST, "/v1/inputs", "PutInputs", true, unary!(put_inputs)),
            r(
                M::GET,
                "/v1/events",
                "SubscribeEvents",
                false,
                server_stream!(subscribe_events, sequence),
            ),
            r(
                M::GET,
                "/v1/log",
                "ReadLog",
                false,
                server_stream!(read_log, sequence),
            ),
            r(
                M::POST,
                "/v1/backfills",
                "StartBackfill",
                true,
                Call::Unary(start_backfill),
            ),
            r(
                M::GET,
                "/v1/backfills",
                "ListBackfills",
                false,
                unary!(list_backfills),
            ),
            r(
                M::GET,
                "/v1/backfills/{id}",
                "GetBackfill",
                false,
                unary!(get_backfill),
            ),
            r(
                M::DELETE,
                "/v1/backfills/{id}",
                "CancelBackfill",
                false,
                unary!(cancel_backfill),
            ),
            r(
                M::GET,
                "/v1/schedules",
                "ListSchedules",
                false,
                unary!(list_schedules),
            ),
            r(
                M::DELETE,
                "/v1/schedules/{name}",
                "DeleteSchedule",
                false,
                unary!(delete_schedule),
            ),
            r(
                M::GET,
                "/v1/publish",
                "GetPublishStatus",
                false,
                unary!(get_publish_status),
            ),
            r(
                M::POST,
                "/v1/features:rollback",
                "Rollback",
                true,
                unary!(rollback),
            ),
            r(
                M::GET,
                "/v1/deadLetters",
                "ListDeadLetters",
                false,
                unary!(list_dead_letters),
            ),
            r(
                M::POST,
                "/v1/deadLetters:replay",
                "ReplayDeadLetter",
                true,
                unary!(replay_dead_letter),
            ),
            r(
                M::DELETE,
                "/v1/deadLetters",
                "PurgeDeadLetters",
                false,
                unary!(purge_dead_letters),
            ),
            r(
                M::POST,
                "/v1/apiKeys",
                "CreateApiKey",
                true,
                unary!(create_api_key),
            ),
            r(
                M::GET,
                "/v1/apiKeys",
                "ListApiKeys",
                false,
                unary!(list_api_keys),
            ),
            r(
                M::DELETE,
                "/v1/apiKeys/{id}",
                "RevokeApiKey",
                false,
                unary!(revoke_api_key),
            ),
        ]
    });
    &ROUTES
}

/// StartBackfill streams its entities in chunks over gRPC; over HTTP they come in one
/// body, as one message.
fn start_backfill(svc: Service, caller: Caller, json: Json) -> Answer {
    Box::pin(async move {
        let message: fstore_proto::api::StartBackfillRequest = decode(json)?;
        let messages = stream::iter([Ok(message)]);
        let answer = svc
            .start_backfill_from(caller.request(()), messages)
            .await?;
        encode(&answer.into_inner())
    })
}

/// The RPC an HTTP request calls, if it is one of [`routes`]: what the auth layer checks
/// it as.
pub fn rpc_of(method: &Method, path: &str) -> Option<&'static str> {
    routes()
        .iter()
        .find(|r| r.method == method && matches(r.path, path))
        .map(|r| r.rpc)
}

/// Whether `path` matches the axum template `template`.
fn matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(seg), Some(got)) if seg.starts_with("{*") => return !got.is_empty(),
            (Some(seg), Some(got)) if seg.starts_with('{') => {
                if got.is_empty() {
                    return false;
                }
            }
            (Some(seg), Some(got)) if seg == got => {}
            _ => return false,
        }
    }
}

/// The routes as an axum router, with `GET /openapi.json` and the operator page, `GET
/// /ui` (one HTML file built into the binary that calls these routes); bodies up to
/// `max_body` bytes.
pub fn router(service: Service, max_body: usize) -> axum::Router {
    let mut router = axum::Router::new();
    for route in routes() {
        let svc = service.clone();
        let handler = move |req: axum::extract::Request| handle(route, svc.clone(), req, max_body);
        let filter = match route.method {
            Method::GET => axum::routing::MethodFilter::GET,
            Method::DELETE => axum::routing::MethodFilter::DELETE,
            _ => axum::routing::MethodFilter::POST,
        };
        router = router.route(route.path, axum::routing::on(filter, handler));
    }
    router
        .route(
            "/openapi.json",
            axum::routing::get(|| async { json_response(StatusCode::OK, openapi::document()) }),
        )
        .route(
            "/ui",
            axum::routing::get(|| async { axum::response::Html(include_str!("ui.html")) }),
        )
}

async fn handle(
    route: &'static Route,
    svc: Service,
    req: axum::extract::Request,
    max_body: usize,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let bytes = match axum::body::to_bytes(body, max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(Status::resource_exhausted(format!(
                "the body is more than limits.max_request_bytes ({max_body} bytes); split the call"
            )));
        }
    };
    let caller = Caller {
        tenant: parts.headers.get(fstore_proto::TENANT_HEADER).cloned(),
        principal: parts.extensions.get::<Arc<Principal>>().cloned(),
    };
    let json = match request_json(route, &parts, path.as_ref(), &bytes) {
        Ok(j) => j,
        Err(e) => return error_response(e),
    };
    match route.call {
        Call::Unary(call) => match call(svc, caller, json).await {
            Ok(j) => json_response(StatusCode::OK, j),
            Err(e) => error_response(e),
        },
        Call::Stream(call) => match call(svc, caller, json).await {
            Ok(events) => sse(events),
            Err(e) => error_response(e),
        },
    }
}

/// The request message as JSON: the body's object, then the path's fields, then the
/// query string's (typed by the message's descriptor: repeated fields collect, bools
/// parse); `Last-Event-ID` resumes the result-ready stream.
fn request_json(
    route: &Route,
    parts: &http::request::Parts,
    path: Option<&RawPathParams>,
    body: &[u8],
) -> Result<Json, Status> {
    let api = descriptors::api();
    let input = api
        .methods
        .get(route.rpc)
        .map(|m| m.input.clone())
        .ok_or_else(|| Status::internal(format!("{} is not in the descriptors", route.rpc)))?;
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else if route.body {
        match serde_json::from_slice::<Json>(body) {
            Ok(Json::Object(o)) => o,
            Ok(_) => return Err(Status::invalid_argument("the body must be a JSON object")),
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "the body is not JSON: {e}"
                )));
            }
        }
    } else {
        return Err(Status::invalid_argument(format!(
            "{} {} takes no body: send its fields in the query string",
            route.method, route.path
        )));
    };
    for (name, value) in path.into_iter().flatten() {
        object.insert(name.to_string(), Json::String(value.to_string()));
    }
    for (key, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        let Some(field) = api.field(&input, &key) else {
            let known: Vec<_> = api
                .message(&input)
                .map(|m| m.fields.iter().map(|f| f.json_name.as_str()).collect())
                .unwrap_or_default();
            return Err(Status::invalid_argument(format!(
                "unknown query parameter `{key}`; {} takes {}",
                route.rpc,
                known.join(", ")
            )));
        };
        let typed = match field.kind {
            Type::Bool => match value.as_ref() {
                "true" => Json::Bool(true),
                "false" => Json::Bool(false),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "query parameter `{key}` is true or false, not `{other}`"
                    )));
                }
            },
            _ => Json::String(value.into_owned()),
        };
        if field.repeated {
            let slot = object
                .entry(field.json_name.clone())
                .or_insert_with(|| Json::Array(Vec::new()));
            if let Json::Array(items) = slot {
                items.push(typed);
            }
        } else {
            object.insert(field.json_name.clone(), typed);
        }
    }
    if route.rpc == "SubscribeEvents"
        && !object.contains_key("afterSequence")
        && !object.contains_key("after_sequence")
        && let Some(last) = parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
    {
        object.insert("afterSequence".into(), Json::String(last.to_string()));
    }
    Ok(Json::Object(object))
}

fn decode<T: DeserializeOwned>(json: Json) -> Result<T, Status> {
    serde_json::from_value(json)
        .map_err(|e| Status::invalid_argument(format!("the request does not fit its message: {e}")))
}

fn encode<T: Serialize>(message: &T) -> Result<Json, Status> {
    serde_json::to_value(message).map_err(|e| Status::internal(format!("encoding the answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_has_a_route_and_every_route_an_rpc() {
        let api = descriptors::api();
        let mut rpcs: Vec<_> = routes().iter().map(|r| r.rpc).collect();
        rpcs.sort_unstable();
        let mut methods: Vec<_> = api.methods.keys().map(String::as_str).collect();
        methods.sort_unstable();
        assert_eq!(rpcs, methods);
    }

    #[test]
    fn paths_match_their_templates_only() {
        assert!(matches("/v1/tickets/{ticket}", "/v1/tickets/abc"));
        assert!(!matches("/v1/tickets/{ticket}", "/v1/tickets/"));
        assert!(!matches("/v1/tickets/{ticket}", "/v1/tickets/a/b"));
        assert!(matches(
            "/v1/features/{*feature}",
            "/v1/features/acme/doc.words"
        ));
        assert!(!matches("/v1/features", "/v1/features/x"));
        assert_eq!(rpc_of(&Method::GET, "/v1/features"), Some("ListFeatures"));
        assert_eq!(
            rpc_of(&Method::GET, "/v1/features/a@2"),
            Some("DescribeFeature")
        );
        assert_eq!(
            rpc_of(&Method::POST, "/v1/features:get"),
            Some("GetFeatures")
        );
        assert_eq!(
            rpc_of(&Method::DELETE, "/v1/tickets/t"),
            Some("CancelTicket")
        );
        assert_eq!(rpc_of(&Method::PUT, "/v1/tickets/t"), None);
        assert_eq!(rpc_of(&Method::GET, "/v2/features"), None);
    }
}
