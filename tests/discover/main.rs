//! Discovery: the stream on the memory registry with paused time (changes, filters, duplicates,
//! a 30 s outage), then tower's p2c balancer over it with real hyper servers on loopback and
//! SQLite and PostgreSQL registries.
//!
//! - `stream`: what the stream yields, on the memory registry and a registry that fails;
//! - `builder`: the settings the builder refuses;
//! - `sql`: tower's p2c over SQLite and PostgreSQL registries, corrupt rows, a real outage;
//! - `spawn`: a stream driven in the background;
//! - `health`: live health reaching the endpoints the balancer holds;
//! - `endpoints`: HTTP endpoints with the default body, and one factory feeding tower's p2c
//!   and tower-mesh's balancer.

#[path = "../support/mod.rs"]
mod support;

mod builder;
mod endpoints;
mod flaky;
mod health;
mod spawn;
mod sql;
mod stream;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use tower::discover::Change;
use tower::{Service, ServiceExt};
use tower_mesh::instance::{Instance, InstanceId, ServiceName};
use tower_mesh::registry::{Error, Registration};

pub(crate) fn svc(name: &str) -> ServiceName {
    name.parse().unwrap()
}

pub(crate) fn id(name: &str) -> InstanceId {
    name.parse().unwrap()
}

pub(crate) fn inst(id: &str, port: u32) -> Instance {
    Instance::builder("orders", id)
        .host("127.0.0.1")
        .port(port)
        .build()
        .unwrap()
}

/// Endpoints in tests are just the instance they were made from.
pub(crate) fn echo(i: &Instance) -> Instance {
    i.clone()
}

/// Collects what the stream yields until it would wait (paused time auto-advances only when
/// everything is idle, so a short sleep lets every task run first).
pub(crate) async fn drain<S, T>(stream: &mut S) -> Vec<Change<InstanceId, T>>
where
    S: Stream<Item = Result<Change<InstanceId, T>, Error>> + Unpin,
{
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            item = stream.next() => match item {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => panic!("the stream must never yield an error here: {e}"),
                None => panic!("the stream must never end"),
            },
            _ = tokio::time::sleep(Duration::from_millis(1)) => return out,
        }
    }
}

pub(crate) fn summary(changes: &[Change<InstanceId, Instance>]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Insert(k, i) => format!("+{k}:{}", i.port()),
            Change::Remove(k) => format!("-{k}"),
        })
        .collect()
}

/// A hyper server on loopback answering with its name, counting its requests.
pub(crate) async fn server(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

pub(crate) fn at(id: &str, addr: SocketAddr) -> Registration {
    Instance::builder("orders", id)
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .build()
        .unwrap()
        .into()
}

pub(crate) async fn send_n<S>(balancer: &mut S, n: usize) -> HashMap<String, usize>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    let mut seen = HashMap::new();
    for _ in 0..n {
        let req = http::Request::get("/orders/42")
            .body(Full::default())
            .unwrap();
        let res = balancer.ready().await.unwrap().call(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        *seen
            .entry(String::from_utf8(body.to_vec()).unwrap())
            .or_default() += 1;
    }
    seen
}

/// A waker that records being woken.
#[derive(Default)]
pub(crate) struct Flag(AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

pub(crate) fn flag() -> (Arc<Flag>, std::task::Waker) {
    let flag = Arc::new(Flag::default());
    (flag.clone(), std::task::Waker::from(flag))
}
