//! [`BalanceHandle`]: what a balancer holds, readable from anywhere while the balancer
//! serves (behind a `Buffer`, in another task).
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower::discover::ServiceList;
//! use tower_mesh::balance::{Balance, RoundRobin, WithWeight};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let endpoints = ServiceList::new(vec![WithWeight::new(tower::service_fn(
//!     |_: ()| async { Ok::<_, tower::BoxError>(()) },
//! ), 1)]);
//! let balance = Balance::new(endpoints, RoundRobin::new());
//! let handle = balance.handle();
//! let client = ServiceBuilder::new().buffer(64).service(balance);
//! // Later, from an admin endpoint or a metrics task:
//! println!("{} discovered, {} ready", handle.len(), handle.ready_len());
//! # drop(client);
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Weak};

use crate::balance::endpoints::{Endpoints, HEALTHY, READY};

/// One endpoint as the balancer sees it ([`BalanceHandle::endpoints`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointState<K> {
    /// The discovery key (for registry discovery, the instance id).
    pub key: K,
    /// The endpoint's `poll_ready` said it can take a request. An endpoint that is not
    /// ready (its breaker open, its connection failing) is *ejected*: it takes no request
    /// until it turns ready again.
    pub ready: bool,
    /// Its health (from [`Weight::is_healthy`](super::Weight::is_healthy)) allows it outside
    /// panic mode.
    pub healthy: bool,
    /// Its configured weight.
    pub weight: u32,
    /// Requests in flight on it (when the strategy tracks them; 0 otherwise).
    pub in_flight: usize,
}

/// Reads a [`Balance`](super::Balance)'s endpoint set: discovered, ready and ejected
/// endpoints by key, as the balancer holds them (not as the discovery stream last said).
/// Made by [`Balance::handle`](super::Balance::handle); cheap to clone; does not keep the
/// balancer alive (once it is dropped, every reading is empty and
/// [`is_closed`](Self::is_closed) is `true`).
///
/// Each reading takes the balancer's lock for as long as it copies the set: fine for an
/// admin endpoint or a metrics scrape, not for every request.
pub struct BalanceHandle<K> {
    inner: Weak<dyn Inspect<K> + Send + Sync>,
}

impl<K> Clone for BalanceHandle<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for BalanceHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceHandle")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// Read access to a balancer's endpoint set, without its type parameters.
pub(crate) trait Inspect<K> {
    fn inspect(&self, f: &mut dyn FnMut(&Endpoints<K>));
}

impl<K: Clone> BalanceHandle<K> {
    pub(crate) fn new(inner: Weak<dyn Inspect<K> + Send + Sync>) -> Self {
        Self { inner }
    }

    fn read<T>(&self, default: T, mut f: impl FnMut(&Endpoints<K>) -> T) -> T {
        let Some(inner) = self.inner.upgrade() else {
            return default;
        };
        let mut out = None;
        inner.inspect(&mut |set| out = Some(f(set)));
        drop(inner);
        out.unwrap_or(default)
    }

    fn keys(&self, keep: impl Fn(u8) -> bool) -> Vec<K> {
        self.read(Vec::new(), |set| {
            (0..set.len())
                .filter(|&i| keep(set.flags[i]))
                .map(|i| set.key(i).clone())
                .collect()
        })
    }

    /// Every endpoint with its state.
    pub fn endpoints(&self) -> Vec<EndpointState<K>> {
        self.read(Vec::new(), |set| {
            (0..set.len())
                .map(|i| EndpointState {
                    key: set.key(i).clone(),
                    ready: set.flags[i] & READY != 0,
                    healthy: set.flags[i] & HEALTHY != 0,
                    weight: set.weight(i),
                    in_flight: set.in_flight(i),
                })
                .collect()
        })
    }

    /// The keys of every discovered endpoint.
    pub fn discovered(&self) -> Vec<K> {
        self.keys(|_| true)
    }

    /// The keys of the endpoints that can take a request now.
    pub fn ready(&self) -> Vec<K> {
        self.keys(|flags| flags & READY != 0)
    }

    /// The keys of the discovered endpoints that cannot take a request now (their
    /// readiness says no: an endpoint breaker open, a connection failing).
    pub fn ejected(&self) -> Vec<K> {
        self.keys(|flags| flags & READY == 0)
    }

    /// Number of discovered endpoints.
    pub fn len(&self) -> usize {
        self.read(0, |set| set.len())
    }

    /// Whether no endpoint is discovered (or the balancer is gone).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of ready endpoints.
    pub fn ready_len(&self) -> usize {
        self.read(0, |set| set.ready)
    }

    /// Whether the balancer is in panic mode (fewer healthy endpoints than its threshold,
    /// so unhealthy ready ones take traffic too).
    pub fn is_panic(&self) -> bool {
        self.read(false, |set| set.is_panic())
    }
}

impl<K> BalanceHandle<K> {
    /// Whether the balancer has been dropped.
    pub fn is_closed(&self) -> bool {
        self.inner.strong_count() == 0
    }
}

/// Erases a balancer's shared state into the handle's trait object.
pub(crate) fn erase<K, T>(shared: &Arc<T>) -> Weak<dyn Inspect<K> + Send + Sync>
where
    T: Inspect<K> + Send + Sync + 'static,
{
    let weak: Weak<T> = Arc::downgrade(shared);
    weak
}
