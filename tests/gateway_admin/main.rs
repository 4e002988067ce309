//! The gateway's admin API over loopback HTTP: auth (open on loopback, bearer token
//! otherwise, refused on a public address without one), validation, 404s, the body limit,
//! the JSON routes and `/metrics` read by a Prometheus text parser.

mod api;
mod auth;
mod metrics;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::ServiceExt;
use tower_mesh::gateway::admin::{self, AdminAuth};
use tower_mesh::gateway::metrics::Metrics;
use tower_mesh::instance::Instance;
use tower_mesh::mesh::{Mesh, RequestBody};
use tower_mesh::registry::{Registration, Registry};

/// An admin API served on loopback, over a mesh on the in-memory registry holding `orders`
/// (two instances, each a real upstream on loopback) with its client built and its balancer
/// holding both endpoints, ready.
pub(crate) struct Admin {
    pub(crate) addr: SocketAddr,
    pub(crate) mesh: Mesh,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

/// An answer: status, headers, body as JSON (`Value::Null` if it is not JSON) and as text.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) json: Value,
    pub(crate) text: String,
}

impl Answer {
    /// The error body's `field` and `value`.
    pub(crate) fn blames(&self) -> (&str, &str) {
        (
            self.json["field"].as_str().unwrap_or_default(),
            self.json["value"].as_str().unwrap_or_default(),
        )
    }
}

/// The default body limit of the tests.
pub(crate) const MAX_BODY: usize = 4096;

impl Admin {
    pub(crate) async fn start(auth: AdminAuth) -> Admin {
        Admin::start_with(auth, MAX_BODY).await
    }

    pub(crate) async fn start_with(auth: AdminAuth, max_body: usize) -> Admin {
        // Installed before the client is built, so that the crate's own breaker series
        // reach it too.
        let metrics = Metrics::install().expect("the Prometheus recorder");
        let mesh = Mesh::builder()
            .registry_url("memory:")
            .build()
            .await
            .unwrap();
        for id in ["orders-1", "orders-2"] {
            let upstream = upstream(id).await;
            let instance = Instance::builder("orders", id)
                .host("127.0.0.1")
                .port(u32::from(upstream.port()))
                .version("1.2.0")
                .zone("eu-1a")
                .metadata("team", "checkout")
                .build()
                .unwrap();
            mesh.registry()
                .register(Registration::new(instance))
                .await
                .unwrap();
        }
        // The client, its breakers, and a balancer holding both endpoints (each request
        // through it polls discovery).
        let client = mesh.client("orders").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.balance().ready_len() < 2 || client.endpoint_breakers().len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the balancer never held both endpoints ready"
            );
            let rsp = client
                .clone()
                .oneshot(Request::get("/").body(RequestBody::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(rsp.status(), StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let app = admin::router(mesh.clone(), auth, Some(metrics), max_body);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
            listener, app,
        )));
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        Admin { addr, mesh, http }
    }

    /// Sends `method path` with `body` (JSON text) and this `Authorization` header.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            req = req.header("authorization", authorization);
        }
        let rsp = self
            .http
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    /// `method path` with a JSON body and no token.
    pub(crate) async fn open(&self, method: Method, path: &str, body: &str) -> Answer {
        self.send(method, path, None, body.to_owned()).await
    }
}

/// An upstream on loopback answering `200 <name>` to anything.
async fn upstream(name: &'static str) -> SocketAddr {
    let app = axum::Router::new().fallback(move || async move { name });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener, app,
    )));
    addr
}
