//! The `Mesh` facade against real parts: hyper and tonic servers on loopback, and the
//! registry on SQLite, PostgreSQL and MariaDB.

#[path = "../support/mod.rs"]
mod support;

#[allow(clippy::all, missing_docs, unreachable_pub)]
#[path = "../tonic/generated/mesh.echo.v1.rs"]
mod echo;

mod calls;
mod grpc;
mod ops;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_mesh::instance::Microservice;
use tower_mesh::mesh::{Client, Error, RequestBody};

/// A server on loopback that answers with its name and the request's body, or with the
/// status it is set to; it can hold every request until permits are added.
pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    /// 0: answer 200 with "name body"; else answer this status.
    pub(crate) status: AtomicU16,
    /// Requests wait for a permit (none are taken while `hold` is off).
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) hold: std::sync::atomic::AtomicBool,
    /// Request ids (`x-id`) seen.
    pub(crate) seen: Mutex<Vec<String>>,
}

impl Server {
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn fail_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub(crate) async fn server(name: &'static str) -> Arc<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = Arc::new(Server {
        name,
        addr: listener.local_addr().unwrap(),
        status: AtomicU16::new(0),
        gate: Arc::new(Semaphore::new(0)),
        hold: std::sync::atomic::AtomicBool::new(false),
        seen: Mutex::new(Vec::new()),
    });
    let shared = s.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        if let Some(id) = req.headers().get("x-id") {
                            s.seen.lock().unwrap().push(id.to_str().unwrap().to_owned());
                        }
                        if s.hold.load(Ordering::SeqCst) {
                            s.gate.acquire().await.unwrap().forget();
                        }
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = s.status.load(Ordering::SeqCst);
                        let rsp = if status == 0 {
                            let text = format!("{} {}", s.name, String::from_utf8_lossy(&body));
                            Response::new(Full::new(Bytes::from(text.trim_end().to_owned())))
                        } else {
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(s.name)))
                                .unwrap()
                        };
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    s
}

/// An address where nothing listens: connections are refused.
pub(crate) async fn refusing() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A service of `servers`, version 1.0.0.
pub(crate) fn service(name: &str, servers: &[&Arc<Server>]) -> Microservice {
    servers
        .iter()
        .fold(Microservice::new(name, "1.0.0"), |m, s| {
            m.endpoint(s.endpoint())
        })
}

pub(crate) fn get(path: &str, id: usize) -> Request<RequestBody> {
    Request::get(path)
        .header("x-id", id.to_string())
        .body(RequestBody::empty())
        .unwrap()
}

/// Sends `req`; the status and body text.
pub(crate) async fn send(
    client: &Client,
    req: Request<RequestBody>,
) -> Result<(StatusCode, String), Error> {
    let rsp = client.clone().oneshot(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8(body.to_vec()).unwrap()))
}

/// How many answers came from each server (the first word of the body).
pub(crate) fn tally(bodies: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for b in bodies {
        let name = b.split(' ').next().unwrap().to_owned();
        *counts.entry(name).or_default() += 1;
    }
    counts
}
