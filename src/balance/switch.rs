//! [`Switchable`]: a strategy replaced at run time, without dropping requests in flight.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::balance::{AnyPick, Endpoints, Pick, Strategy, Tracking};

/// A strategy that can be replaced while the balancer runs, through its
/// [`StrategySwitch`].
///
/// The switch stores the new strategy and wakes every balancer built with this strategy (or
/// a clone of it); each one's background worker installs it at its next catch-up, with no
/// request needed, and rebuilds it over the endpoints it holds. Requests in flight are not
/// touched: they complete on the endpoint they were sent to, and their load is still
/// counted for the strategies that read it. Until the new strategy is installed, picks use
/// the old one; a consistent hasher's first table is built off the runtime's threads as
/// usual, keyed requests waiting for it.
///
/// ```
/// use std::convert::Infallible;
/// use tower::{discover::ServiceList, service_fn, Service, ServiceExt};
/// use tower_mesh::balance::{AnyPick, BalanceLayer, Strategy, Switchable, WithWeight};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let strategy = Switchable::new(AnyPick::new(Strategy::RoundRobin));
/// let switch = strategy.switch();
/// let endpoints = (0..3).map(|i| {
///     WithWeight::new(service_fn(move |_: ()| async move { Ok::<_, Infallible>(i) }), 1)
/// });
/// let mut balance = BalanceLayer::new(strategy)
///     .build(ServiceList::new(endpoints.collect::<Vec<_>>()));
/// balance.ready().await?.call(()).await?;
///
/// switch.set(AnyPick::new(Strategy::LeastRequests));
/// assert_eq!(switch.strategy(), Strategy::LeastRequests);
/// balance.ready().await?.call(()).await?;
/// # Ok(())
/// # }
/// ```
pub struct Switchable<Req> {
    current: AnyPick<Req>,
    /// The generation `current` was taken at.
    seen: u64,
    /// The generation this strategy's balancer registered its waker at.
    registered: Option<u64>,
    shared: Arc<Shared<Req>>,
}

struct Shared<Req> {
    generation: AtomicU64,
    next: Mutex<AnyPick<Req>>,
    /// The balancers to wake on a switch; drained by each switch, registered again by each
    /// balancer once it has installed it.
    wakers: Mutex<Vec<Waker>>,
}

impl<Req> Switchable<Req> {
    /// Starts with `pick`.
    pub fn new(pick: AnyPick<Req>) -> Self {
        Self {
            current: pick.clone(),
            seen: 0,
            registered: None,
            shared: Arc::new(Shared {
                generation: AtomicU64::new(0),
                next: Mutex::new(pick),
                wakers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The handle that replaces the strategy of every balancer built with this one.
    pub fn switch(&self) -> StrategySwitch<Req> {
        StrategySwitch {
            shared: self.shared.clone(),
        }
    }

    /// The strategy this copy picks with now.
    pub fn strategy(&self) -> Strategy {
        self.current.strategy()
    }

    #[inline]
    fn switched(&self) -> bool {
        self.shared.generation.load(Ordering::Acquire) != self.seen
    }
}

impl<Req> Clone for Switchable<Req> {
    /// A copy that follows the same [`StrategySwitch`].
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
            seen: self.seen,
            registered: None,
            shared: self.shared.clone(),
        }
    }
}

impl<Req> fmt::Debug for Switchable<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switchable")
            .field("strategy", &self.current.strategy())
            .field("switched", &self.switched())
            .finish()
    }
}

impl<Req> Pick<Req> for Switchable<Req> {
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.seen {
            self.current = crate::sync::lock(&self.shared.next).clone();
            self.seen = generation;
            tracing::debug!(strategy = %self.current.strategy(), "strategy switched");
        }
        self.current.rebuild(endpoints);
    }

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &Req) -> usize {
        self.current.pick(endpoints, req)
    }

    #[inline]
    fn tracking(&self) -> Tracking {
        self.current.tracking()
    }

    #[inline]
    fn endpoint_changed<K>(&mut self, endpoints: &Endpoints<K>, i: usize) {
        self.current.endpoint_changed(endpoints, i);
    }

    fn wants_completions(&self) -> bool {
        self.current.wants_completions()
    }

    fn poll_built(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered != Some(self.seen) {
            {
                let mut wakers = crate::sync::lock(&self.shared.wakers);
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
            }
            self.registered = Some(self.seen);
            // A switch between the last rebuild and the registration woke nobody here.
            if self.switched() {
                cx.waker().wake_by_ref();
            }
        }
        self.current.poll_built(cx)
    }

    fn is_rebuilding(&self) -> bool {
        self.current.is_rebuilding()
    }

    #[inline]
    fn needs_rebuild(&self) -> bool {
        self.switched()
    }
}

/// Replaces the strategy of the balancers built with a [`Switchable`]; cheap to clone.
pub struct StrategySwitch<Req> {
    shared: Arc<Shared<Req>>,
}

impl<Req> StrategySwitch<Req> {
    /// Replaces the strategy: each balancer installs `pick` at its next catch-up (at once,
    /// in the background), and rebuilds it over its endpoints.
    pub fn set(&self, pick: AnyPick<Req>) {
        *crate::sync::lock(&self.shared.next) = pick;
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        let wakers = std::mem::take(&mut *crate::sync::lock(&self.shared.wakers));
        for waker in wakers {
            waker.wake();
        }
    }

    /// The strategy last set (or the first one).
    pub fn strategy(&self) -> Strategy {
        crate::sync::lock(&self.shared.next).strategy()
    }
}

impl<Req> Clone for StrategySwitch<Req> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<Req> fmt::Debug for StrategySwitch<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategySwitch")
            .field("strategy", &self.strategy())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use tower::discover::ServiceList;
    use tower::{service_fn, Service, ServiceExt};

    use super::*;
    use crate::balance::{BalanceLayer, WithWeight};

    type Fut = Pin<Box<dyn Future<Output = Result<usize, Infallible>> + Send>>;

    /// Endpoint `i` answers with `i` after `delay(i)`.
    fn endpoints(
        n: usize,
        delay: fn(usize) -> Duration,
    ) -> ServiceList<
        Vec<WithWeight<impl Service<u64, Response = usize, Error = Infallible, Future = Fut>>>,
    > {
        ServiceList::new(
            (0..n)
                .map(|i| {
                    WithWeight::new(
                        service_fn(move |_: u64| -> Fut {
                            Box::pin(async move {
                                tokio::time::sleep(delay(i)).await;
                                Ok(i)
                            })
                        }),
                        1,
                    )
                })
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_switch_applies_without_requests_and_keeps_requests_in_flight() {
        let strategy = Switchable::new(AnyPick::<u64>::new(Strategy::RoundRobin));
        let switch = strategy.switch();
        let mut balance =
            BalanceLayer::new(strategy).build(endpoints(3, |_| Duration::from_secs(1)));

        // Round robin: three requests in flight, one per endpoint.
        let mut in_flight = Vec::new();
        for _ in 0..3 {
            in_flight.push(tokio::spawn(balance.ready().await.unwrap().call(0)));
        }
        // Hash every request to one endpoint.
        switch.set(AnyPick::new(Strategy::RingHash).with_key(|&k: &u64| Some(k)));
        // Nothing else happens: the worker installs it on its own.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;

        let mut answered: Vec<usize> = Vec::new();
        for task in in_flight {
            answered.push(task.await.unwrap().unwrap());
        }
        answered.sort();
        assert_eq!(answered, vec![0, 1, 2], "the requests in flight completed");

        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(balance.ready().await.unwrap().call(7).await.unwrap());
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "one key, one endpoint after the switch: {seen:?}"
        );
        assert_eq!(switch.strategy(), Strategy::RingHash);
    }

    #[tokio::test(start_paused = true)]
    async fn every_balancer_built_from_the_layer_follows_the_switch() {
        let strategy =
            Switchable::new(AnyPick::<u64>::new(Strategy::RingHash).with_key(|_| Some(1)));
        let switch = strategy.switch();
        let layer = BalanceLayer::new(strategy);
        let mut a = layer.build(endpoints(3, |_| Duration::ZERO));
        let mut b = layer.build(endpoints(3, |_| Duration::ZERO));
        for svc in [&mut a, &mut b] {
            let first = svc.ready().await.unwrap().call(0).await.unwrap();
            assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), first);
        }
        switch.set(AnyPick::new(Strategy::RoundRobin));
        tokio::time::sleep(Duration::from_millis(1)).await;
        for svc in [&mut a, &mut b] {
            let mut seen = Vec::new();
            for _ in 0..3 {
                seen.push(svc.ready().await.unwrap().call(0).await.unwrap());
            }
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2], "round robin after the switch");
        }
    }
}
