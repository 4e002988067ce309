//! Circuit breaking: a service-level breaker that fails fast and an endpoint breaker that a
//! balancer routes around.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_mesh::breaker::{error::Error, CircuitBreakerLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let (breaker, handle) = CircuitBreakerLayer::builder()
//!     .name("orders")
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(10))
//!     .build_with_handle()?;
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|_req: ()| async { Err::<(), BoxError>("down".into()) }));
//!
//! for _ in 0..3 {
//!     let _ = svc.ready().await?.call(()).await;
//! }
//! let err = svc.ready().await?.call(()).await.unwrap_err();
//! assert!(matches!(err, Error::Open(_)), "fails fast while open");
//! assert_eq!(handle.counters().failures, 3);
//! # Ok(())
//! # }
//! ```
//!
//! # Two placements, one state machine
//!
//! * [`CircuitBreaker`] (made by [`CircuitBreakerLayer`]) sits in front of a whole service.
//!   While open, calls fail at once with [`error::Error::Open`] (no allocation), which names the
//!   service and says when the breaker may half-open; [`error::Open::find`] finds it in a boxed
//!   error too. `poll_ready` never fails because of the breaker, since
//!   `Buffer` and balancers treat a readiness error as fatal.
//! * [`EndpointBreaker`] (made by [`EndpointBreakerLayer`], one breaker per endpoint) sits
//!   inside a balancer. While open, `poll_ready` returns `Pending` and wakes when the breaker may
//!   half-open, so the balancer routes around the endpoint, as linkerd's gate does
//!   (`linkerd/stack/src/gate.rs`). It passes on its endpoint's tower `Load` and, with the
//!   `balance` feature, its `balance::Weight`, so it composes with the endpoint wrappers in
//!   either order: `.weighted().layered(breaker)` and `.layered(breaker).weighted()` both
//!   feed tower-mesh's `Balance` and tower's p2c. Each endpoint's breaker has a name of its
//!   own, `<service>/<instance id>` when discovery makes it (see
//!   [`EndpointBreakerLayer`](EndpointBreakerLayer#names)).
//!
//! The common HTTP and gRPC stacks have names ([`HttpEndpointBreakerLayer`],
//! [`GrpcCircuitBreaker`], …; the classifiers and bodies in [`classify`]), so a client can
//! keep a stack in a struct without depending on tower-http.
//!
//! # Policy
//!
//! The breaker follows resilience4j's `CircuitBreaker` and Finagle's failure accrual:
//!
//! * **Closed → Open** after N consecutive failures, or when the failure rate or slow-call
//!   rate over a count-based (last N calls) or time-based (per-second buckets over N seconds)
//!   [`Window`] reaches its threshold once the window holds a minimum number of calls.
//! * **Open → HalfOpen** once the open duration has passed. The open duration grows
//!   exponentially with consecutive openings, capped, with optional jitter, and starts again
//!   from the base after the breaker closes (Finagle's and linkerd's failure-accrual backoff).
//! * **HalfOpen** admits at most K probe calls at once; enough successes close it, one failure
//!   opens it again, and so does one probe slower than the slow-call duration when a slow-call
//!   rate is set. A probe that is dropped or cancelled gives its permit back.
//! * **Disabled** and **ForcedOpen** are set through a [`Handle`], which also reads the state
//!   and counters and resets the breaker.
//!
//! What counts as a failure is decided by a [`Classify`] implementation: every `Err` by
//! default, tower-http's classifiers through [`HttpClassifier`] (which records a gRPC status
//! sent in trailers when the response body ends, through [`ClassifiedBody`]), or any closure;
//! calls can also be [`Outcome::Ignored`].
//!
//! # Metrics
//!
//! Every transition emits a `tracing` event and calls the
//! [`on_state_change`](Builder::on_state_change) hook; with the `metrics` feature the breaker
//! also reports `tower_mesh_breaker_calls_total{breaker, outcome}`,
//! `tower_mesh_breaker_transitions_total{breaker, from, to}` and the gauge
//! `tower_mesh_breaker_state{breaker}` (0 closed, 1 open, 2 half-open, 3 disabled,
//! 4 forced open), labelled with the breaker's name.
//!
//! tower-mesh keeps nothing per breaker beyond the breaker itself: its state, its name and its
//! `metrics` handles are freed when the endpoint is dropped (with the last of its response
//! futures, handles and [`error::Open`] errors), so endpoints that come and go leave nothing
//! behind in the process. The `metrics` recorder is another matter: the facade cannot remove
//! a series, and a recorder keeps every series it has seen until it decides otherwise. The
//! Prometheus exporter (`metrics-exporter-prometheus`) keeps them for the life of the process
//! unless given an idle timeout, past which it drops a series that was not updated:
//! `PrometheusBuilder::new().idle_timeout(MetricKindMask::ALL, Some(Duration::from_secs(3600)))`.
//! Choose a timeout longer than a live endpoint may go without calls: that exporter does not
//! show again a series it dropped while a live breaker still holds its handle
//! (metrics-rs/metrics#372), so a live endpoint idle for longer would go on counting calls
//! unseen. The state gauge and the transition counter are registered anew on every
//! transition, so they come back with the next one.
//!
//! # Hot path
//!
//! The state, the generation and the half-open permits share one atomic word; a call in the
//! closed state takes no lock and allocates nothing (failure and slow-call *rates* take a short
//! lock on their window; no lock is ever held across an `.await`). Transitions are serialised by
//! a lock, and are rare.
//!
//! The breaker's state lives in one `Arc`, shared by its services, handles and response
//! futures: a call's future holds a reference (one atomic increment and decrement), so that
//! its outcome is recorded even after the service that made it is gone, and the breaker is
//! freed with the last reference. Counters are plain atomics, one `fetch_add` each. Under the
//! consecutive-failures policy with `metrics` off, a closed-state success costs those three
//! read-modify-writes and nothing else.
//!
//! While open, a call reads the clock (tokio's, so paused-clock tests see exact transitions)
//! and half-opens the breaker once the open duration has passed; the service-level breaker
//! needs no timer and works in any runtime, or none. The endpoint breaker's wake-up at the end
//! of the open duration is a tokio timer, so an [`EndpointBreaker`] needs a runtime with the
//! time driver (as `tokio::time::sleep` does). A rejection allocates nothing: the
//! service-level error is the concrete [`error::Error`], and its name is a reference to the
//! breaker's (one atomic increment).

mod admission;
pub mod classify;
pub mod error;
pub mod future;
pub(crate) mod handle;
mod hooks;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod naming;
mod permit;
mod policy;
mod service;
mod state;
mod window;
mod word;

pub use self::classify::{
    ClassifiedBody, Classify, DefaultClassifier, Deferred, Done, HttpClassifier, Outcome,
};
pub use self::handle::{CounterSnapshot, Handle, State};
pub use self::hooks::{OnRejected, OnSlowCall, OnStateChange, SlowCall, Transition};
pub use self::layer::{Builder, CircuitBreakerLayer, EndpointBreakerLayer};
pub use self::policy::{Window, MAX_OPEN_DURATION};
pub use self::service::{CircuitBreaker, EndpointBreaker};

#[cfg(feature = "discover")]
pub(crate) use self::naming::making;

use self::classify::{GrpcClassifier, ServerErrorsClassifier};

/// An [`EndpointBreakerLayer`] for HTTP endpoints: 5xx responses and transport errors are
/// failures ([`HttpClassifier::server_errors`]).
pub type HttpEndpointBreakerLayer = EndpointBreakerLayer<ServerErrorsClassifier>;

/// The [`EndpointBreaker`] an [`HttpEndpointBreakerLayer`] makes around an endpoint `S`.
pub type HttpEndpointBreaker<S> = EndpointBreaker<S, ServerErrorsClassifier>;

/// An [`EndpointBreakerLayer`] for gRPC endpoints: a `grpc-status` other than `Ok` (in the
/// headers or the trailers) and transport errors are failures ([`HttpClassifier::grpc`]).
pub type GrpcEndpointBreakerLayer = EndpointBreakerLayer<GrpcClassifier>;

/// The [`EndpointBreaker`] a [`GrpcEndpointBreakerLayer`] makes around an endpoint `S`.
pub type GrpcEndpointBreaker<S> = EndpointBreaker<S, GrpcClassifier>;

/// A [`CircuitBreakerLayer`] for an HTTP service: 5xx responses and transport errors are
/// failures ([`HttpClassifier::server_errors`]).
pub type HttpCircuitBreakerLayer = CircuitBreakerLayer<ServerErrorsClassifier>;

/// The [`CircuitBreaker`] an [`HttpCircuitBreakerLayer`] makes around a service `S`.
pub type HttpCircuitBreaker<S> = CircuitBreaker<S, ServerErrorsClassifier>;

/// A [`CircuitBreakerLayer`] for a gRPC service: a `grpc-status` other than `Ok` (in the
/// headers or the trailers) and transport errors are failures ([`HttpClassifier::grpc`]).
pub type GrpcCircuitBreakerLayer = CircuitBreakerLayer<GrpcClassifier>;

/// The [`CircuitBreaker`] a [`GrpcCircuitBreakerLayer`] makes around a service `S`.
pub type GrpcCircuitBreaker<S> = CircuitBreaker<S, GrpcClassifier>;

// For outlier detection (`health`), which reuses the classifiers with a recorder of its own.
#[cfg(feature = "health")]
pub(crate) use self::classify::{External, Record};

#[cfg(all(test, not(loom)))]
mod model_tests;
#[cfg(all(test, not(loom)))]
mod tests;
