use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::ready;
use tokio::time::{Instant, Sleep};
use tower::discover::{Change, Discover};
use tower_service::Service;

use crate::balance::endpoints::{Endpoints, HEALTHY, READY};
use crate::balance::error;
use crate::balance::future::{ResponseFuture, NO_START};
use crate::balance::layer::{Config, PanicMode};
use crate::balance::{BoxError, Pick, Tracking, Weight};

/// A load balancer over the endpoints of discovery stream `D`, picking with strategy `P`.
///
/// See the [module documentation](super) for behaviour and an example.
pub struct Balance<D, P>
where
    D: Discover,
{
    discover: D,
    discover_done: bool,
    /// The endpoint services, densely packed (a pick touches one of them).
    services: Vec<D::Service>,
    /// Per-endpoint request counters, parallel to `services`; empty when metrics are off.
    #[cfg(feature = "metrics")]
    requests: Vec<metrics::Counter>,
    set: Endpoints<D::Key>,
    index: HashMap<D::Key, usize>,
    /// Indices of endpoints that are not known to be ready.
    to_poll: Vec<usize>,
    strategy: P,
    config: Config,
    dirty: bool,
    unready_since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<D, P> Balance<D, P>
where
    D: Discover,
{
    /// A balancer over `discover` with `strategy` and default settings (see
    /// [`BalanceLayer`](super::BalanceLayer) for the settings).
    pub fn new(discover: D, strategy: P) -> Self {
        Self::with_config(discover, strategy, Config::default())
    }

    pub(crate) fn with_config(discover: D, strategy: P, config: Config) -> Self {
        Self {
            discover,
            discover_done: false,
            services: Vec::new(),
            #[cfg(feature = "metrics")]
            requests: Vec::new(),
            set: Endpoints::new(config.slow_start, config.default_rtt, config.decay),
            index: HashMap::new(),
            to_poll: Vec::new(),
            strategy,
            config,
            dirty: false,
            unready_since: None,
            sleep: None,
        }
    }

    /// The discovery stream.
    pub fn get_ref(&self) -> &D {
        &self.discover
    }

    /// The discovery stream, mutably.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.discover
    }

    /// The strategy.
    pub fn strategy(&self) -> &P {
        &self.strategy
    }

    /// Drop the endpoints and return the discovery stream.
    pub fn into_inner(self) -> D {
        self.discover
    }

    /// Number of discovered endpoints.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no endpoint is discovered.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Number of endpoints known to be ready (as of the last `poll_ready`).
    pub fn ready_len(&self) -> usize {
        self.set.ready
    }

    /// The endpoint set as strategies see it.
    pub fn endpoints(&self) -> &Endpoints<D::Key> {
        &self.set
    }
}

impl<D, P> Balance<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Weight,
    D::Error: Into<BoxError>,
{
    fn insert(&mut self, key: D::Key, svc: D::Service) {
        let weight = svc.weight();
        if let Some(&i) = self.index.get(&key) {
            // Replacement: new service and weight, same slow-start clock.
            self.services[i] = svc;
            self.set.set_weight(i, weight);
            self.set.set_flags(i, 0);
            self.set.reset_load(i, Instant::now());
        } else {
            let now = Instant::now();
            self.index.insert(key.clone(), self.services.len());
            self.services.push(svc);
            #[cfg(feature = "metrics")]
            if self.config.metrics {
                self.requests.push(metrics::counter!(
                    "tower_mesh_balance_requests_total",
                    "endpoint" => format!("{key:?}")
                ));
            }
            self.set.push(key, weight, now);
        }
        self.dirty = true;
    }

    fn remove_index(&mut self, i: usize) -> D::Key {
        let key = self.set.swap_remove(i);
        drop(self.services.swap_remove(i));
        #[cfg(feature = "metrics")]
        if self.config.metrics {
            drop(self.requests.swap_remove(i));
        }
        self.index.remove(&key);
        if i < self.services.len() {
            *self
                .index
                .get_mut(&self.set.keys[i])
                .expect("moved key indexed") = i;
        }
        self.dirty = true;
        key
    }

    fn poll_discover(&mut self, cx: &mut Context<'_>) -> Result<(), error::Discover> {
        while !self.discover_done {
            match Pin::new(&mut self.discover).poll_discover(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    tracing::debug!("discovery stream ended; keeping the last endpoint set");
                    self.discover_done = true;
                }
                Poll::Ready(Some(Err(e))) => return Err(error::Discover(e.into())),
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
        Ok(())
    }

    /// Set endpoint `i`'s flags and tell the strategy if its usability changed.
    fn set_flags<Req>(&mut self, i: usize, flags: u8)
    where
        P: Pick<Req>,
    {
        let was = self.set.is_usable(i);
        self.set.set_flags(i, flags);
        if was != self.set.is_usable(i) {
            self.strategy.endpoint_changed(&self.set, i);
        }
    }

    /// Poll every endpoint not known to be ready; drop those that fail.
    fn poll_endpoints<Req>(&mut self, cx: &mut Context<'_>)
    where
        D::Service: Service<Req>,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
        P: Pick<Req>,
    {
        if self.dirty {
            // Indices may have moved: recompute the set of endpoints to poll.
            self.to_poll.clear();
            self.to_poll
                .extend((0..self.set.len()).filter(|&i| self.set.flags[i] & READY == 0));
        }
        let mut j = 0;
        while j < self.to_poll.len() {
            let i = self.to_poll[j];
            match self.services[i].poll_ready(cx) {
                Poll::Pending => {
                    self.set_flags::<Req>(i, 0);
                    j += 1;
                }
                Poll::Ready(Ok(())) => {
                    let healthy = if self.services[i].is_healthy() {
                        HEALTHY
                    } else {
                        0
                    };
                    self.set_flags::<Req>(i, READY | healthy);
                    self.to_poll.swap_remove(j);
                }
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
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
                    // Indices moved: rebuild the poll list and start over.
                    self.to_poll.clear();
                    self.to_poll
                        .extend((0..self.set.len()).filter(|&i| self.set.flags[i] & READY == 0));
                    j = 0;
                }
            }
        }
    }

    fn update_panic<Req>(&mut self) -> Option<error::Panic>
    where
        P: Pick<Req>,
    {
        let total = self.set.len();
        let threshold = u64::from(self.config.panic_threshold_percent);
        let healthy = self.set.ready_healthy;
        let panic = total > 0 && (healthy as u64) * 100 < threshold * total as u64;
        let mask = if panic { READY } else { READY | HEALTHY };
        if mask != self.set.mask {
            self.set.mask = mask;
            if panic {
                tracing::warn!(healthy, discovered = total, "below the panic threshold");
            }
            for i in 0..total {
                self.strategy.endpoint_changed(&self.set, i);
            }
        }
        if panic && self.config.panic_mode == PanicMode::FailFast {
            return Some(error::Panic {
                healthy,
                discovered: total,
                threshold_percent: self.config.panic_threshold_percent,
            });
        }
        None
    }
}

impl<D, P, Req> Service<Req> for Balance<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Service<Req> + Weight,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    D::Error: Into<BoxError>,
    P: Pick<Req>,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<D::Service as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_discover(cx)?;
        self.set
            .loads
            .collect_completions(self.strategy.wants_completions());
        self.poll_endpoints::<Req>(cx);
        if let Some(until) = self.set.warm_until {
            if Instant::now() >= until {
                self.set.warm_until = None;
                self.dirty = true;
            }
        }
        if self.dirty {
            self.strategy.rebuild(&self.set);
            self.dirty = false;
        }
        let panic = self.update_panic::<Req>();
        if self.set.usable_len() > 0 {
            if let Some(p) = panic {
                return Poll::Ready(Err(p.into()));
            }
            self.unready_since = None;
            return Poll::Ready(Ok(()));
        }
        if let Some(p) = panic {
            return Poll::Ready(Err(p.into()));
        }

        // Nothing ready: wait, but not for longer than the configured bound.
        let now = Instant::now();
        let since = *self.unready_since.get_or_insert(now);
        let deadline = since + self.config.no_endpoints_timeout;
        let fail = error::NoEndpoints {
            discovered: self.set.len(),
            waited: now.saturating_duration_since(since),
        };
        if now >= deadline {
            #[cfg(feature = "metrics")]
            if self.config.metrics {
                metrics::counter!("tower_mesh_balance_no_endpoints_total").increment(1);
            }
            return Poll::Ready(Err(fail.into()));
        }
        let sleep = match &mut self.sleep {
            Some(s) => {
                if s.deadline() != deadline {
                    s.as_mut().reset(deadline);
                }
                s
            }
            none => none.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        ready!(sleep.as_mut().poll(cx));
        #[cfg(feature = "metrics")]
        if self.config.metrics {
            metrics::counter!("tower_mesh_balance_no_endpoints_total").increment(1);
        }
        Poll::Ready(Err(error::NoEndpoints {
            discovered: self.set.len(),
            waited: self.config.no_endpoints_timeout,
        }
        .into()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(
            self.set.usable_len() > 0,
            "Balance::call without a successful poll_ready"
        );
        let tracking = self.strategy.tracking();
        self.set.now = if tracking == Tracking::Latency || self.set.is_warming() {
            Some(Instant::now())
        } else {
            None
        };
        let i = self.strategy.pick(&self.set, &req);
        debug_assert!(
            self.set.is_usable(i),
            "strategy picked an unusable endpoint"
        );
        // The endpoint must be polled ready again before its next request.
        self.set.set_flags(i, 0);
        self.to_poll.push(i);
        let (guard, start_ns) = match tracking {
            Tracking::None => (None, NO_START),
            Tracking::InFlight => (Some(self.set.guard(i)), NO_START),
            Tracking::Latency => (
                Some(self.set.guard(i)),
                self.set
                    .now
                    .map_or(NO_START, |t| self.set.loads.table.ns_at(t)),
            ),
        };
        self.strategy.endpoint_changed(&self.set, i);
        #[cfg(feature = "metrics")]
        if let Some(requests) = self.requests.get(i) {
            requests.increment(1);
        }
        // A span only when a subscriber listens at DEBUG: creating a disabled span still
        // costs tens of nanoseconds when tracing's `log` feature is on. Each branch builds
        // the future in one expression, so that it is written in place rather than
        // assembled on the stack and copied (the copy's wide reads of the span's narrow
        // stores stalled on store forwarding).
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            let span = tracing::debug_span!("balance", endpoint = ?self.set.keys[i]);
            let fut = {
                let _e = span.enter();
                self.services[i].call(req)
            };
            ResponseFuture::new(fut, guard, start_ns, span)
        } else {
            // Entering `Span::none()` would do nothing.
            ResponseFuture::new(
                self.services[i].call(req),
                guard,
                start_ns,
                tracing::Span::none(),
            )
        }
    }
}

impl<D, P> fmt::Debug for Balance<D, P>
where
    D: Discover + fmt::Debug,
    D::Key: fmt::Debug,
    P: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("discover", &self.discover)
            .field("endpoints", &self.set)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}
