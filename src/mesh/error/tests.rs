use std::error::Error as _;
use std::future::{pending, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tower::buffer::Buffer;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

use super::Error;
use crate::balance::error::{Discover, NoEndpoints, Panic};
use crate::breaker::CircuitBreakerLayer;

fn assert_send_sync_static<T: Send + Sync + 'static>() {}

#[test]
fn is_send_sync_static() {
    assert_send_sync_static::<Error>();
}

/// The error a `Buffer` in front of a service failing every call with `make()` returns.
async fn through_buffer(make: fn() -> BoxError) -> BoxError {
    let mut svc = Buffer::new(
        service_fn(move |_: ()| async move { Err::<(), BoxError>(make()) }),
        4,
    );
    svc.ready().await.unwrap().call(()).await.unwrap_err()
}

/// A service whose `poll_ready` fails (what no part of the crate does): `Buffer` then hands
/// every caller its `ServiceError`, whose source is the failure, shared.
struct FailsReady(Option<BoxError>);

impl Service<()> for FailsReady {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err(self.0.take().expect("polled once")))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        unreachable!("never ready")
    }
}

async fn through_buffer_service_error(error: BoxError) -> BoxError {
    let mut svc = Buffer::new(FailsReady(Some(error)), 4);
    // `Buffer` is ready (it has room); the worker meets the failure with the request.
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    // The worker's failure, behind tower's `ServiceError`.
    assert!(err
        .downcast_ref::<tower::buffer::error::ServiceError>()
        .is_some());
    err
}

fn no_endpoints() -> BoxError {
    NoEndpoints {
        discovered: 2,
        waited: Duration::from_secs(1),
    }
    .into()
}

fn panic_mode() -> BoxError {
    Panic {
        healthy: 1,
        discovered: 4,
        threshold_percent: 50,
    }
    .into()
}

fn discover() -> BoxError {
    Discover("registry unreachable".into()).into()
}

fn upstream() -> BoxError {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer").into()
}

#[tokio::test]
async fn classifies_through_buffer() {
    let e = Error::from_box("orders", through_buffer(no_endpoints).await);
    assert!(e.is_no_endpoints(), "{e:?}");
    assert_eq!(e.service(), "orders");

    let e = Error::from_box("orders", through_buffer(panic_mode).await);
    assert!(e.is_no_endpoints(), "{e:?}");

    let e = Error::from_box("orders", through_buffer(discover).await);
    assert!(e.is_discovery(), "{e:?}");
    // The owned `Discover` gives up its source: the registry's error, printed once.
    assert_eq!(e.source().unwrap().to_string(), "registry unreachable");

    let e = Error::from_box("orders", through_buffer(upstream).await);
    assert!(e.is_upstream(), "{e:?}");
    let io = e
        .source()
        .unwrap()
        .downcast_ref::<std::io::Error>()
        .unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn classifies_through_buffer_service_errors() {
    let e = Error::from_box("orders", through_buffer_service_error(no_endpoints()).await);
    assert!(e.is_no_endpoints(), "{e:?}");
    let e = Error::from_box("orders", through_buffer_service_error(panic_mode()).await);
    assert!(e.is_no_endpoints(), "{e:?}");
    let e = Error::from_box("orders", through_buffer_service_error(discover()).await);
    assert!(e.is_discovery(), "{e:?}");
    // Shared behind `ServiceError`: the whole chain is kept, and it reaches the cause.
    let mut cur = e.source();
    let mut messages = Vec::new();
    while let Some(c) = cur {
        messages.push(c.to_string());
        cur = c.source();
    }
    assert_eq!(
        messages.last().unwrap(),
        "registry unreachable",
        "{messages:?}"
    );
    let e = Error::from_box("orders", through_buffer_service_error(upstream()).await);
    assert!(e.is_upstream(), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn classifies_an_open_breaker_with_its_half_open_time() {
    let breaker = CircuitBreakerLayer::builder()
        .name("orders")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .buffer(4)
        .layer(breaker)
        .service(service_fn(|_: ()| async {
            Err::<(), BoxError>(upstream())
        }));
    // The first failure is the upstream's own and trips the breaker.
    let first = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(Error::from_box("orders", first).is_upstream());
    tokio::time::advance(Duration::from_secs(2)).await;
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let e = Error::from_box("orders", err);
    assert!(e.is_circuit_open(), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        e.to_string(),
        "circuit breaker of service \"orders\" is open"
    );
    assert!(e.source().is_none());
}

#[tokio::test(start_paused = true)]
async fn classifies_a_timeout() {
    let mut svc = ServiceBuilder::new()
        .buffer(4)
        .timeout(Duration::from_millis(150))
        .service(service_fn(|_: ()| async {
            pending::<()>().await;
            Ok::<(), BoxError>(())
        }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let e = Error::from_box("orders", err);
    assert!(e.is_timeout(), "{e:?}");
    assert!(matches!(e, Error::Timeout { after: None, .. }));
    let e = e.with_timeout(Duration::from_millis(150));
    assert!(matches!(
        e,
        Error::Timeout { after: Some(d), .. } if d == Duration::from_millis(150)
    ));
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(e.retry_after(), None);
}

#[test]
fn status_mapping() {
    let service = || std::sync::Arc::<str>::from("orders");
    let cases = [
        (Error::NoEndpoints { service: service() }, 503),
        (
            Error::CircuitOpen {
                service: service(),
                retry_after: None,
            },
            503,
        ),
        (
            Error::Timeout {
                service: service(),
                after: None,
            },
            504,
        ),
        (
            Error::Discovery {
                service: service(),
                source: "x".into(),
            },
            502,
        ),
        (
            Error::Upstream {
                service: service(),
                source: "x".into(),
            },
            502,
        ),
    ];
    for (e, status) in cases {
        assert_eq!(e.status().as_u16(), status, "{e:?}");
        assert_eq!(e.retry_after(), None);
    }
}

#[test]
fn a_mesh_error_is_kept_as_it_is() {
    let inner = Error::Timeout {
        service: "orders".into(),
        after: Some(Duration::from_secs(2)),
    };
    let e = Error::from_box("other", Box::new(inner));
    assert!(matches!(e, Error::Timeout { ref service, after: Some(_) } if &**service == "orders"));
}

#[test]
fn prints_once() {
    let e = Error::from_box("orders", "connection refused".into());
    assert_eq!(e.to_string(), "call to service \"orders\" failed");
    assert_eq!(e.source().unwrap().to_string(), "connection refused");
    let e = Error::from_box("orders", discover());
    assert_eq!(e.to_string(), "discovery of service \"orders\" failed");
    assert_eq!(e.source().unwrap().to_string(), "registry unreachable");
    assert!(e.source().unwrap().source().is_none());
}
