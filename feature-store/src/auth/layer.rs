//! The tower layer in front of every service of the server: a call to the feature
//! store is authenticated and checked against [`policy`](super::policy) before tonic
//! decodes it (a route of the HTTP API as the RPC it calls: [`crate::http::rpc_of`]);
//! the [`Principal`] travels to the handler in the request's extensions.
//! With authentication off (dev), calls pass untouched and the handler takes the
//! tenant from the metadata.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;

use super::{Authenticator, Principal, policy};
use crate::Error;

/// Metadata that may carry the key instead of `authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-fstore-api-key";

/// Authenticates calls when it holds an [`Authenticator`]; passes them when not.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(auth) = self.auth.clone() else {
            return Box::pin(inner.call(req));
        };
        // Only what the check reads crosses the await (the body need not be Sync). A
        // route of the HTTP API is checked as the RPC it calls, and refused in HTTP.
        let http_rpc = crate::http::rpc_of(req.method(), req.uri().path());
        let path = match http_rpc {
            Some(rpc) => format!("{}{rpc}", policy::SERVICE_PATH),
            None => req.uri().path().to_string(),
        };
        let presented = presented_key(req.headers()).map(str::to_string);
        Box::pin(async move {
            match admit(&auth, &path, presented.as_deref()).await {
                Ok(Some(principal)) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Ok(None) => inner.call(req).await,
                Err(e) if http_rpc.is_some() => Ok(crate::http::error_body(Status::from(e))),
                Err(e) => Ok(Status::from(e).into_http()),
            }
        })
    }
}

/// Whether the call may go on, and as whom (None: an open service).
async fn admit(
    auth: &Authenticator,
    path: &str,
    presented: Option<&str>,
) -> Result<Option<Arc<Principal>>, Error> {
    if policy::OPEN.iter().any(|open| path.starts_with(open)) {
        return Ok(None);
    }
    let method = path.strip_prefix(policy::SERVICE_PATH).unwrap_or(path);
    let Some(role) = policy::required(method) else {
        return Err(Error::PermissionDenied(format!(
            "`{path}` is not a call this server allows"
        )));
    };
    let presented = presented.ok_or_else(|| {
        Error::Unauthenticated(format!(
            "no credential: send `authorization: Bearer <key>` (or `{API_KEY_HEADER}`); \
             set FSTORE_API_KEY for the CLI, and ask an admin of your tenant for a key"
        ))
    })?;
    let principal = auth.authenticate(presented).await?;
    if !principal.holds(role) {
        let held: Vec<_> = principal.roles.iter().map(|r| r.as_str()).collect();
        return Err(Error::PermissionDenied(format!(
            "{method} needs the `{}` role; key {} holds {held:?}",
            role.as_str(),
            principal.key_id
        )));
    }
    Ok(Some(principal))
}

/// The key a call presents: `authorization: Bearer <key>` or the API key metadata.
fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION)
        && let Ok(text) = v.to_str()
        && let Some(key) = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
    {
        return Some(key.trim());
    }
    headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}
