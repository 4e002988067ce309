//! The balancer's state behind its lock: the endpoint set, discovery, endpoint readiness
//! and the panic threshold. [`Balance`](super::Balance) and its worker share it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower_service::Service;

use crate::balance::endpoints::{Endpoints, HEALTHY, READY};
use crate::balance::error;
use crate::balance::layer::{Config, PanicMode};
use crate::balance::wake::{EndpointWaker, Wakes};
use crate::balance::{BoxError, Pick, Weight};

/// Published for `poll_ready`'s fast path: an endpoint can take a request.
pub(super) const USABLE: u8 = 0;
/// No endpoint can take a request (none ready, or the strategy's first table is not built).
pub(super) const NONE: u8 = 1;
/// Below the panic threshold with [`PanicMode::FailFast`].
pub(super) const PANIC: u8 = 2;
/// The discovery stream failed.
pub(super) const FAILED: u8 = 3;

/// The request-type-specific part of catching up, recorded by the first `poll_ready` so
/// that the worker can poll endpoints (`Service<Req>`) without knowing `Req`.
pub(super) type CatchUp<D, P> = fn(&mut State<D, P>);

pub(super) struct State<D, P>
where
    D: Discover,
{
    pub(super) discover: D,
    pub(super) discover_done: bool,
    pub(super) discover_error: Option<BoxError>,
    /// The endpoint services, densely packed (a pick touches one of them).
    pub(super) services: Vec<D::Service>,
    /// Each endpoint's waker, parallel to `services`.
    pub(super) wakers: Vec<Waker>,
    /// What each endpoint's waker queues, parallel to `services`.
    pub(super) endpoint_wakers: Vec<Arc<EndpointWaker>>,
    /// Per-endpoint request counters, parallel to `services`; empty when metrics are off.
    #[cfg(feature = "metrics")]
    pub(super) requests: Vec<metrics::Counter>,
    pub(super) set: Endpoints<D::Key>,
    pub(super) index: HashMap<D::Key, usize>,
    pub(super) strategy: P,
    pub(super) config: Config,
    /// The endpoint set changed since the strategy was last rebuilt.
    pub(super) dirty: bool,
    /// The strategy can pick (its first table, if it needs one, is built).
    pub(super) built: bool,
    pub(super) catch_up: Option<CatchUp<D, P>>,
    /// Wakes the worker: for the discovery stream and the strategy's table builds.
    pub(super) notify: Waker,
    pub(super) wakes: Arc<Wakes>,
    pub(super) woken: Vec<Arc<EndpointWaker>>,
}

impl<D, P> State<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Weight,
    D::Error: Into<BoxError>,
{
    pub(super) fn insert(&mut self, key: D::Key, svc: D::Service) {
        let weight = svc.weight();
        let i = if let Some(&i) = self.index.get(&key) {
            // Replacement: new service and weight, same slow-start clock.
            self.services[i] = svc;
            self.endpoint_wakers[i].set_removed();
            self.set.set_weight(i, weight);
            self.set.set_flags(i, 0);
            self.set.reset_load(i, Instant::now());
            let w = EndpointWaker::new(i, &self.wakes);
            self.wakers[i] = Waker::from(w.clone());
            self.endpoint_wakers[i] = w;
            i
        } else {
            let now = Instant::now();
            let i = self.services.len();
            self.index.insert(key.clone(), i);
            self.services.push(svc);
            let w = EndpointWaker::new(i, &self.wakes);
            self.wakers.push(Waker::from(w.clone()));
            self.endpoint_wakers.push(w);
            #[cfg(feature = "metrics")]
            if self.config.metrics {
                self.requests.push(metrics::counter!(
                    "tower_mesh_balance_requests_total",
                    "endpoint" => format!("{key:?}")
                ));
            }
            self.set.push(key, weight, now);
            i
        };
        // A new endpoint is polled by this catch-up, or by the first that knows the
        // request type.
        self.wakes.enqueue(&self.endpoint_wakers[i]);
        self.dirty = true;
    }

    pub(super) fn remove_index(&mut self, i: usize) -> D::Key {
        let key = self.set.swap_remove(i);
        drop(self.services.swap_remove(i));
        drop(self.wakers.swap_remove(i));
        self.endpoint_wakers.swap_remove(i).set_removed();
        #[cfg(feature = "metrics")]
        if self.config.metrics {
            drop(self.requests.swap_remove(i));
        }
        self.index.remove(&key);
        if i < self.services.len() {
            self.endpoint_wakers[i].set_index(i);
            *self
                .index
                .get_mut(&self.set.keys[i])
                .expect("moved key indexed") = i;
        }
        self.dirty = true;
        key
    }

    /// Apply every change the discovery stream has ready; removed endpoints are dropped
    /// here, with or without requests.
    pub(super) fn poll_discover(&mut self) {
        let notify = self.notify.clone();
        let mut cx = Context::from_waker(&notify);
        while !self.discover_done && self.discover_error.is_none() {
            match Pin::new(&mut self.discover).poll_discover(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    tracing::debug!("discovery stream ended; keeping the last endpoint set");
                    self.discover_done = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    let e = error::Discover(e.into());
                    tracing::warn!(error = %e, "discovery failed");
                    self.discover_error = Some(e.into());
                }
                Poll::Ready(Some(Ok(Change::Insert(key, svc)))) => {
                    tracing::trace!(endpoint = ?key, "endpoint inserted");
                    self.insert(key, svc);
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => {
                    if let Some(&i) = self.index.get(&key) {
                        tracing::trace!(endpoint = ?key, "endpoint removed");
                        self.remove_index(i);
                    }
                }
            }
        }
    }

    /// The worker's catch-up before the request type is known: discovery only. The
    /// endpoints stay queued for the first `poll_ready`.
    pub(super) fn catch_up_discovery(&mut self) {
        self.wakes.begin();
        self.poll_discover();
        self.wakes.keep_pending();
    }

    /// Whether an endpoint can take a request now, or what stops it.
    pub(super) fn status(&self) -> u8 {
        if self.discover_error.is_some() {
            FAILED
        } else if !self.built || self.set.usable_len() == 0 {
            NONE
        } else if self.set.is_panic() && self.config.panic_mode == PanicMode::FailFast {
            PANIC
        } else {
            USABLE
        }
    }

    pub(super) fn panic_error(&self) -> error::Panic {
        error::Panic {
            healthy: self.set.ready_healthy,
            discovered: self.set.len(),
            threshold_percent: self.config.panic_threshold_percent,
        }
    }
}

impl<D, P> State<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Weight,
    D::Error: Into<BoxError>,
{
    /// Everything there is to catch up on: discovery, woken endpoints, the strategy.
    pub(super) fn catch_up<Req>(&mut self)
    where
        D::Service: Service<Req>,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
        P: Pick<Req>,
    {
        self.wakes.begin();
        self.poll_discover();
        self.poll_woken::<Req>();
        self.refresh::<Req>();
    }

    /// Poll every endpoint whose waker fired (and those just inserted).
    pub(super) fn poll_woken<Req>(&mut self)
    where
        D::Service: Service<Req>,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
        P: Pick<Req>,
    {
        let mut woken = std::mem::take(&mut self.woken);
        self.wakes.take_woken(&mut woken);
        for w in woken.drain(..) {
            if let Some(i) = w.index() {
                self.poll_endpoint::<Req>(i);
            }
        }
        self.woken = woken;
    }

    /// Poll endpoint `i` with its own waker: ready (and its health read), not ready, or
    /// failed and removed (as tower does).
    #[inline]
    pub(super) fn poll_endpoint<Req>(&mut self, i: usize)
    where
        D::Service: Service<Req>,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
        P: Pick<Req>,
    {
        let mut cx = Context::from_waker(&self.wakers[i]);
        match self.services[i].poll_ready(&mut cx) {
            Poll::Pending => self.set_flags::<Req>(i, 0),
            Poll::Ready(Ok(())) => {
                let healthy = if self.services[i].is_healthy() {
                    HEALTHY
                } else {
                    0
                };
                self.set_flags::<Req>(i, READY | healthy);
            }
            Poll::Ready(Err(e)) => self.fail_endpoint(i, e.into()),
        }
    }

    #[cold]
    pub(super) fn fail_endpoint(&mut self, i: usize, e: BoxError) {
        tracing::warn!(endpoint = ?self.set.keys[i], error = %e, "endpoint failed readiness; removed");
        #[cfg(feature = "metrics")]
        if self.config.metrics {
            metrics::counter!(
                "tower_mesh_balance_endpoint_failures_total",
                "endpoint" => format!("{:?}", self.set.keys[i])
            )
            .increment(1);
        }
        self.remove_index(i);
    }

    /// Set endpoint `i`'s flags and tell the strategy if its usability changed.
    #[inline]
    pub(super) fn set_flags<Req>(&mut self, i: usize, flags: u8)
    where
        P: Pick<Req>,
    {
        let was = self.set.is_usable(i);
        self.set.set_flags(i, flags);
        if was != self.set.is_usable(i) {
            self.strategy.endpoint_changed(&self.set, i);
        }
    }

    /// Bring the strategy up to date: slow-start windows, a changed endpoint set, tables
    /// built in the background, the panic threshold.
    pub(super) fn refresh<Req>(&mut self)
    where
        P: Pick<Req>,
    {
        if let Some(until) = self.set.warm_until {
            if Instant::now() >= until {
                self.set.warm_until = None;
                self.dirty = true;
            }
        }
        if self.dirty || self.strategy.needs_rebuild() {
            self.strategy.rebuild(&self.set);
            self.dirty = false;
        }
        self.set
            .loads
            .collect_completions(self.strategy.wants_completions());
        let notify = self.notify.clone();
        self.built = self
            .strategy
            .poll_built(&mut Context::from_waker(&notify))
            .is_ready();
        self.update_panic::<Req>();
    }

    #[inline]
    pub(super) fn update_panic<Req>(&mut self)
    where
        P: Pick<Req>,
    {
        let total = self.set.len();
        let threshold = u64::from(self.config.panic_threshold_percent);
        let healthy = self.set.ready_healthy;
        let panic = total > 0 && (healthy as u64) * 100 < threshold * total as u64;
        let mask = if panic { READY } else { READY | HEALTHY };
        if mask != self.set.mask {
            self.set_mask::<Req>(mask, healthy, total);
        }
    }

    #[cold]
    pub(super) fn set_mask<Req>(&mut self, mask: u8, healthy: usize, total: usize)
    where
        P: Pick<Req>,
    {
        self.set.mask = mask;
        if mask & HEALTHY == 0 {
            tracing::warn!(healthy, discovered = total, "below the panic threshold");
        }
        for i in 0..total {
            self.strategy.endpoint_changed(&self.set, i);
        }
    }
}
