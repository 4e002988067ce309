//! Test support: a controllable discovery stream and simple endpoints.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_util::task::AtomicWaker;
use tower::discover::Change;
use tower::Service;
use tower_mesh::balance::Weight;

struct Shared<K, S> {
    queue: VecDeque<Change<K, S>>,
    waker: Option<Waker>,
}

/// A discovery stream fed by a [`Changes`] handle; pending when empty, never ends.
pub struct Discovery<K, S>(Arc<Mutex<Shared<K, S>>>);

/// Feeds a [`Discovery`].
pub struct Changes<K, S>(Arc<Mutex<Shared<K, S>>>);

impl<K, S> Clone for Changes<K, S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

pub fn discovery<K, S>() -> (Changes<K, S>, Discovery<K, S>) {
    let shared = Arc::new(Mutex::new(Shared {
        queue: VecDeque::new(),
        waker: None,
    }));
    (Changes(shared.clone()), Discovery(shared))
}

impl<K, S> Changes<K, S> {
    fn push(&self, c: Change<K, S>) {
        let mut s = self.0.lock().unwrap();
        s.queue.push_back(c);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    pub fn insert(&self, k: K, s: S) {
        self.push(Change::Insert(k, s));
    }

    pub fn remove(&self, k: K) {
        self.push(Change::Remove(k));
    }
}

impl<K, S> Stream for Discovery<K, S> {
    type Item = Result<Change<K, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.0.lock().unwrap();
        match s.queue.pop_front() {
            Some(c) => Poll::Ready(Some(Ok(c))),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// An endpoint that answers with its id, with a weight, a health flag and a readiness
/// switch. Like any well-behaved service, it wakes the task that last saw it not ready
/// when it turns ready, and wakes its last poller when its health changes (as the
/// registry-fed `InstanceEndpoint` does).
#[derive(Clone)]
pub struct Echo {
    pub id: u32,
    pub weight: u32,
    pub healthy: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
    pub calls: Arc<AtomicUsize>,
    /// `poll_ready` calls.
    pub polls: Arc<AtomicUsize>,
    pub waker: Arc<AtomicWaker>,
}

impl Echo {
    pub fn new(id: u32, weight: u32) -> Self {
        Self {
            id,
            weight,
            healthy: Arc::new(AtomicBool::new(true)),
            ready: Arc::new(AtomicBool::new(true)),
            calls: Arc::new(AtomicUsize::new(0)),
            polls: Arc::new(AtomicUsize::new(0)),
            waker: Arc::new(AtomicWaker::new()),
        }
    }

    /// Turn ready or not; wakes the last poller.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Turn healthy or not; wakes the last poller.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
        self.waker.wake();
    }
}

impl Weight for Echo {
    fn weight(&self) -> u32 {
        self.weight
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

impl<Req> Service<Req> for Echo {
    type Response = u32;
    type Error = Infallible;
    type Future = Ready<Result<u32, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.waker.register(cx.waker());
        if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(self.id))
    }
}

/// Poll a future once with a no-op waker.
pub fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    Pin::new(f).poll(&mut cx)
}

/// `poll_ready` once with a no-op waker.
pub fn poll_ready<S: Service<R>, R>(s: &mut S) -> Poll<Result<(), S::Error>> {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    s.poll_ready(&mut cx)
}

/// An endpoint for the churn test: asserts on `call` that it is still discovered; wakes
/// its last poller when its readiness changes.
#[derive(Clone)]
pub struct Probe {
    id: u32,
    weight: u32,
    ready: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    live: Arc<Mutex<std::collections::HashSet<u32>>>,
    waker: Arc<AtomicWaker>,
}

impl Probe {
    pub fn new(id: u32, weight: u32, live: Arc<Mutex<std::collections::HashSet<u32>>>) -> Self {
        Self {
            id,
            weight,
            ready: Arc::new(AtomicBool::new(true)),
            fail: Arc::new(AtomicBool::new(false)),
            live,
            waker: Arc::new(AtomicWaker::new()),
        }
    }

    pub fn flip_ready(&self) {
        self.ready.fetch_xor(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub fn fail_next(&self) {
        self.fail.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

impl Weight for Probe {
    fn weight(&self) -> u32 {
        self.weight
    }
}

impl<Req> Service<Req> for Probe {
    type Response = u32;
    type Error = &'static str;
    type Future = Ready<Result<u32, &'static str>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        self.waker.register(cx.waker());
        if self.fail.load(Ordering::SeqCst) {
            Poll::Ready(Err("probe failed"))
        } else if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        assert!(
            self.live.lock().unwrap().contains(&self.id),
            "request sent to removed endpoint {}",
            self.id
        );
        ready(Ok(self.id))
    }
}

/// A balancer over a [`Discovery`] of [`Echo`] endpoints.
pub type Bal<P> = tower_mesh::balance::Balance<Discovery<u32, Echo>, P>;

/// A balancer built by `layer` over echo endpoints with `weights` (ids 0, 1, ...).
pub fn setup<P>(
    layer: tower_mesh::balance::BalanceLayer<P>,
    weights: &[u32],
) -> (Changes<u32, Echo>, Bal<P>, Vec<Echo>)
where
    P: Clone + Send + 'static,
{
    let (changes, disco) = discovery();
    let echoes: Vec<Echo> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Echo::new(i as u32, w))
        .collect();
    for e in &echoes {
        changes.insert(e.id, e.clone());
    }
    (changes, layer.build(disco), echoes)
}

/// poll_ready (must be ready) + call + complete; the id of the endpoint that answered.
pub fn send<P: tower_mesh::balance::Pick<u64>>(b: &mut Bal<P>, req: u64) -> u32 {
    match poll_ready::<_, u64>(b) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("not ready: {e}"),
        Poll::Pending => panic!("not ready: pending"),
    }
    let mut f = b.call(req);
    match poll_once(&mut f) {
        Poll::Ready(Ok(id)) => id,
        other => panic!("unexpected {other:?}"),
    }
}

/// Wait until the balancer is ready and no strategy table is being built (the consistent
/// hashers build theirs on the blocking pool).
pub async fn settle<P: tower_mesh::balance::Pick<u64>>(b: &mut Bal<P>) {
    use tower::ServiceExt;
    ServiceExt::<u64>::ready(&mut *b).await.expect("ready");
    while tower_mesh::balance::Pick::<u64>::is_rebuilding(&*b.strategy()) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
