//! The demo's backends: small HTTP servers on loopback that register themselves with a
//! lease and a health check, and can be slowed, made to fail, healed and stopped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use crate::health::SelfRegistration;
use crate::instance::{Check, Instance};
use crate::registry::Registry;

/// How long a backend takes to answer normally.
pub(super) const BASE_DELAY: Duration = Duration::from_millis(2);

pub(super) struct Backend {
    pub(super) name: &'static str,
    pub(super) addr: SocketAddr,
    delay_us: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    server: JoinHandle<()>,
    registration: Option<SelfRegistration>,
}

impl Backend {
    /// Starts the server and its self-registration (TTL `ttl`, an HTTP check on `/health`).
    pub(super) async fn start<R: Registry>(
        name: &'static str,
        registry: R,
        ttl: Duration,
    ) -> Result<Self, super::DemoError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let delay_us = Arc::new(AtomicU64::new(BASE_DELAY.as_micros() as u64));
        let failing = Arc::new(AtomicBool::new(false));
        let (d, f) = (delay_us.clone(), failing.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (d, f) = (d.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (d, f) = (d.clone(), f.clone());
                        async move { Ok::<_, Infallible>(answer(name, &req, &d, &f).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let check = Check::http("/health")
            .interval(Duration::from_millis(500))
            .jitter(Duration::from_millis(50))
            .timeout(Duration::from_millis(250))
            .unhealthy_interval(Duration::from_millis(500))
            .healthy_threshold(2)
            .unhealthy_threshold(2)
            .build()?;
        let instance = Instance::builder("demo", name)
            .host("127.0.0.1")
            .port(u32::from(addr.port()))
            .version("1.0.0")
            .check(check)
            .build()?;
        let registration = SelfRegistration::builder(instance)
            .ttl(ttl)
            .spawn(registry)?;
        registration.registered().await;
        Ok(Self {
            name,
            addr,
            delay_us,
            failing,
            server,
            registration: Some(registration),
        })
    }

    /// Answers `factor` times slower than normal.
    pub(super) fn slow_down(&self, factor: u32) {
        let us = BASE_DELAY.as_micros() as u64 * u64::from(factor);
        self.delay_us.store(us, Ordering::SeqCst);
    }

    /// Fails every request (500) and its health check (503), or stops failing.
    pub(super) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Deregisters (waiting for it), then stops the server.
    pub(super) async fn stop(&mut self) {
        if let Some(reg) = self.registration.take() {
            let _ = reg.shutdown().await;
        }
        self.server.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    name: &'static str,
    req: &Request<Incoming>,
    delay_us: &AtomicU64,
    failing: &AtomicBool,
) -> Response<Full<Bytes>> {
    let failing = failing.load(Ordering::SeqCst);
    let status = if req.uri().path() == "/health" {
        if failing {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    } else {
        tokio::time::sleep(Duration::from_micros(delay_us.load(Ordering::SeqCst))).await;
        if failing {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    };
    let mut rsp = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
    *rsp.status_mut() = status;
    rsp
}
