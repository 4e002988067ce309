//! Watchers of every service on a cache: what the cache's own faults look like to them, and
//! a service that appears while the cache loads every service.

use super::tests::{applied, ids, inst, next, orders, Fault, Gated};
use super::*;
use crate::instance::Instance;
use crate::registry::Event;

/// The database is restored from an older backup: a watcher of every service that was ahead
/// is reset to the earlier state, like a watcher of one service.
#[tokio::test(start_paused = true)]
async fn a_reset_to_an_earlier_revision_resets_the_watchers_of_everything() {
    let r = Gated::new();
    r.register(inst("a", 1)).await.unwrap();
    let rev = r.register(inst("b", 2)).await.unwrap();
    let restored = Snapshot::new(
        Revision::new(1),
        vec![Instance::builder("orders", "a").port(1).build().unwrap()],
    );
    r.faults
        .lock()
        .unwrap()
        .push_back(Fault::Script(vec![Event::Reset(restored)]));
    let cache = Cached::new(r.clone()).await.unwrap();
    // Cached before the restore (a load after it would see the restored database, which this
    // scripted watch only pretends to be).
    assert_eq!(ids(&cache.snapshot(&orders()).await.unwrap()), ["a", "b"]);
    let mut all = cache.watch_all(rev);

    match next(&mut all).await.unwrap() {
        Event::Reset(s) => {
            assert_eq!(ids(&s), ["a"]);
            assert_eq!(s.revision(), Revision::new(1));
        }
        other => panic!("the watcher ahead must be reset, got {other:?}"),
    }
    assert_eq!(cache.revision().await.unwrap(), Revision::new(1));
}

/// The cache's watch ends: a watcher of every service gets the error, then `Progress` and
/// the change made meanwhile once the watch is restarted.
#[tokio::test(start_paused = true)]
async fn a_stopped_watch_is_reported_to_the_watchers_of_everything() {
    let r = Gated::new();
    r.faults.lock().unwrap().push_back(Fault::End);
    r.register(inst("a", 1)).await.unwrap();
    let cache = Cached::new(r.clone()).await.unwrap();
    let mut all = cache.watch_all(cache.revision().await.unwrap());
    let rev = r.register(inst("b", 2)).await.unwrap();

    match next(&mut all).await {
        Err(Error::Database(e)) => assert!(e.to_string().contains("ended"), "{e}"),
        other => panic!("the end must be reported, got {other:?}"),
    }
    let (mut progress, mut put) = (false, false);
    while !(progress && put) {
        match next(&mut all).await.unwrap() {
            Event::Progress { .. } => progress = true,
            Event::Put { instance, revision } if instance.id().as_str() == "b" => {
                assert_eq!(revision, rev);
                put = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!cache.is_stale());
}

/// A service registered while the cache loads every service (after it listed them) is still
/// in the reset, rebuilt from the changes the cache collected meanwhile.
#[tokio::test(start_paused = true)]
async fn a_service_that_appears_while_everything_loads_is_in_the_reset() {
    let r = Gated::new();
    r.register(inst("a", 1)).await.unwrap();
    let options = CachedOptions::default().log_retention(1);
    let cache = Cached::with_options(r.clone(), options).await.unwrap();
    cache.register(inst("b", 2)).await.unwrap();
    let rev = cache.register(inst("c", 3)).await.unwrap();
    cache
        .deregister(&orders(), &"c".parse().unwrap())
        .await
        .unwrap();
    assert!(cache.cached_services().is_empty());

    r.gate(false);
    let mut all = cache.watch_all(Revision::new(1));
    let reset = tokio::spawn(async move { (next(&mut all).await, all) });
    // The cache listed the services and waits for the snapshot of `orders`.
    for _ in 0..1000 {
        if cache.lock().loading.contains_key(&orders()) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(cache.lock().collect.is_some());
    let billing = Instance::builder("billing", "x").port(9).build().unwrap();
    let rev_x = r.inner.register(billing.into()).await.unwrap();
    applied(&cache, rev_x).await;
    r.gate(true);

    let (event, mut all) = reset.await.unwrap();
    match event.unwrap() {
        Event::Reset(s) => {
            assert_eq!(ids(&s), ["x", "a", "b"]);
            assert_eq!(s.revision(), rev_x);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert!(rev < rev_x);
    assert_eq!(
        cache.cached_services(),
        ["billing".parse().unwrap(), orders()]
    );
    let rev = cache.register(inst("d", 4)).await.unwrap();
    assert_eq!(next(&mut all).await.unwrap().revision(), rev);
}
