//! Outages: a watch resumes where it stopped, and a cache serves stale data meanwhile.

use super::*;

/// Reads `watch` until an `Err` item (the outage is seen), returning the events before it.
async fn until_error(w: &mut Watch) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(e))) => events.push(e),
            Ok(Some(Err(e))) => {
                assert!(e.is_transient(), "{e}");
                return events;
            }
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
}

/// The watcher's connection goes through a proxy that is cut; while it is down, another
/// process writes. After the proxy comes back, the watcher resumes from its last revision:
/// every change arrives once, in order.
async fn watch_resumes_after_outage(base: &str) {
    let url = support::fresh_database(base).await;
    let (proxy, watcher) = support::behind_proxy(&url).await;
    let writer = sql_at(&url).await.registry;
    let mut expected = Vec::new();
    for n in 0..3 {
        expected.push(
            writer
                .register(inst("orders", &format!("o-{n}"), 8000 + n).into())
                .await
                .unwrap(),
        );
    }
    let mut w = watcher.watch(&svc("orders"), Revision::ZERO);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut w).await.revision());
    }
    proxy.cut();
    for n in 3..6 {
        expected.push(
            writer
                .register(inst("orders", &format!("o-{n}"), 8000 + n).into())
                .await
                .unwrap(),
        );
    }
    expected.push(writer.deregister(&svc("orders"), &id("o-0")).await.unwrap());
    seen.extend(until_error(&mut w).await.iter().map(Event::revision));
    proxy.restore();
    let mut progressed = false;
    while seen.len() < expected.len() {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(Event::Progress { .. }))) => progressed = true,
            Ok(Some(Ok(e))) => seen.push(e.revision()),
            Ok(Some(Err(e))) => assert!(e.is_transient(), "{e}"),
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
    assert_eq!(seen, expected, "every change once, in order");
    // Recovery is announced once the watcher has caught up.
    while !progressed {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(Event::Progress { .. }))) => progressed = true,
            Ok(Some(Ok(e))) => panic!("unexpected event {e:?}"),
            Ok(Some(Err(e))) => assert!(e.is_transient(), "{e}"),
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_watch_resumes_after_outage() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        watch_resumes_after_outage(&base).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_watch_resumes_after_outage() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        watch_resumes_after_outage(&base).await;
    }
}

/// While the database is unreachable, a cache answers from memory, marked stale, and says so
/// to its watchers; when it comes back, the mark clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_serves_stale_data_during_outage() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let url = support::fresh_database(&base).await;
    let (proxy, inner) = support::behind_proxy(&url).await;
    let cache = Cached::new(inner).await.unwrap();
    cache
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let before = cache.snapshot(&svc("orders")).await.unwrap();
    assert!(!before.is_stale());
    let mut w = cache.watch(&svc("orders"), before.revision());
    proxy.cut();
    until_error(&mut w).await;
    assert!(cache.is_stale());
    let during = cache.snapshot(&svc("orders")).await.unwrap();
    assert!(during.is_stale());
    assert_eq!(during.instances(), before.instances());
    proxy.restore();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(Event::Progress { .. }))) => break,
            Ok(Some(_)) => {}
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
    assert!(!cache.snapshot(&svc("orders")).await.unwrap().is_stale());
}

/// A cache serves every service's watchers from one watch of its own.
#[tokio::test(start_paused = true)]
async fn cache_fans_out_one_watch() {
    let cache = Cached::new(MemoryRegistry::new()).await.unwrap();
    let mut a = cache.watch(&svc("orders"), Revision::ZERO);
    let mut b = cache.watch(&svc("billing"), Revision::ZERO);
    let ra = cache
        .register(inst("orders", "o-1", 1).into())
        .await
        .unwrap();
    let rb = cache
        .register(inst("billing", "b-1", 2).into())
        .await
        .unwrap();
    assert_eq!(next_event(&mut a).await.revision(), ra);
    assert_eq!(next_event(&mut b).await.revision(), rb);
    assert_eq!(cache.cached_services(), vec![svc("billing"), svc("orders")]);
}
