//! [`Gateway`]: routes requests by host and path prefix to a service and proxies them
//! through its [`Mesh`] client, streaming bodies both ways.
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_mesh::gateway::{config::Config, proxy::Gateway};
//! use tower_mesh::mesh::Mesh;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let config = Config::from_toml(r#"
//!     registry = { url = "memory:" }
//!     [[routes]]
//!     prefix = "/orders"
//!     service = "orders"
//!     timeout = "1s"
//! "#)?;
//! let mesh = Mesh::builder().registry_url("memory:").build().await?;
//! let gateway = ServiceBuilder::new().concurrency_limit(1024).service(Gateway::new(mesh, &config)?);
//! let rsp = gateway
//!     .oneshot(http::Request::get("/users/7").body(axum::body::Body::empty())?)
//!     .await?;
//! assert_eq!(rsp.status(), http::StatusCode::NOT_FOUND); // no route for /users
//! # Ok(())
//! # }
//! ```
//!
//! Failures are short plain-text answers that name the service: no endpoint or an open
//! breaker → 503 with `retry-after`; a timeout → 504; an upstream connection error → 502; a
//! body over the route's limit → 413; no route → 404.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Limited;
use tower::{BoxError, ServiceExt};
use tower_service::Service;

use crate::balance::Avoid;
use crate::gateway::config::{normalize, Config};
use crate::mesh::policy::PolicyError;
use crate::mesh::{Client, Error, Mesh, RequestBody};

/// A compiled route.
struct Route {
    host: Option<String>,
    /// Normalized: no trailing `/` (except `/` itself).
    prefix: String,
    strip: bool,
    timeout: Duration,
    max_body: u64,
    service: Arc<str>,
    /// The route's name in logs and metrics: `host` + prefix.
    name: Arc<str>,
    client: Client,
}

/// The gateway: a tower `Service` for any request body that streams bytes, answering with
/// an axum body; never fails (every failure is an HTTP answer). Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    routes: Arc<Vec<Route>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "routes",
                &self.routes.iter().map(|r| &*r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Gateway {
    /// The gateway of `config`'s routes, each through `mesh`'s client of its service (built
    /// now, so that a bad policy is refused here).
    pub fn new(mesh: Mesh, config: &Config) -> Result<Self, PolicyError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let r = r.get_ref();
            let client = mesh.client(&r.service)?;
            let prefix = normalize(&r.prefix).to_owned();
            let name = match &r.host {
                Some(h) => format!("{h}{prefix}"),
                None => prefix.clone(),
            };
            routes.push(Route {
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                prefix,
                strip: r.strip_prefix,
                timeout: r.timeout,
                max_body: r.max_body_bytes,
                service: Arc::from(r.service.as_str()),
                name: Arc::from(name),
                client,
            });
        }
        // Longest prefix first; routes for a host before routes for any host.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        Ok(Self {
            routes: Arc::new(routes),
        })
    }

    fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.host.as_deref().is_none_or(|h| Some(h) == host)
                && (r.prefix == "/"
                    || path == r.prefix
                    || path
                        .strip_prefix(r.prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }
}

/// The future of a [`Gateway`] call.
pub type GatewayFuture =
    Pin<Box<dyn Future<Output = Result<Response<AxumBody>, Infallible>> + Send>>;

impl<B> Service<Request<B>> for Gateway
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<AxumBody>;
    type Error = Infallible;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each route's client is awaited in the call's future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> GatewayFuture {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl Gateway {
    async fn handle<B>(&self, req: Request<B>) -> Response<AxumBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let host = request_host(&req);
        let path = req.uri().path().to_owned();
        let Some(route) = self.route(host.as_deref().map(strip_port), &path) else {
            crate::gateway::metrics::record_error("", "no_route");
            tracing::info!(target: "tower_mesh::access", method = %req.method(), path, status = 404, "no route");
            return plain(StatusCode::NOT_FOUND, format!("no route for {path}\n"));
        };
        let method = req.method().clone();
        let (status, endpoint, rsp) = self.forward(route, req, host).await;
        let latency = started.elapsed();
        let endpoint = endpoint.as_deref().unwrap_or("-");
        crate::gateway::metrics::record_request(&route.service, endpoint, status.as_u16(), latency);
        tracing::info!(
            target: "tower_mesh::access",
            route = %route.name,
            service = %route.service,
            endpoint,
            %method,
            path,
            status = status.as_u16(),
            latency_ms = latency.as_secs_f64() * 1e3,
        );
        rsp
    }

    async fn forward<B>(
        &self,
        route: &Route,
        req: Request<B>,
        host: Option<String>,
    ) -> (StatusCode, Option<String>, Response<AxumBody>)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let too_large = |route: &Route| {
            crate::gateway::metrics::record_error(&route.service, "body_too_large");
            let rsp = plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body over {} bytes for service {:?}\n",
                    route.max_body, route.service
                ),
            );
            (StatusCode::PAYLOAD_TOO_LARGE, None, rsp)
        };
        let (mut parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.max_body) {
            return too_large(route);
        }
        // The client's address, when the server put it in the extensions.
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        parts.uri = match rewrite(&parts.uri, route) {
            Some(uri) => uri,
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    None,
                    plain(StatusCode::BAD_REQUEST, "invalid request path\n".into()),
                )
            }
        };
        forwarded_headers(&mut parts.headers, peer, host.as_deref());
        let avoid = Avoid::new();
        parts.extensions = http::Extensions::new();
        parts.extensions.insert(avoid.clone());
        // An empty body is whole (the request can be retried); anything else streams.
        let body = if body.is_end_stream() {
            RequestBody::empty()
        } else {
            let limit = usize::try_from(route.max_body).unwrap_or(usize::MAX);
            RequestBody::stream(Limited::new(body, limit))
        };
        let req = Request::from_parts(parts, body);
        let call = route.client.clone().oneshot(req);
        let result = match tokio::time::timeout(route.timeout, call).await {
            Ok(r) => r,
            // Waiting the whole time for an endpoint is "no endpoints", as in the mesh.
            Err(_) if route.client.balance().ready_len() == 0 => Err(Error::NoEndpoints {
                service: route.service.clone(),
            }),
            Err(_) => Err(Error::Timeout {
                service: route.service.clone(),
                after: Some(route.timeout),
            }),
        };
        let endpoint = route.client.served_by(&avoid).map(|id| id.to_string());
        match result {
            Ok(rsp) => {
                let (mut parts, body) = rsp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let status = parts.status;
                (
                    status,
                    endpoint,
                    Response::from_parts(parts, AxumBody::new(body)),
                )
            }
            Err(e) if over_limit(&e) => too_large(route),
            Err(e) => {
                let (kind, status) = kind(&e);
                crate::gateway::metrics::record_error(&route.service, kind);
                tracing::debug!(service = %route.service, error = %crate::gateway::chain(&e), "request failed");
                let mut rsp = plain(status, answer(&e));
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    let secs = e
                        .retry_after()
                        .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
                    rsp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                }
                (status, endpoint, rsp)
            }
        }
    }
}

/// The metrics label and the HTTP status of a failure.
fn kind(e: &Error) -> (&'static str, StatusCode) {
    match e {
        Error::NoEndpoints { .. } => ("no_endpoints", StatusCode::SERVICE_UNAVAILABLE),
        Error::CircuitOpen { .. } => ("circuit_open", StatusCode::SERVICE_UNAVAILABLE),
        Error::Timeout { .. } => ("timeout", StatusCode::GATEWAY_TIMEOUT),
        Error::Discovery { .. } => ("discovery", StatusCode::BAD_GATEWAY),
        Error::Upstream { .. } => ("upstream", StatusCode::BAD_GATEWAY),
        Error::Request { .. } => ("request", StatusCode::BAD_REQUEST),
    }
}

/// The short plain answer for a failure: what happened, naming the service.
fn answer(e: &Error) -> String {
    let service = e.service();
    match e {
        Error::NoEndpoints { .. } => format!("no endpoint of service {service:?} is available\n"),
        Error::CircuitOpen { .. } => format!("service {service:?} is unavailable (circuit open)\n"),
        Error::Timeout { .. } => format!("service {service:?} did not answer in time\n"),
        Error::Request { .. } => format!("bad request for service {service:?}\n"),
        _ => format!("service {service:?} could not be reached\n"),
    }
}

/// Whether the request body went over the route's limit while streaming.
fn over_limit(e: &Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = err.source();
    }
    false
}

fn plain(status: StatusCode, text: String) -> Response<AxumBody> {
    let mut rsp = Response::new(AxumBody::from(text));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// The request's host: the URI's (HTTP/2, absolute form) or the `Host` header's.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .map(|h| h.to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The path (and query) the service gets: the prefix stripped if the route says so.
fn rewrite(uri: &Uri, route: &Route) -> Option<Uri> {
    let path = uri.path();
    let path = if route.strip && route.prefix != "/" {
        match &path[route.prefix.len()..] {
            "" => "/",
            rest => rest,
        }
    } else {
        path
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::builder().path_and_query(pq).build().ok()
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers and the `Host` (the mesh sets the endpoint's), and sets
/// `x-forwarded-for` (appended to), `x-forwarded-proto` and `x-forwarded-host`.
fn forwarded_headers(headers: &mut HeaderMap, peer: Option<SocketAddr>, host: Option<&str>) {
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers);
    if te_trailers {
        // gRPC needs it end to end.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::HOST);
    if let Some(peer) = peer {
        let ip = peer.ip().to_string();
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(v) = host.and_then(|h| HeaderValue::try_from(h).ok()) {
        headers.insert("x-forwarded-host", v);
    }
}
