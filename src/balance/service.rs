use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::discover::Discover;
use tower_service::Service;

use crate::balance::avoid::choose as choose_avoiding;
use crate::balance::endpoints::Endpoints;
use crate::balance::error;
use crate::balance::future::{ResponseFuture, NO_START};
use crate::balance::handle::{self, BalanceHandle, Inspect};
use crate::balance::layer::Config;
use crate::balance::state::{State, FAILED, NONE, PANIC, USABLE};
use crate::balance::wake::{Notify, Wakes};
use crate::balance::{BoxError, Pick, Tracking, Weight};

/// A load balancer over the endpoints of discovery stream `D`, picking with strategy `P`.
///
/// The endpoints live in state shared with a background [`Worker`] that polls discovery,
/// endpoints that woke and table builds as they happen, so the balancer makes progress
/// with or without requests; see the [module documentation](super) for behaviour and an
/// example.
///
/// `Balance` is cheap to clone and needs no `Buffer`: every clone shares the endpoints, the
/// strategy and the worker, and waits for an endpoint on its own (each waiting clone is
/// woken). The worker ends when the last clone is dropped.
pub struct Balance<D, P>
where
    D: Discover,
{
    shared: Arc<Shared<D, P>>,
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
    /// Spawns the worker on the current tokio runtime, or gives it back outside one;
    /// `None` for [`Balance::pair`] (the caller runs it).
    spawn: Option<Spawn<D, P>>,
    /// The worker is not spawned yet (there was no runtime when the balancer was made):
    /// the first `poll_ready` on a runtime spawns it.
    unspawned: AtomicBool,
    /// Live `Balance` clones; the last one dropped ends the worker.
    handles: AtomicUsize,
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
        let (balance, worker) = Self::make(discover, strategy, config, Some(spawn::<D, P>));
        if spawn(worker).is_err() {
            // Dropping the worker here is fine: it is only a reference to the state, and
            // the first `poll_ready` on a runtime makes and spawns another.
            balance.shared.unspawned.store(true, Ordering::Release);
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
        Self::make(discover, strategy, config, None)
    }

    fn make(
        discover: D,
        strategy: P,
        config: Config,
        spawn: Option<Spawn<D, P>>,
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
            spawn,
            unspawned: AtomicBool::new(false),
            handles: AtomicUsize::new(1),
        });
        let balance = Balance {
            shared: shared.clone(),
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

impl<D, P> Balance<D, P>
where
    D: Discover + Send + 'static,
    D::Key: Clone + Send + 'static,
    D::Service: Send + 'static,
    P: Send + 'static,
{
    /// A cloneable [`BalanceHandle`] reading this balancer's endpoint set (discovered,
    /// ready and ejected endpoints by key) from anywhere, for example after the balancer
    /// went behind a `Buffer`. It does not keep the balancer alive.
    pub fn handle(&self) -> BalanceHandle<D::Key> {
        BalanceHandle::new(handle::erase(&self.shared))
    }
}

impl<D, P> Inspect<D::Key> for Shared<D, P>
where
    D: Discover,
{
    fn inspect(&self, f: &mut dyn FnMut(&Endpoints<D::Key>)) {
        f(&self.lock().set)
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
        // Once per request, for the pick's latency reads and the request's start.
        st.set.now_ns = st.set.now.map(|t| st.set.loads.table.ns_at(t));
        let mut i = st.strategy.pick(&st.set, &req);
        if let Some(avoid) = st.strategy.avoid(&req) {
            let mut id = st.set.ids[i];
            if avoid.contains(id) {
                i = choose_avoiding(&mut st.strategy, &st.set, &req, i, avoid);
                id = st.set.ids[i];
            }
            avoid.record(id);
        }
        debug_assert!(st.set.is_usable(i), "strategy picked an unusable endpoint");
        // The endpoint is polled ready again (below) before its next request.
        st.set.set_flags(i, 0);
        let (guard, start_ns) = match tracking {
            Tracking::None => (None, NO_START),
            Tracking::InFlight => (Some(st.set.guard(i)), NO_START),
            Tracking::Latency => (Some(st.set.guard(i)), st.set.now_ns.unwrap_or(NO_START)),
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
        if let Some(spawn) = self.shared.spawn {
            if self.shared.unspawned.swap(false, Ordering::AcqRel) {
                let worker = Worker {
                    shared: self.shared.clone(),
                };
                if spawn(worker).is_err() {
                    self.shared.unspawned.store(true, Ordering::Release);
                }
            }
        }
        let shared = &*self.shared;
        // Registered before looking, so that a change after the look wakes this task.
        shared.wakes.register_caller(cx.waker());
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
                shared.wakes.wake_callers();
            }
        }
        Poll::Pending
    }
}

impl<D, P> Clone for Balance<D, P>
where
    D: Discover,
{
    /// Another handle on the same balancer (endpoints, strategy, worker); it waits for
    /// endpoints on its own.
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Balance {
            shared: self.shared.clone(),
            no_endpoints_timeout: self.no_endpoints_timeout,
            #[cfg(feature = "metrics")]
            metrics: self.metrics,
            unready_since: None,
            sleep: None,
            fail: None,
        }
    }
}

impl<D, P> Drop for Balance<D, P>
where
    D: Discover,
{
    fn drop(&mut self) {
        // The last clone: the worker ends (as `Arc` counts do, release then acquire, so
        // that the worker sees everything the clones did).
        if self.shared.handles.fetch_sub(1, Ordering::Release) == 1 {
            std::sync::atomic::fence(Ordering::Acquire);
            self.shared.wakes.closed.store(true, Ordering::Release);
            self.shared.wakes.worker.wake();
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
