//! Passive outlier detection: endpoints that fail real traffic are ejected from the balancer
//! for a while (Envoy's outlier detection; gRPC's gRFC A50).
//!
//! ```
//! use std::time::Duration;
//! use tower::discover::ServiceList;
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_mesh::balance::{BalanceLayer, RoundRobin, WithWeight};
//! use tower_mesh::health::outlier::OutlierLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // One detector per service; it sits inside the balancer, one place per endpoint.
//! let outlier = OutlierLayer::builder()
//!     .name("orders")
//!     .consecutive_5xx(3)
//!     .base_ejection_time(Duration::from_secs(30))
//!     .max_ejection_percent(50)
//!     .build()?;
//! let handle = outlier.handle();
//! let endpoints = (0..2).map(|i| {
//!     WithWeight::new(service_fn(move |_: ()| async move {
//!         if i == 0 { Err::<u32, BoxError>("down".into()) } else { Ok(i) }
//!     }), 1)
//! });
//! let mut orders = ServiceBuilder::new()
//!     .layer(BalanceLayer::new(RoundRobin::new()))
//!     .layer(outlier)
//!     .service(ServiceList::new(endpoints.collect::<Vec<_>>()));
//!
//! for _ in 0..6 {
//!     let _ = orders.ready().await?.call(()).await;
//! }
//! // Endpoint 0 failed three times in a row: it is ejected for 30 s, and every request
//! // goes to endpoint 1.
//! let ejection = handle.ejection(&0).expect("ejected");
//! assert_eq!(ejection.reason.to_string(), "3 consecutive failures");
//! for _ in 0..10 {
//!     assert_eq!(orders.ready().await?.call(()).await?, 1);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Placement
//!
//! An [`OutlierLayer`] holds the detector of one service. It wraps each endpoint of the
//! service in an [`OutlierEndpoint`], which feeds the detector the classified outcome of every
//! call and is not ready while ejected. As a `tower::Layer` it wraps a discovery stream, so
//! it goes right below the balancer in a `ServiceBuilder` (the endpoints are keyed by their
//! discovery key); [`OutlierLayer::endpoints`] wraps an endpoint factory for
//! [`RegistryDiscover`](crate::discover::RegistryDiscover) (keyed by instance id), and
//! [`OutlierLayer::layer_keyed`] wraps one service. It goes where the endpoint breaker goes
//! (inside the load metric), and like it never errors.
//!
//! # Rules
//!
//! What counts as a failure is a [`Classify`](crate::breaker::Classify) implementation, the
//! breaker's: every `Err` by default, [`HttpClassifier`](crate::breaker::HttpClassifier) for
//! 5xx or gRPC statuses (from the trailers too), or any closure. A [`ClassifyGateway`] says
//! which failures are gateway failures: errors from the endpoint service (failed connects
//! and timeouts) by default, and 502, 503 and 504 with [`HttpGateway`].
//!
//! * **Consecutive 5xx**: `consecutive_5xx` failures in a row eject the endpoint as the last
//!   one completes.
//! * **Consecutive gateway failures**: `consecutive_gateway_failure` gateway failures in a row
//!   (any other outcome ends the run).
//! * **Success rate**, each [`interval`](Builder::interval): over the endpoints that
//!   completed at least `success_rate_request_volume` requests in the interval, if there are
//!   at least `success_rate_minimum_hosts` of them, an endpoint whose success rate is below
//!   `mean − stdev × success_rate_stdev_factor` is an outlier.
//! * **Failure percentage**, each interval: with at least `failure_percentage_minimum_hosts`
//!   endpoints of `failure_percentage_request_volume` requests, an endpoint whose failures are
//!   above `failure_percentage_threshold` percent of its requests is an outlier.
//!
//! Each rule has an enforcing percentage: the chance that an outlier it finds is ejected.
//! Below 100 the rule runs partly dry, at 0 wholly: outliers found but not ejected are
//! logged (`INFO`) and counted ([`OutlierCounters::not_enforced`]), nothing else. Calls that
//! the classifier ignores count for no rule. Success and failure counts are not split by
//! origin (Envoy's `split_external_local_origin_errors: false`).
//!
//! # Ejection
//!
//! An endpoint ejected for the `n`-th time in a row stays out for
//! `base_ejection_time × n`, at most `max_ejection_time`; `n` goes down by one for each
//! interval the endpoint spends wholly un-ejected (gRFC A50's multiplier). Beyond the first
//! (one endpoint can always be ejected, as in Envoy), no ejection is made that would leave
//! more than `max_ejection_percent` of the endpoints ejected at once (see
//! [`Builder::max_ejection_percent`]); an outlier refused for that is logged
//! (`WARN`) and counted ([`OutlierCounters::overflow`]). When an endpoint returns, its runs
//! of failures start again from zero.
//!
//! # Readiness and progress without traffic
//!
//! An ejected endpoint's `poll_ready` returns `Pending` and wakes at the end of the
//! ejection; it never fails (tower's `Buffer` and balancers take a readiness error as fatal).
//! The ejection wakes the task that polled the endpoint last, so a balancer that holds it
//! as ready polls it again and routes around it. The interval rules, the decay and the
//! return of endpoints nobody polls run on the detector's [`Worker`], a timer task that
//! [`Builder::build`] **spawns** on tokio ([`Builder::build_pair`] hands it out instead); it
//! ends once the layer, its endpoints and handles are gone. An endpoint's state is released
//! when the last service for its key is dropped (a balancer drops it when discovery removes
//! it), so memory stays bounded under churn.
//!
//! # Reporting
//!
//! An [`OutlierHandle`] lists the ejections in force ([`Ejection`]: key, [`Reason`], since,
//! until, times in a row), reads the [`OutlierCounters`], and returns an endpoint early
//! ([`OutlierHandle::uneject`]). Every ejection is a `WARN` tracing event and every return
//! an `INFO` one, with the detector's name, the endpoint's key, the rule and the reason.
//! [`Builder::on_ejection`] takes a hook: [`PublishToRegistry`] sets the instance `Warning`
//! in the registry, so that one process's finding reaches the whole fleet (a successful
//! active health check sets it back). With the `metrics` feature the detector reports
//! `tower_mesh_outlier_detected_total{detector, rule}`,
//! `tower_mesh_outlier_ejections_total{detector, rule}`,
//! `tower_mesh_outlier_overflow_total{detector}`, `tower_mesh_outlier_returns_total{detector}`
//! and the gauge `tower_mesh_outlier_ejected{detector}`.
//!
//! # Hot path
//!
//! A call's outcome is two relaxed atomic operations on its endpoint (the interval's
//! success or failure count, and the runs of failures, read and reset only when they are
//! not zero), plus the reference its future holds; `poll_ready` registers its waker and
//! reads one atomic. No lock is taken per request; the detector's lock is taken when a run
//! reaches its threshold, at each interval, and when endpoints join, leave or return.

mod adapt;
mod config;
mod detector;
mod endpoint;
pub mod error;
pub mod future;
mod gateway;
mod handle;
mod hooks;
mod layer;
mod publish;
mod report;
mod rules;
mod service;
mod worker;

pub use self::adapt::{OutlierDiscover, OutlierEndpoints};
pub use self::config::Builder;
pub use self::gateway::{ClassifyGateway, ErrorsAsGateway, HttpGateway};
pub use self::handle::OutlierHandle;
pub use self::hooks::OnEjection;
pub use self::layer::OutlierLayer;
pub use self::publish::PublishToRegistry;
pub use self::report::{Ejection, OutlierCounters, PerRule, Reason, Rule};
pub use self::service::OutlierEndpoint;
pub use self::worker::Worker;

#[cfg(test)]
mod tests;
