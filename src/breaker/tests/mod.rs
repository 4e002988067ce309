//! Unit tests of the breaker through its services, handles and builder; shared helpers here.

use std::future::{ready, Ready};
use std::time::Duration;

use tower::{service_fn, BoxError, Service, ServiceExt};

use super::*;

mod build;
mod endpoint;
#[cfg(feature = "metrics")]
mod metrics;
mod names;
mod policy;
mod race;

type Call = Result<&'static str, &'static str>;

/// A service whose request is its result.
fn echo() -> impl Service<
    Call,
    Response = &'static str,
    Error = BoxError,
    Future = Ready<Result<&'static str, BoxError>>,
> + Clone {
    service_fn(|r: Call| ready(r.map_err(BoxError::from)))
}

fn quick() -> Builder {
    let b = CircuitBreakerLayer::builder()
        .name("test")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(10))
        .max_open_duration(Duration::from_secs(35));
    // Without metrics, closed-state calls take the reference-count-free path.
    #[cfg(feature = "metrics")]
    let b = b.metrics(false);
    b
}

async fn run<S>(svc: &mut S, r: Call) -> Result<&'static str, BoxError>
where
    S: Service<Call, Response = &'static str>,
    S::Error: Into<BoxError>,
{
    svc.ready()
        .await
        .map_err(Into::into)?
        .call(r)
        .await
        .map_err(Into::into)
}

fn is_open(e: &BoxError) -> bool {
    error::Open::find(&**e).is_some()
}

impl Handle {
    fn shared_generation(&self) -> u32 {
        self.shared.generation()
    }
}

/// Waits for a thread's answer, failing (instead of hanging the test run) if it never comes:
/// a guard against a `poll_ready` that spins, not a timing assertion.
fn answer_of<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} never returned: it spins"))
}
