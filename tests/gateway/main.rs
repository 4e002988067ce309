//! The gateway: in process (routing, failures, configuration errors) and as the spawned
//! `tower-mesh` binary (a 50 MiB body streamed with bounded memory, graceful shutdown).

#[path = "../support/mod.rs"]
mod support;

mod config;
mod process;
mod routing;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// A backend that answers `name path` with the `x-forwarded-*` headers it got, or the
/// status it is set to; it counts body bytes as they stream in (without keeping them) and
/// can wait before answering.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) status: AtomicU16,
    pub(crate) delay_ms: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

pub(crate) async fn backend(name: &'static str) -> Arc<Backend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = Arc::new(Backend {
        addr: listener.local_addr().unwrap(),
        status: AtomicU16::new(200),
        delay_ms: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let shared = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let b = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let b = b.clone();
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_owned()
                        };
                        let text = format!(
                            "{name} {} for={} proto={} host={}",
                            req.uri(),
                            header("x-forwarded-for"),
                            header("x-forwarded-proto"),
                            header("x-forwarded-host"),
                        );
                        let mut body = req.into_body();
                        while let Some(frame) = body.frame().await {
                            if let Ok(data) = frame.map(|f| f.into_data()) {
                                if let Ok(data) = data {
                                    b.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
                                }
                            } else {
                                break;
                            }
                        }
                        let delay = b.delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let rsp = Response::builder()
                            .status(b.status.load(Ordering::SeqCst))
                            .body(Full::new(Bytes::from(text)))
                            .unwrap();
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    b
}

/// A plain hyper-util client.
pub(crate) fn http_client<B>(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET `url` (with `host`, if given): the status, `retry-after`, and the body.
pub(crate) async fn get(url: &str, host: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = Request::get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let rsp = http_client::<Full<Bytes>>()
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let retry = rsp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

/// A fresh SQLite registry file in the temp folder for the test tagged `tag`.
pub(crate) fn sqlite_url(tag: &str) -> String {
    let path = std::env::temp_dir().join(format!("tm-gateway-{tag}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    format!("sqlite://{}?mode=rwc", path.display())
}
