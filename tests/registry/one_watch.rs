//! One watch per process: a [`Cached`] registry serves `watch_all` watchers, like `watch`
//! watchers, from its own single watch on the registry behind it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use tower_mesh::instance::{Health, InstanceId, ServiceName};
use tower_mesh::registry::{
    Cached, CachedOptions, Clock, Error, Event, LeaseConfig, MemoryRegistry, ReapReport,
    Registration, Registry, Revision, Snapshot, Watch,
};

use crate::suite::{id, inst, next_event, svc};

/// A memory registry that counts the watches opened on it and those still open.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryRegistry,
    opened: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

/// Held by an open watch: counts it out when the watch is dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counting {
    fn counted(&self, watch: Watch) -> Watch {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        let open = Open(self.open.clone());
        Watch::new(watch.map(move |item| {
            let _held = &open;
            item
        }))
    }

    /// Watches (of one service or of all) opened so far, and those still open.
    fn watches(&self) -> (usize, usize) {
        (
            self.opened.load(Ordering::SeqCst),
            self.open.load(Ordering::SeqCst),
        )
    }
}

impl Registry for Counting {
    async fn register(&self, r: Registration) -> Result<Revision, Error> {
        self.inner.register(r).await
    }
    async fn register_all(&self, r: Vec<Registration>) -> Result<Revision, Error> {
        self.inner.register_all(r).await
    }
    async fn deregister(&self, s: &ServiceName, i: &InstanceId) -> Result<Revision, Error> {
        self.inner.deregister(s, i).await
    }
    async fn heartbeat(&self, s: &ServiceName, i: &InstanceId) -> Result<Option<Revision>, Error> {
        self.inner.heartbeat(s, i).await
    }
    async fn set_health(
        &self,
        s: &ServiceName,
        i: &InstanceId,
        h: Health,
    ) -> Result<Revision, Error> {
        self.inner.set_health(s, i, h).await
    }
    async fn snapshot(&self, s: &ServiceName) -> Result<Snapshot, Error> {
        self.inner.snapshot(s).await
    }
    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.inner.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.inner.revision().await
    }
    fn watch(&self, s: &ServiceName, since: Revision) -> Watch {
        self.counted(self.inner.watch(s, since))
    }
    fn watch_all(&self, since: Revision) -> Watch {
        self.counted(self.inner.watch_all(since))
    }
    async fn compact(&self, r: Revision) -> Result<(), Error> {
        self.inner.compact(r).await
    }
    async fn reap(&self, c: &LeaseConfig) -> Result<ReapReport, Error> {
        self.inner.reap(c).await
    }
    fn clock(&self) -> &Clock {
        self.inner.clock()
    }
}

/// `service/id` of each instance, in the snapshot's order.
fn names(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .instances()
        .iter()
        .map(|i| format!("{}/{}", i.service(), i.id()))
        .collect()
}

/// `service/id` and revision of a put or delete.
fn change(event: &Event) -> (String, Revision) {
    match event {
        Event::Put { instance, revision } => (
            format!("{}/{}", instance.service(), instance.id()),
            *revision,
        ),
        Event::Delete {
            service,
            id,
            revision,
        } => (format!("-{service}/{id}"), *revision),
        other => panic!("expected a put or a delete, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn watch_all_and_watch_share_the_cache_s_one_watch() {
    let r = Counting::default();
    r.register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    r.register(inst("billing", "b-1", 9001).into())
        .await
        .unwrap();
    let cache = Cached::new(r.clone()).await.unwrap();

    // From the start of history, which the cache does not hold: the whole state first.
    let mut all = cache.watch_all(Revision::ZERO);
    let reset = match next_event(&mut all).await {
        Event::Reset(snapshot) => snapshot,
        other => panic!("expected a reset, got {other:?}"),
    };
    assert_eq!(names(&reset), ["billing/b-1", "orders/o-1"]);
    let mut orders = cache.watch(&svc("orders"), reset.revision());
    let mut billing = cache.watch(&svc("billing"), reset.revision());
    let mut all_too = cache.watch_all(reset.revision());

    let revs = [
        cache
            .register(inst("orders", "o-2", 8002).into())
            .await
            .unwrap(),
        cache
            .register(inst("billing", "b-2", 9002).into())
            .await
            .unwrap(),
        cache.deregister(&svc("orders"), &id("o-1")).await.unwrap(),
        cache
            .set_health(&svc("billing"), &id("b-1"), Health::Critical)
            .await
            .unwrap(),
        cache
            .register(inst("payments", "p-1", 7001).into())
            .await
            .unwrap(),
    ];
    let expected = [
        ("orders/o-2".to_owned(), revs[0]),
        ("billing/b-2".to_owned(), revs[1]),
        ("-orders/o-1".to_owned(), revs[2]),
        ("billing/b-1".to_owned(), revs[3]),
        ("payments/p-1".to_owned(), revs[4]),
    ];
    for watch in [&mut all, &mut all_too] {
        for want in &expected {
            assert_eq!(&change(&next_event(watch).await), want);
        }
    }
    for want in [&expected[0], &expected[2]] {
        assert_eq!(&change(&next_event(&mut orders).await), want);
    }
    for want in [&expected[1], &expected[3]] {
        assert_eq!(&change(&next_event(&mut billing).await), want);
    }
    // Two watchers of everything and two of one service: the registry holds one watch.
    assert_eq!(r.watches(), (1, 1));
    drop((all, all_too, orders, billing));
    assert_eq!(r.watches(), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn watch_all_resumes_from_a_revision() {
    let cache = Cached::new(MemoryRegistry::new()).await.unwrap();
    let mut revs = Vec::new();
    for (service, n) in [("orders", 1), ("billing", 1), ("orders", 2), ("billing", 2)] {
        let i = inst(service, &format!("{service}-{n}"), 8000 + n);
        revs.push(cache.register(i.into()).await.unwrap());
    }
    revs.push(
        cache
            .deregister(&svc("orders"), &id("orders-1"))
            .await
            .unwrap(),
    );

    let mut all = cache.watch_all(revs[1]);
    for rev in &revs[2..] {
        assert_eq!(next_event(&mut all).await.revision(), *rev);
    }
    // From the latest revision: only what comes next.
    let mut live = cache.watch_all(revs[4]);
    let next = cache
        .register(inst("payments", "p-1", 7001).into())
        .await
        .unwrap();
    assert_eq!(
        change(&next_event(&mut live).await),
        ("payments/p-1".to_owned(), next)
    );
    assert_eq!(next_event(&mut all).await.revision(), next);
}

#[tokio::test(start_paused = true)]
async fn watch_all_behind_the_log_gets_a_reset_of_every_service() {
    let r = Counting::default();
    r.register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let options = CachedOptions::default().log_retention(2);
    let cache = Cached::with_options(r.clone(), options).await.unwrap();
    let start = cache.revision().await.unwrap();
    cache
        .register(inst("billing", "b-1", 9001).into())
        .await
        .unwrap();
    // A service that comes and goes before anyone reads it.
    cache
        .register(inst("gone", "g-1", 6001).into())
        .await
        .unwrap();
    cache.deregister(&svc("gone"), &id("g-1")).await.unwrap();
    let last = cache
        .register(inst("orders", "o-2", 8002).into())
        .await
        .unwrap();

    // `start` is older than the two changes the cache keeps.
    let mut all = cache.watch_all(start);
    match next_event(&mut all).await {
        Event::Reset(snapshot) => {
            assert_eq!(
                names(&snapshot),
                ["billing/b-1", "orders/o-1", "orders/o-2"]
            );
            assert_eq!(snapshot.revision(), last);
            assert!(!snapshot.is_stale());
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let live = cache
        .register(inst("payments", "p-1", 7001).into())
        .await
        .unwrap();
    assert_eq!(
        change(&next_event(&mut all).await),
        ("payments/p-1".to_owned(), live)
    );

    // The cache now holds every service, new ones included: a later reset has them all.
    cache.deregister(&svc("orders"), &id("o-1")).await.unwrap();
    cache
        .register(inst("shipping", "s-1", 5001).into())
        .await
        .unwrap();
    let last = cache
        .register(inst("shipping", "s-2", 5002).into())
        .await
        .unwrap();
    // `live` is older than the two changes the cache keeps.
    let mut behind = cache.watch_all(live);
    match next_event(&mut behind).await {
        Event::Reset(snapshot) => {
            assert_eq!(
                names(&snapshot),
                [
                    "billing/b-1",
                    "orders/o-2",
                    "payments/p-1",
                    "shipping/s-1",
                    "shipping/s-2"
                ]
            );
            assert_eq!(snapshot.revision(), last);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_eq!(
        cache
            .snapshot(&svc("shipping"))
            .await
            .unwrap()
            .instances()
            .len(),
        2
    );
    assert_eq!(r.watches(), (1, 1));
}
