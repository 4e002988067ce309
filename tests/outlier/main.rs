//! Outlier detection end to end: every rule, the ejection cap, ejection-time growth and decay,
//! dry runs, returns without traffic, state released under churn, and the detector inside
//! tower-mesh's balancer behind tower's `Buffer`, against real hyper servers on loopback.
//!
//! Time is tokio's paused clock throughout: the detector's interval timer fires as the test
//! sleeps, and no assertion reads the wall clock.

mod ejection;
#[cfg(feature = "metrics")]
mod metrics;
mod rules;
mod stack;

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Response, StatusCode};
use tower::{BoxError, Service, ServiceExt};

/// An endpoint answering with the status it is set to: an `http::Response<()>` for a status,
/// an error (a transport failure) for 0. Clones share the setting.
#[derive(Clone, Debug)]
pub struct Backend {
    status: Arc<AtomicU16>,
    served: Arc<AtomicUsize>,
}

impl Default for Backend {
    fn default() -> Self {
        Backend::new()
    }
}

impl Backend {
    pub fn new() -> Self {
        Backend {
            status: Arc::new(AtomicU16::new(200)),
            served: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The calls it has answered.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Answer `status` from now on (0: fail with an error).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

impl Service<()> for Backend {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = Ready<Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        self.served.fetch_add(1, Ordering::SeqCst);
        ready(match self.status.load(Ordering::SeqCst) {
            0 => Err("connection refused".into()),
            status => {
                let mut rsp = Response::new(());
                *rsp.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok(rsp)
            }
        })
    }
}

/// Whether `svc` is ready now, without waiting.
pub fn is_ready<S: Service<()>>(svc: &mut S) -> bool
where
    S::Error: std::fmt::Debug,
{
    match svc.ready().now_or_never() {
        Some(Ok(_)) => true,
        Some(Err(e)) => panic!("poll_ready failed: {e:?}"),
        None => false,
    }
}

/// Makes `n` calls through `svc`, which must be ready.
pub async fn calls<S: Service<()>>(svc: &mut S, n: usize)
where
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        assert!(is_ready(svc), "not ready for a call");
        let _ = svc.call(()).await;
    }
}

/// Lets the detector's worker (spawned by `build`) start its interval timer at the current
/// instant, so that `sleep(interval + TICK)` is sure to cover one evaluation.
pub async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

/// A little more than nothing: sleeping `interval + TICK` covers one evaluation.
pub const TICK: Duration = Duration::from_millis(1);
