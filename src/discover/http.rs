//! HTTP endpoints over one shared hyper-util client.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::instance::{Instance, Scheme as InstanceScheme};

use super::MakeEndpoint;

/// The request body [`HttpEndpoints::new`] sends: a whole body in one buffer.
///
/// `Full<Bytes>` is what hyper's and hyper-util's client examples send, it carries both an
/// empty body (`Full::default()`) and a payload (`Full::new(bytes)`, `Full::from("...")`),
/// and it is `Send`, `Sync` and `Unpin` with an error type that cannot occur, so a stack over
/// it can sit behind `Buffer` and in a struct. Streaming bodies (an axum `Body`, a
/// [`BoxBody`](http_body_util::combinators::BoxBody)) take
/// [`HttpEndpoints::with_body`].
pub type DefaultBody = Full<Bytes>;

/// Makes an [`HttpEndpoint`] per instance, all sharing one hyper-util legacy `Client` (and so
/// one connection pool).
///
/// Requests carry bodies of type `B`, [`DefaultBody`] (`Full<Bytes>`) unless chosen otherwise
/// with [`with_body`](HttpEndpoints::with_body) or [`with_client`](HttpEndpoints::with_client).
/// The client drives its connections on tasks it spawns on tokio as requests open them.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::Request;
/// use http_body_util::{Empty, Full};
/// use tower::ServiceBuilder;
/// use tower_mesh::discover::{p2c_pending, HttpEndpoints, RegistryDiscover};
/// use tower_mesh::registry::MemoryRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = MemoryRegistry::new();
/// // Requests with a `Full<Bytes>` body: no type to spell.
/// let orders = RegistryDiscover::new(registry.clone(), "orders", HttpEndpoints::new()).spawn();
/// let client = ServiceBuilder::new()
///     .buffer(1024)
///     .timeout(Duration::from_secs(2))
///     .service(p2c_pending(orders));
/// let _req = Request::get("/orders/42").body(Full::<Bytes>::default()).unwrap();
///
/// // Another body type is chosen once, on the factory.
/// let users = HttpEndpoints::with_body::<Empty<Bytes>>();
/// let users = RegistryDiscover::new(registry, "users", users).spawn();
/// # drop((client, users));
/// # }
/// ```
pub struct HttpEndpoints<B = DefaultBody, C = HttpConnector> {
    client: Client<C, B>,
}

impl<B, C: Clone> Clone for HttpEndpoints<B, C> {
    fn clone(&self) -> Self {
        HttpEndpoints {
            client: self.client.clone(),
        }
    }
}

impl<B, C> fmt::Debug for HttpEndpoints<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEndpoints").finish_non_exhaustive()
    }
}

impl HttpEndpoints {
    /// Endpoints for requests with a [`DefaultBody`] (`Full<Bytes>`), over a plain-HTTP client
    /// on tokio (HTTP/1.1; use [`with_client`](HttpEndpoints::with_client) for HTTP/2 or TLS).
    pub fn new() -> Self {
        HttpEndpoints::with_body()
    }

    /// Endpoints for requests with bodies of type `B`, over a plain-HTTP client on tokio, as
    /// [`new`](HttpEndpoints::new) makes for `Full<Bytes>`:
    /// `HttpEndpoints::with_body::<Empty<Bytes>>()`.
    pub fn with_body<B>() -> HttpEndpoints<B>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
    {
        HttpEndpoints {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl<B> Default for HttpEndpoints<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    fn default() -> Self {
        HttpEndpoints::with_body()
    }
}

impl<B, C> HttpEndpoints<B, C> {
    /// Endpoints over `client`, whose type fixes the body and the connector (HTTP/2, TLS).
    pub fn with_client(client: Client<C, B>) -> Self {
        HttpEndpoints { client }
    }
}

impl<B, C: Clone> MakeEndpoint for HttpEndpoints<B, C> {
    type Service = HttpEndpoint<B, C>;

    fn make_endpoint(&mut self, instance: &Instance) -> Self::Service {
        let scheme = match instance.scheme() {
            InstanceScheme::Https => Scheme::HTTPS,
            InstanceScheme::Http | InstanceScheme::Grpc => Scheme::HTTP,
        };
        // A validated host and port always make a valid authority.
        let authority: Authority = instance
            .authority()
            .parse()
            .expect("a validated instance address is a valid URI authority");
        HttpEndpoint {
            client: self.client.clone(),
            scheme,
            authority,
        }
    }
}

/// One instance's endpoint: sends each request to the instance's address, keeping its path
/// and query, through the shared client. `B` is the request body ([`DefaultBody`] unless the
/// factory chose another).
pub struct HttpEndpoint<B = DefaultBody, C = HttpConnector> {
    client: Client<C, B>,
    scheme: Scheme,
    authority: Authority,
}

impl<B, C: Clone> Clone for HttpEndpoint<B, C> {
    fn clone(&self) -> Self {
        HttpEndpoint {
            client: self.client.clone(),
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
        }
    }
}

impl<B, C> HttpEndpoint<B, C> {
    /// The `host:port` requests go to.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl<B, C> fmt::Debug for HttpEndpoint<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpEndpoint({}://{})", self.scheme, self.authority)
    }
}

impl<B, C> Service<Request<B>> for HttpEndpoint<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The client pools connections per authority and is always ready to take a request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *req.uri_mut() =
            Uri::from_parts(parts).expect("scheme, authority and path always make a valid URI");
        self.client.request(req)
    }
}
