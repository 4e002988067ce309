use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::discover::{Change, Discover};
use tower_service::Service;

use crate::balance::endpoints::{Endpoints, HEALTHY, READY};
use crate::balance::error;
use crate::balance::future::{ResponseFuture, NO_START};
use crate::balance::layer::{Config, PanicMode};
use crate::balance::wake::{EndpointWaker, Notify, Wakes};
use crate::balance::{BoxError, Pick, Tracking, Weight};

/// Published for `poll_ready`'s fast path: an endpoint can take a request.
const USABLE: u8 = 0;
/// No endpoint can take a request (none ready, or the strategy's first table is not built).
const NONE: u8 = 1;
/// Below the panic threshold with [`PanicMode::FailFast`].
const PANIC: u8 = 2;
/// The discovery stream failed.
const FAILED: u8 = 3;

/// A load balancer over the endpoints of discovery stream `D`, picking with strategy `P`.
///
/// The endpoints live in state shared with a background [`Worker`] that polls discovery,
/// endpoints that woke and table builds as they happen, so the balancer makes progress
/// with or without requests; see the [module documentation](super) for behaviour and an
/// example.
pub struct Balance<D, P>
where
    D: Discover,
{
    shared: Arc<Shared<D, P>>,
    /// The worker, while it is not spawned yet (no runtime when the balancer was made).
    unspawned: Option<Worker<D, P>>,
    /// Spawns the worker on the current tokio runtime, or gives it back outside one.
    spawn: Option<Spawn<D, P>>,
    no_endpoints_timeout: Option<Duration>,
    #[cfg(feature = "metrics")]
    metrics: bool,
    /// Since when this handle has seen no usable endpoint.
    unready_since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// What the next `call` fails with, as decided by `poll_ready`.
    fail: Option<BoxError>,
}

/// Spawns a balancer's worker on the current tokio runtime, or gives it back outside one.
type Spawn<D, P> = fn(Worker<D, P>) -> Result<(), Worker<D, P>>;

/// Runs a [`Balance`]'s background work: applies discovery changes (dropping removed
/// endpoints at once), polls endpoints whose wakers fired, and switches to strategy tables
/// built off the runtime's threads, without waiting for a request. Ends when the balancer
/// is dropped.
///
/// [`Balance::new`] spawns it on tokio; [`Balance::pair`] hands it to you.
#[must_use = "a worker does nothing unless polled"]
pub struct Worker<D, P>
where
    D: Discover,
{
    shared: Arc<Shared<D, P>>,
}

struct Shared<D, P>
where
    D: Discover,
{
    state: Mutex<State<D, P>>,
    /// Also holds the status, [`USABLE`], [`NONE`], [`PANIC`] or [`FAILED`], as of the
    /// last change.
    wakes: Arc<Wakes>,
}

impl<D, P> Shared<D, P>
where
    D: Discover,
{
    #[inline]
    fn lock(&self) -> MutexGuard<'_, State<D, P>> {
        crate::sync::lock(&self.state)
    }

    #[inline]
    fn publish(&self, status: u8) {
        self.wakes.publish(status);
    }
}

/// The request-type-specific part of catching up, recorded by the first `poll_ready` so
/// that the worker can poll endpoints (`Service<Req>`) without knowing `Req`.
type CatchUp<D, P> = fn(&mut State<D, P>);

struct State<D, P>
where
    D: Discover,
{
    discover: D,
    discover_done: bool,
    discover_error: Option<BoxError>,
    /// The endpoint services, densely packed (a pick touches one of them).
    services: Vec<D::Service>,
    /// Each endpoint's waker, parallel to `services`.
    wakers: Vec<Waker>,
    /// What each endpoint's waker queues, parallel to `services`.
    endpoint_wakers: Vec<Arc<EndpointWaker>>,
    /// Per-endpoint request counters, parallel to `services`; empty when metrics are off.
    #[cfg(feature = "metrics")]
    requests: Vec<metrics::Counter>,
    set: Endpoints<D::Key>,
    index: HashMap<D::Key, usize>,
    strategy: P,
    config: Config,
    /// The endpoint set changed since the strategy was last rebuilt.
    dirty: bool,
    /// The strategy can pick (its first table, if it needs one, is built).
    built: bool,
    catch_up: Option<CatchUp<D, P>>,
    /// Wakes the worker: for the discovery stream and the strategy's table builds.
    notify: Waker,
    wakes: Arc<Wakes>,
    woken: Vec<Arc<EndpointWaker>>,
}

impl<D, P> Balance<D, P>
where
    D: Discover + Unpin + Send + 'static,
    D::Key: Hash + Eq + Clone + fmt::Debug + Send,
    D::Service: Weight + Send,
    D::Error: Into<BoxError>,
    P: Send + 'static,
{
    /// A balancer over `discover` with `strategy` and default settings (see
    /// [`BalanceLayer`](super::BalanceLayer) for the settings).
    ///
    /// Its [`Worker`] is spawned on the current tokio runtime; outside one, on the runtime
    /// of the first `poll_ready` (until then, discovery changes wait in the stream). For
    /// another executor, use [`Balance::pair`].
    pub fn new(discover: D, strategy: P) -> Self {
        Self::with_config(discover, strategy, Config::default())
    }

    pub(crate) fn with_config(discover: D, strategy: P, config: Config) -> Self {
        let (mut balance, worker) = Self::pair_with_config(discover, strategy, config);
        balance.spawn = Some(spawn::<D, P>);
        if let Err(worker) = spawn(worker) {
            balance.unspawned = Some(worker);
        }
        balance
    }
}

fn spawn<D, P>(worker: Worker<D, P>) -> Result<(), Worker<D, P>>
where
    D: Discover + Unpin + Send + 'static,
    D::Key: Hash + Eq + Clone + fmt::Debug + Send,
    D::Service: Weight + Send,
    D::Error: Into<BoxError>,
    P: Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            drop(rt.spawn(worker));
            Ok(())
        }
        Err(_) => Err(worker),
    }
}

impl<D, P> Balance<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Weight,
    D::Error: Into<BoxError>,
{
    /// A balancer and its [`Worker`], for executors other than tokio's: the balancer
    /// works without the worker, but then discovery changes, endpoints turning ready and
    /// removed endpoints being dropped wait for the next request.
    pub fn pair(discover: D, strategy: P) -> (Self, Worker<D, P>) {
        Self::pair_with_config(discover, strategy, Config::default())
    }

    pub(crate) fn pair_with_config(
        discover: D,
        strategy: P,
        config: Config,
    ) -> (Self, Worker<D, P>) {
        let wakes = Arc::new(Wakes::default());
        let notify = Waker::from(Arc::new(Notify(Arc::downgrade(&wakes))));
        let state = State {
            discover,
            discover_done: false,
            discover_error: None,
            services: Vec::new(),
            wakers: Vec::new(),
            endpoint_wakers: Vec::new(),
            #[cfg(feature = "metrics")]
            requests: Vec::new(),
            set: Endpoints::new(config.slow_start, config.default_rtt, config.decay),
            index: HashMap::new(),
            strategy,
            config: config.clone(),
            dirty: true,
            built: false,
            catch_up: None,
            notify,
            wakes: wakes.clone(),
            woken: Vec::new(),
        };
        // Nothing is known yet: the first `poll_ready` and the worker's first poll catch up.
        wakes.publish(NONE);
        wakes.keep_pending();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wakes,
        });
        let balance = Balance {
            shared: shared.clone(),
            unspawned: None,
            spawn: None,
            no_endpoints_timeout: config.no_endpoints_timeout,
            #[cfg(feature = "metrics")]
            metrics: config.metrics,
            unready_since: None,
            sleep: None,
            fail: None,
        };
        (balance, Worker { shared })
    }
}

/// A view into a [`Balance`]'s state ([`Balance::endpoints`], [`Balance::strategy`]). It
/// holds the balancer's lock: drop it before calling the balancer again or awaiting.
pub struct Ref<'a, T: ?Sized> {
    inner: Box<dyn Deref<Target = T> + 'a>,
}

struct Project<'a, G, T: ?Sized> {
    guard: MutexGuard<'a, G>,
    project: fn(&G) -> &T,
}

impl<G, T: ?Sized> Deref for Project<'_, G, T> {
    type Target = T;

    fn deref(&self) -> &T {
        (self.project)(&self.guard)
    }
}

impl<T: ?Sized> Deref for Ref<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Ref<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<D, P> Balance<D, P>
where
    D: Discover,
{
    fn view<'a, T: ?Sized + 'a>(&'a self, project: fn(&State<D, P>) -> &T) -> Ref<'a, T> {
        Ref {
            inner: Box::new(Project {
                guard: self.shared.lock(),
                project,
            }),
        }
    }

    /// The strategy (holds the balancer's lock; see [`Ref`]).
    pub fn strategy(&self) -> Ref<'_, P> {
        self.view(|s| &s.strategy)
    }

    /// The endpoint set as strategies see it (holds the balancer's lock; see [`Ref`]).
    pub fn endpoints(&self) -> Ref<'_, Endpoints<D::Key>> {
        self.view(|s| &s.set)
    }

    /// Number of discovered endpoints.
    pub fn len(&self) -> usize {
        self.shared.lock().services.len()
    }

    /// Whether no endpoint is discovered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of endpoints known to be ready.
    pub fn ready_len(&self) -> usize {
        self.shared.lock().set.ready
    }
}

impl<D, P> State<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Weight,
    D::Error: Into<BoxError>,
{
    fn insert(&mut self, key: D::Key, svc: D::Service) {
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

    fn remove_index(&mut self, i: usize) -> D::Key {
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
    fn poll_discover(&mut self) {
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
    fn catch_up_discovery(&mut self) {
        self.wakes.begin();
        self.poll_discover();
        self.wakes.keep_pending();
    }

    /// Whether an endpoint can take a request now, or what stops it.
    fn status(&self) -> u8 {
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

    fn panic_error(&self) -> error::Panic {
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
    fn catch_up<Req>(&mut self)
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
    fn poll_woken<Req>(&mut self)
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
    fn poll_endpoint<Req>(&mut self, i: usize)
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
    fn fail_endpoint(&mut self, i: usize, e: BoxError) {
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

    /// Bring the strategy up to date: slow-start windows, a changed endpoint set, tables
    /// built in the background, the panic threshold.
    fn refresh<Req>(&mut self)
    where
        P: Pick<Req>,
    {
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
    fn update_panic<Req>(&mut self)
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
    fn set_mask<Req>(&mut self, mask: u8, healthy: usize, total: usize)
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

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Fast path: nothing changed since the last call, and an endpoint can take the
        // request (the call re-checks under the lock).
        if self.shared.wakes.word() == USABLE {
            self.fail = None;
            self.unready_since = None;
            return Poll::Ready(Ok(()));
        }
        self.poll_ready_slow::<Req>(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(e) = self.fail.take() {
            return ResponseFuture::failed(e);
        }
        let shared = &*self.shared;
        let mut st = shared.lock();
        if shared.wakes.is_pending() || st.set.warm_until.is_some_and(|u| Instant::now() >= u) {
            st.catch_up::<Req>();
        }
        if st.status() != USABLE {
            // The endpoint that was ready went away between `poll_ready` and `call`.
            let e = match st.status() {
                PANIC => st.panic_error().into(),
                _ => error::NoEndpoints {
                    discovered: st.set.len(),
                    waited: Duration::ZERO,
                }
                .into(),
            };
            shared.publish(st.status());
            drop(st);
            return ResponseFuture::failed(e);
        }
        let st = &mut *st;
        let tracking = st.strategy.tracking();
        st.set.now = if tracking == Tracking::Latency || st.set.is_warming() {
            Some(Instant::now())
        } else {
            None
        };
        let i = st.strategy.pick(&st.set, &req);
        debug_assert!(st.set.is_usable(i), "strategy picked an unusable endpoint");
        // The endpoint is polled ready again (below) before its next request.
        st.set.set_flags(i, 0);
        let (guard, start_ns) = match tracking {
            Tracking::None => (None, NO_START),
            Tracking::InFlight => (Some(st.set.guard(i)), NO_START),
            Tracking::Latency => (
                Some(st.set.guard(i)),
                st.set.now.map_or(NO_START, |t| st.set.loads.table.ns_at(t)),
            ),
        };
        st.strategy.endpoint_changed(&st.set, i);
        #[cfg(feature = "metrics")]
        if let Some(requests) = st.requests.get(i) {
            requests.increment(1);
        }
        // A span only when a subscriber listens at DEBUG: creating a disabled span still
        // costs tens of nanoseconds when tracing's `log` feature is on. Each branch builds
        // the future in one expression, so that it is written in place rather than
        // assembled on the stack and copied (the copy's wide reads of the span's narrow
        // stores stalled on store forwarding).
        let fut = if tracing::level_enabled!(tracing::Level::DEBUG) {
            let span = tracing::debug_span!("balance", endpoint = ?st.set.keys[i]);
            let fut = {
                let _e = span.enter();
                st.services[i].call(req)
            };
            ResponseFuture::new(fut, guard, start_ns, span)
        } else {
            // Entering `Span::none()` would do nothing.
            ResponseFuture::new(
                st.services[i].call(req),
                guard,
                start_ns,
                tracing::Span::none(),
            )
        };
        // Ready again for the next request, or not ready until its waker fires.
        st.poll_endpoint::<Req>(i);
        st.update_panic::<Req>();
        if st.dirty {
            // It failed readiness and was removed: the strategy is rebuilt first thing.
            shared.wakes.keep_pending();
        }
        shared.publish(st.status());
        fut
    }
}

impl<D, P> Balance<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Weight,
    D::Error: Into<BoxError>,
{
    #[cold]
    fn poll_ready_slow<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        D::Service: Service<Req>,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
        P: Pick<Req>,
    {
        self.fail = None;
        if let Some(worker) = self.unspawned.take() {
            if let Some(spawn) = self.spawn {
                self.unspawned = spawn(worker).err();
            }
        }
        let shared = &*self.shared;
        // Registered before looking, so that a change after the look wakes this task.
        shared.wakes.caller.register(cx.waker());
        let (status, discovered) = {
            let mut st = shared.lock();
            st.catch_up = Some(State::<D, P>::catch_up::<Req>);
            st.catch_up::<Req>();
            let status = st.status();
            shared.publish(status);
            match status {
                FAILED => {
                    let e = st.discover_error.take().expect("discovery error kept");
                    // Report it once; the next poll finds the endpoint set as it was.
                    shared.publish(st.status());
                    return Poll::Ready(Err(e));
                }
                PANIC => {
                    self.fail = Some(st.panic_error().into());
                    self.unready_since = None;
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            (status, st.set.len())
        };
        if status == USABLE {
            self.unready_since = None;
            return Poll::Ready(Ok(()));
        }
        self.wait_for_endpoint(cx, discovered)
    }

    /// No endpoint can take a request: wait, but not past the configured bound.
    fn wait_for_endpoint(
        &mut self,
        cx: &mut Context<'_>,
        discovered: usize,
    ) -> Poll<Result<(), BoxError>> {
        let Some(timeout) = self.no_endpoints_timeout else {
            return Poll::Pending;
        };
        let now = Instant::now();
        let since = *self.unready_since.get_or_insert(now);
        let Some(deadline) = since.checked_add(timeout) else {
            // Beyond the clock's range: never.
            return Poll::Pending;
        };
        if now < deadline {
            let sleep = match &mut self.sleep {
                Some(s) => {
                    if s.deadline() != deadline {
                        s.as_mut().reset(deadline);
                    }
                    s
                }
                none => none.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        #[cfg(feature = "metrics")]
        if self.metrics {
            metrics::counter!("tower_mesh_balance_no_endpoints_total").increment(1);
        }
        // Ready: the request fails at once, and so does every request until an endpoint
        // is ready again.
        self.fail = Some(
            error::NoEndpoints {
                discovered,
                waited: Instant::now().saturating_duration_since(since),
            }
            .into(),
        );
        Poll::Ready(Ok(()))
    }
}

impl<D, P> Future for Worker<D, P>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Weight,
    D::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &*self.shared;
        shared.wakes.worker.register(cx.waker());
        if shared.wakes.closed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if shared.wakes.is_pending() {
            let mut st = shared.lock();
            match st.catch_up {
                Some(catch_up) => catch_up(&mut st),
                None => st.catch_up_discovery(),
            }
            // Published under the lock, so that a status computed by a concurrent `call`
            // after this catch-up is never overwritten by this one.
            let status = st.status();
            shared.publish(status);
            drop(st);
            if status != NONE {
                shared.wakes.caller.wake();
            }
        }
        Poll::Pending
    }
}

impl<D, P> Drop for Balance<D, P>
where
    D: Discover,
{
    fn drop(&mut self) {
        self.shared.wakes.closed.store(true, Ordering::Release);
        self.shared.wakes.worker.wake();
    }
}

impl<D, P> fmt::Debug for Balance<D, P>
where
    D: Discover + fmt::Debug,
    D::Key: fmt::Debug,
    P: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shared.state.try_lock() {
            Ok(st) => f
                .debug_struct("Balance")
                .field("discover", &st.discover)
                .field("endpoints", &st.set)
                .field("strategy", &st.strategy)
                .finish_non_exhaustive(),
            Err(_) => f.debug_struct("Balance").finish_non_exhaustive(),
        }
    }
}

impl<D, P> fmt::Debug for Worker<D, P>
where
    D: Discover,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}
