//! Endpoints that carry their instance's weight and live health.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use tower_service::Service;

use crate::instance::{Health, Instance};

use super::MakeEndpoint;

/// An instance's health as discovery last saw it, shared by discovery and the endpoints made
/// for the instance.
///
/// Discovery does not re-insert an endpoint when its instance only moves between two healthy
/// states (`Passing` and `Warning`): it [`set`](LiveHealth::set)s the new value here instead,
/// and wakes the task that last polled the endpoint ([`register`](LiveHealth::register)), so a
/// balancer re-reads it (for its panic threshold) without waiting for a request. Clones share
/// one value and one waker slot.
#[derive(Clone)]
pub struct LiveHealth {
    cell: Arc<Cell>,
}

struct Cell {
    health: AtomicU8,
    waker: AtomicWaker,
}

impl LiveHealth {
    /// A cell holding `health`.
    pub fn new(health: Health) -> Self {
        LiveHealth {
            cell: Arc::new(Cell {
                health: AtomicU8::new(encode(health)),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// The current value.
    pub fn get(&self) -> Health {
        decode(self.cell.health.load(Ordering::Acquire))
    }

    /// Sets the value; when it changed, wakes the waker last [`register`](LiveHealth::register)ed.
    /// Returns whether it changed.
    pub fn set(&self, health: Health) -> bool {
        let changed = self.cell.health.swap(encode(health), Ordering::AcqRel) != encode(health);
        if changed {
            self.cell.waker.wake();
        }
        changed
    }

    /// Remembers `waker` to wake at the next change (replacing the one registered before; a
    /// waker that would wake the same task is not cloned again).
    pub fn register(&self, waker: &Waker) {
        self.cell.waker.register(waker);
    }
}

fn encode(health: Health) -> u8 {
    match health {
        Health::Passing => 0,
        Health::Warning => 1,
        Health::Critical => 2,
        Health::Maintenance => 3,
    }
}

fn decode(n: u8) -> Health {
    match n {
        0 => Health::Passing,
        1 => Health::Warning,
        2 => Health::Critical,
        _ => Health::Maintenance,
    }
}

impl fmt::Debug for LiveHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LiveHealth").field(&self.get()).finish()
    }
}

/// An endpoint with the weight and the live health of the instance it was made for, so
/// weighted balancers (and panic thresholds) can read them. Made by [`MakeEndpoint::weighted`].
///
/// The weight is the instance's when the endpoint was made (a new weight re-inserts the
/// endpoint). The health is live: discovery updates it when the instance moves between
/// `Passing` and `Warning`, and wakes the task that last polled the endpoint's readiness.
/// Clones share the health.
///
/// It is tower's [`Load`](tower::load::Load) when `S` is, with `S`'s metric: wrap the
/// endpoints in a load metric (with [`MakeEndpoint::layered`]) before `weighted`, and the same
/// factory feeds tower's p2c balancer directly and tower-mesh's weighted `Balance`:
///
/// ```
/// use tower::layer::layer_fn;
/// use tower::load::{CompleteOnResponse, PendingRequests};
/// use tower::ServiceBuilder;
/// use tower_mesh::discover::{HttpEndpoints, MakeEndpoint, RegistryDiscover};
/// use tower_mesh::registry::MemoryRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let endpoints = HttpEndpoints::new()
///     .layered(layer_fn(|s| PendingRequests::new(s, CompleteOnResponse::default())))
///     .weighted();
/// let discover = RegistryDiscover::new(MemoryRegistry::new(), "orders", endpoints).spawn();
/// // `InstanceEndpoint<PendingRequests<HttpEndpoint>>` is `Load`: no load wrapper needed.
/// let client = ServiceBuilder::new()
///     .buffer(1024)
///     .service(tower::balance::p2c::Balance::new(discover));
/// # drop(client);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct InstanceEndpoint<S> {
    inner: S,
    weight: u32,
    health: LiveHealth,
}

impl<S> InstanceEndpoint<S> {
    /// Wraps `inner` with `instance`'s weight and health (a health of its own, which nothing
    /// updates unless [`live_health`](InstanceEndpoint::live_health) is set).
    pub fn new(inner: S, instance: &Instance) -> Self {
        Self::with_live_health(inner, instance, LiveHealth::new(instance.health()))
    }

    /// Wraps `inner` with `instance`'s weight and the shared `health`.
    pub fn with_live_health(inner: S, instance: &Instance, health: LiveHealth) -> Self {
        InstanceEndpoint {
            inner,
            weight: instance.weight(),
            health,
        }
    }

    /// The instance's weight when the endpoint was made.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The instance's health now, as discovery last saw it (`Passing` or `Warning` while the
    /// endpoint is in the balancer: discovery removes it in any other).
    pub fn health(&self) -> Health {
        self.health.get()
    }

    /// The shared health cell.
    pub fn live_health(&self) -> &LiveHealth {
        &self.health
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for InstanceEndpoint<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A health change wakes whoever polled last, so it re-reads the health.
        self.health.register(cx.waker());
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}

/// The load of the wrapped endpoint.
impl<S: tower::load::Load> tower::load::Load for InstanceEndpoint<S> {
    type Metric = S::Metric;

    fn load(&self) -> Self::Metric {
        self.inner.load()
    }
}

/// A factory whose endpoints carry their instance's weight and live health; see
/// [`MakeEndpoint::weighted`].
#[derive(Debug, Clone)]
pub struct Weighted<F> {
    pub(super) inner: F,
}

impl<F: MakeEndpoint> MakeEndpoint for Weighted<F> {
    type Service = InstanceEndpoint<F::Service>;

    fn make_endpoint(&mut self, instance: &Instance) -> Self::Service {
        InstanceEndpoint::new(self.inner.make_endpoint(instance), instance)
    }

    fn make_live_endpoint(&mut self, instance: &Instance) -> (Self::Service, Option<LiveHealth>) {
        let (inner, live) = self.inner.make_live_endpoint(instance);
        let live = live.unwrap_or_else(|| LiveHealth::new(instance.health()));
        (
            InstanceEndpoint::with_live_health(inner, instance, live.clone()),
            Some(live),
        )
    }
}
