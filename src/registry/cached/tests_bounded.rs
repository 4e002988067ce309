//! The cache stays bounded: services left with no instance, and names only asked about, are
//! let go, and a watcher of such a service still gets its reset and its changes.

use std::sync::atomic::Ordering;

use super::tests::{applied, ids, inst, next, orders, Gated};
use super::*;
use crate::instance::Instance;
use crate::registry::{Event, MemoryRegistry};

fn named(service: &str, id: &str) -> Registration {
    Instance::builder(service, id)
        .port(8080)
        .build()
        .unwrap()
        .into()
}

fn svc(name: &str) -> ServiceName {
    name.parse().unwrap()
}

/// Reads of 500 names nobody registered, and 500 services registered, read and
/// deregistered, leave nothing cached; a service that still has an instance stays.
#[tokio::test(start_paused = true)]
async fn services_with_no_instance_are_let_go() {
    let cache = Cached::new(MemoryRegistry::new()).await.unwrap();
    cache.register(named("kept", "k-1")).await.unwrap();
    assert_eq!(
        cache
            .snapshot(&svc("kept"))
            .await
            .unwrap()
            .instances()
            .len(),
        1
    );
    for i in 0..500 {
        let name = svc(&format!("asked-{i}"));
        assert!(cache.snapshot(&name).await.unwrap().instances().is_empty());
    }
    for i in 0..500 {
        let name = format!("churn-{i}");
        cache.register(named(&name, "x")).await.unwrap();
        let read = cache.snapshot(&svc(&name)).await.unwrap();
        assert_eq!(read.instances().len(), 1);
        let rev = cache
            .deregister(&svc(&name), &"x".parse().unwrap())
            .await
            .unwrap();
        applied(&cache, rev).await;
        assert!(cache
            .snapshot(&svc(&name))
            .await
            .unwrap()
            .instances()
            .is_empty());
    }
    assert_eq!(cache.cached_services(), vec![svc("kept")]);
}

/// The next change a watcher yields (progress skipped).
async fn change(watch: &mut Watch) -> Revision {
    loop {
        match next(watch).await.unwrap() {
            e @ (Event::Put { .. } | Event::Delete { .. }) => return e.revision(),
            Event::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Once the cache holds every service (a watcher of all of them needed a reset), services
/// that come and go are let go too, the watcher sees every change, and a later watcher's
/// reset holds only what is left.
#[tokio::test(start_paused = true)]
async fn a_complete_cache_lets_go_of_services_that_leave() {
    let r = MemoryRegistry::new();
    r.register(named("kept", "k-1")).await.unwrap();
    let options = CachedOptions::default().log_retention(1);
    let cache = Cached::with_options(r.clone(), options).await.unwrap();
    cache.register(named("kept", "k-2")).await.unwrap();
    let last = cache.register(named("kept", "k-3")).await.unwrap();
    let mut all = cache.watch_all(Revision::new(1));
    match next(&mut all).await.unwrap() {
        Event::Reset(s) => assert_eq!(ids(&s), ["k-1", "k-2", "k-3"]),
        other => panic!("expected a reset, got {other:?}"),
    }
    assert!(cache.lock().complete);
    let mut seen = Vec::new();
    for i in 0..300 {
        let name = format!("churn-{i}");
        // Each change read as it comes: the log keeps one, and a watcher that fell behind
        // would get a reset instead.
        let put = cache.register(named(&name, "x")).await.unwrap();
        seen.push(change(&mut all).await);
        let delete = cache
            .deregister(&svc(&name), &"x".parse().unwrap())
            .await
            .unwrap();
        seen.push(change(&mut all).await);
        assert_eq!(seen[seen.len() - 2..], [put, delete]);
    }
    assert_eq!(seen.len(), 600);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, once each");
    assert!(seen[0] > last);
    assert_eq!(cache.cached_services(), vec![svc("kept")]);
    let mut late = cache.watch_all(Revision::new(1));
    match next(&mut late).await.unwrap() {
        Event::Reset(s) => {
            assert_eq!(ids(&s), ["k-1", "k-2", "k-3"]);
            assert_eq!(s.revision(), *seen.last().unwrap());
        }
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// A watcher of a service the cache let go, which needs a reset (the log has moved past
/// where it starts), gets the reset from one load and then the service's changes: it does
/// not load again and again because the empty service is not kept.
#[tokio::test(start_paused = true)]
async fn a_watcher_of_an_empty_service_gets_its_reset_from_one_load() {
    let r = Gated::new();
    let options = CachedOptions::default().log_retention(1);
    let cache = Cached::with_options(r.clone(), options).await.unwrap();
    cache.register(inst("a", 1)).await.unwrap();
    cache
        .deregister(&orders(), &"a".parse().unwrap())
        .await
        .unwrap();
    let rev = cache.register(named("billing", "b-1")).await.unwrap();
    applied(&cache, rev).await;
    assert!(!cache.cached_services().contains(&orders()));
    let before = r.snapshots.load(Ordering::Relaxed);

    let mut w = cache.watch(&orders(), Revision::new(1));
    match next(&mut w).await.unwrap() {
        Event::Reset(s) => {
            assert!(s.instances().is_empty());
            assert_eq!(s.revision(), rev);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let put = cache.register(inst("b", 2)).await.unwrap();
    loop {
        match next(&mut w).await.unwrap() {
            Event::Put { instance, revision } => {
                assert_eq!((instance.id().as_str(), revision), ("b", put));
                break;
            }
            Event::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(r.snapshots.load(Ordering::Relaxed) - before, 1, "one load");
}
