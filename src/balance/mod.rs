//! Client-side load balancing with pluggable strategies over any `Discover`.
//!
//! Works over any [`Discover`](tower::discover::Discover) stream, with a panic threshold,
//! slow start and a bound on waiting for endpoints.
//!
//! [`Balance<D, P>`](Balance) is a `Service<Req>` over a discovery stream `D` and a
//! [`Pick`] strategy `P`:
//!
//! | strategy | picks | source |
//! | --- | --- | --- |
//! | [`RoundRobin`] | the next ready endpoint in turn | |
//! | [`Weighted`] | smooth weighted round robin | nginx `ngx_http_upstream_round_robin.c` |
//! | [`LeastRequests`] | fewest in-flight requests per unit of weight, ties at random | Envoy least request |
//! | [`P2c`] | the cheaper of two random endpoints, by peak-EWMA latency or pending requests | Mitzenmacher's power of two choices; Finagle / tower `PeakEwma` |
//! | [`Random`] | a random endpoint, weighted | |
//! | [`RingHash`] | consistent hashing on a ring of weighted virtual nodes | ketama (libketama, last.fm) |
//! | [`Maglev`] | consistent hashing through a Maglev lookup table | Eisenbud et al., *Maglev*, NSDI 2016 |
//! | [`AnyPick`] | any of the above, chosen at run time by [`Strategy`] name | |
//! | [`Switchable`] | an [`AnyPick`] replaced while the balancer runs ([`StrategySwitch`]) | |
//!
//! Endpoint services implement [`Weight`] to give their weight (and optionally a health
//! signal for the panic threshold); wrap plain services in [`WithWeight`].
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{discover::ServiceList, service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_mesh::balance::{BalanceLayer, RoundRobin, WithWeight};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let endpoints = (0..3).map(|i| {
//!     WithWeight::new(service_fn(move |req: u32| async move { Ok::<_, Infallible>(req + i) }), 1)
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(
//!         BalanceLayer::builder(RoundRobin::new())
//!             .no_endpoints_timeout(Duration::from_secs(1))
//!             .build()?,
//!     )
//!     .service(ServiceList::new(endpoints.collect::<Vec<_>>()));
//! let rsp = svc.ready().await?.call(10).await?;
//! assert!((10..13).contains(&rsp));
//! # Ok(())
//! # }
//! ```
//!
//! # Sharing
//!
//! `Balance` is cheap to clone and needs no `Buffer` in front of it: every clone shares the
//! endpoints, the strategy and the background worker (the pick happens under one lock), so
//! tower's `Retry` or a clone per spawned task can use it directly. Each clone waits for
//! an endpoint on its own, and every waiting clone is woken when one turns ready. The
//! worker ends when the last clone is dropped.
//!
//! # Readiness
//!
//! The balancer keeps tower's readiness contract: `poll_ready` never fails for a
//! transient condition, because tower's `Buffer` dies for good, and tower's balancers
//! drop the service, when it does.
//!
//! * No endpoint ready: `poll_ready` is `Pending` (woken as soon as one is) for up to
//!   [`no_endpoints_timeout`](Builder::no_endpoints_timeout) (default 1 s; any
//!   duration, or [`wait_for_endpoints`](Builder::wait_for_endpoints) to wait for as
//!   long as it takes, as tower's balancer does). Past it, `poll_ready` is ready and the
//!   response future fails at once with [`error::NoEndpoints`], and so does every request
//!   until an endpoint is ready again (the load-shed shape). A client started before the
//!   first instance registers serves as soon as one does.
//! * Below the panic threshold with [`PanicMode::FailFast`]: ready, and the response future
//!   fails at once with [`error::Panic`].
//! * Only a failed discovery stream is an error from `poll_ready` (the registry-fed
//!   discovery never fails).
//!
//! An endpoint that is not ready (`Pending`, for example while its breaker is open) is
//! skipped; an endpoint whose `poll_ready` fails is removed, as tower does, and a `warn`
//! event names its key. Picks happen in `call`, so a consistent hasher can see the
//! request; the endpoint called is polled ready again right after its call.
//!
//! # Progress without requests
//!
//! Endpoints live in state shared with a background [`Worker`] ([`Balance::new`] spawns it
//! on tokio; [`Balance::pair`] hands it out for other executors). Every endpoint is polled
//! with a waker of its own: when it fires, that endpoint alone is queued and polled again
//! (tower's `ReadyCache` rule), never every unready endpoint on every `poll_ready`. With
//! no request flowing, the worker applies discovery changes (a removed endpoint is dropped
//! at once: its connections closed, its breaker released), polls the endpoints that woke
//! (an endpoint that turns ready is ready for the next request) and switches to strategy
//! tables built in the background (tower issue #824 does not apply). An endpoint whose
//! health changes while it is ready wakes its last poller, and is polled again and its
//! [`Weight::is_healthy`] re-read. `poll_ready`'s fast path, when nothing changed, is two
//! atomic loads; `call` takes the state's lock once.
//!
//! Cost per pick, with all endpoints ready: O(1) for [`RoundRobin`], [`Weighted`] (a
//! precomputed period; O(n) while endpoints warm up or the period is being computed),
//! [`P2c`], [`Random`] (alias method), [`Maglev`] and [`RingHash`] (expected, and at most
//! 64 slots probed); O(log n) for [`LeastRequests`] beyond 64 endpoints. The request path
//! allocates nothing but the strategy's own amortised buffers. Tables that take time to
//! build (Maglev tables, rings beyond 16,384 points, long weighted schedules) are built on
//! tokio's blocking pool, never on a runtime thread. The balancer needs a tokio runtime
//! with time enabled (for the no-endpoints bound).
//!
//! # Avoiding endpoints
//!
//! An `http::Request` may carry an [`Avoid`] extension listing endpoints ([`EndpointId`],
//! a hash of the key) it should
//! not go to (the layer of the `retry` module, feature `retry`, adds the endpoint that failed each
//! attempt). A strategy wrapped in [`Avoiding`] honours it: when its pick is avoided and a
//! usable endpoint is not, the request goes to such an endpoint (the strategy is asked
//! twice more, then the usable endpoints are scanned in index order from the pick); when
//! every usable endpoint is avoided, it goes to the pick anyway. The balancer records the
//! endpoint each such request went to in the set ([`Avoid::served`]). Requests
//! through unwrapped strategies, and other request types, never look for the extension.
//!
//! # Panic threshold
//!
//! As in Envoy, when fewer than
//! [`panic_threshold_percent`](Builder::panic_threshold_percent) (default 50%) of the
//! discovered endpoints are ready *and healthy* ([`Weight::is_healthy`]), the balancer
//! either spreads load over every ready endpoint, healthy or not ([`PanicMode::Spread`],
//! the default), or fails requests with [`error::Panic`] ([`PanicMode::FailFast`]). An
//! endpoint that is not ready cannot take a request in tower, so "all endpoints" means all
//! ready ones.
//!
//! # Observability
//!
//! Each response future runs in a `balance` tracing span (created only when `DEBUG` is
//! enabled) whose `endpoint` field is the chosen endpoint's key; an endpoint removed for a
//! failed readiness check is logged at `WARN` with its key, and so is entering panic mode.
//! With the `metrics` feature the balancer counts
//! `tower_mesh_balance_requests_total{endpoint}`,
//! `tower_mesh_balance_endpoint_failures_total{endpoint}` and
//! `tower_mesh_balance_no_endpoints_total` through the `metrics` facade (the endpoint label
//! is the key's `Debug` form).
//!
//! # Discovery
//!
//! `D` must be `Unpin`, as for tower's balancer; with [`Balance::new`] (which spawns the
//! worker), `D`, its keys and services, and the strategy must be `Send + 'static`. Every
//! change (batched per catch-up) rebuilds the strategy before the next pick, so no pick
//! made for an older endpoint set survives a change (tower issue #856). A discovery stream
//! that ends leaves the last endpoint set in place.

mod avoid;
mod build;
mod endpoints;
mod handle;
mod hash;
mod hashed;
mod layer;
mod load;
mod service;
mod state;
mod wake;

mod dynamic;
mod least_requests;
mod maglev;
mod p2c;
mod random;
mod ring_hash;
mod round_robin;
mod switch;
mod weighted;

pub mod error;
pub mod future;

pub use self::avoid::{Avoid, Avoiding, EndpointId};
pub use self::dynamic::{AnyPick, KeyFn, Strategy};
pub use self::endpoints::{Endpoints, SlowStart};
pub use self::handle::{BalanceHandle, EndpointState};
pub use self::hash::{hash_bytes, stable_hash, HashKey, Header};
pub use self::layer::{BalanceLayer, Builder, PanicMode};
pub use self::least_requests::LeastRequests;
pub use self::maglev::Maglev;
pub use self::p2c::P2c;
pub use self::random::Random;
pub use self::ring_hash::RingHash;
pub use self::round_robin::RoundRobin;
pub use self::service::{Balance, Ref, Worker};
pub use self::switch::{StrategySwitch, Switchable};
pub use self::weighted::Weighted;

use std::hash::Hash;

#[cfg(test)]
use self::hash::mix64;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A load-balancing strategy: chooses one of the usable endpoints for a request.
///
/// [`Balance`] calls [`rebuild`](Pick::rebuild) after every change to the endpoint set
/// and when the last slow-start window closes, before the next pick, and
/// [`pick`](Pick::pick) from `call`, when at least one endpoint is usable
/// ([`Endpoints::usable_len`] `> 0`). `pick` must return the index of a usable endpoint
/// ([`Endpoints::is_usable`]).
pub trait Pick<Req> {
    /// The endpoint set changed: drop any state that refers to old indices.
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>);

    /// Choose a usable endpoint for `req`.
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &Req) -> usize;

    /// What load the balancer must track per endpoint for this strategy.
    fn tracking(&self) -> Tracking {
        Tracking::None
    }

    /// Endpoint `i`'s usability or requests in flight changed (after a pick, after a
    /// readiness poll, on entering or leaving panic mode). Strategies that index the set
    /// by load update it here; the default does nothing.
    #[inline]
    fn endpoint_changed<K>(&mut self, endpoints: &Endpoints<K>, i: usize) {
        let _ = (endpoints, i);
    }

    /// Whether the strategy wants completed requests reported (it reads them with
    /// [`Endpoints::take_completions`]). Costs a short lock per completed request.
    fn wants_completions(&self) -> bool {
        false
    }

    /// Whether the strategy can pick: `Pending` while a table it cannot pick without (the
    /// first [`Maglev`] table, a large [`RingHash`]) is being built off the runtime's
    /// threads, and then `cx` is woken when it is ready. Also the place to switch to a
    /// table rebuilt in the background. The balancer calls it after every
    /// [`rebuild`](Pick::rebuild) and whenever `cx`'s waker fires, with or without
    /// requests. The default is always ready.
    fn poll_built(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let _ = cx;
        std::task::Poll::Ready(())
    }

    /// Whether a table is being built in the background (the strategy picks from the
    /// previous one, or another way, meanwhile). The default is `false`.
    fn is_rebuilding(&self) -> bool {
        false
    }

    /// Whether the strategy must be [rebuilt](Pick::rebuild) before its next pick although
    /// the endpoint set did not change: [`Switchable`] was given a new strategy. The balancer
    /// checks it at each catch-up; the default is `false`.
    #[inline]
    fn needs_rebuild(&self) -> bool {
        false
    }

    /// The endpoints `req` asks not to go to ([`Avoid`]), if it carries a set and this
    /// strategy honours them. The default is `None` and costs nothing;
    /// [`Avoiding`] reads the set from an `http::Request`'s extensions.
    #[inline]
    fn avoid<'r>(&self, req: &'r Req) -> Option<&'r Avoid> {
        let _ = req;
        None
    }
}

/// Per-endpoint load that a strategy reads (see [`Pick::tracking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tracking {
    /// Nothing: the cheapest request path.
    None,
    /// Requests in flight ([`Endpoints::in_flight`]).
    InFlight,
    /// Requests in flight and a peak-EWMA latency ([`Endpoints::rtt_ns`]).
    Latency,
}

/// An endpoint's weight and health as the balancer sees them.
///
/// Weights are read when an endpoint is inserted (re-insert it under the same key to change
/// its weight); a weight of 0 counts as 1. Health is read each time the endpoint is polled
/// ready and only matters for the panic threshold: an endpoint whose health changes while
/// it is ready should wake the waker its last `poll_ready` was given, so that the balancer
/// polls it again and reads the new value. The discovery module wraps endpoints with
/// the weight and health of their registry instance; wrap any other service in
/// [`WithWeight`].
pub trait Weight {
    /// Relative weight (1 is the unit).
    fn weight(&self) -> u32;

    /// Whether the endpoint is healthy (defaults to `true`).
    fn is_healthy(&self) -> bool {
        true
    }
}

/// A service with a fixed weight.
#[derive(Debug, Clone)]
pub struct WithWeight<S> {
    inner: S,
    weight: u32,
}

impl<S> WithWeight<S> {
    /// Wrap `inner` with `weight`.
    pub fn new(inner: S, weight: u32) -> Self {
        Self { inner, weight }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Endpoints from [`RegistryDiscover`](crate::discover::RegistryDiscover) made with
/// [`MakeEndpoint::weighted`](crate::discover::MakeEndpoint::weighted): the instance's weight,
/// and healthy while `Passing` (a `Warning` instance counts as unhealthy for the panic
/// threshold).
#[cfg(feature = "discover")]
impl<S> Weight for crate::discover::InstanceEndpoint<S> {
    fn weight(&self) -> u32 {
        crate::discover::InstanceEndpoint::weight(self)
    }

    fn is_healthy(&self) -> bool {
        self.health() == crate::instance::Health::Passing
    }
}

impl<S> Weight for WithWeight<S> {
    fn weight(&self) -> u32 {
        self.weight
    }
}

impl<S, Req> tower_service::Service<Req> for WithWeight<S>
where
    S: tower_service::Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests;
