//! One watch per process: a checker and a service's watchers share a `Cached` registry's
//! one watch on the registry behind it.

use futures_util::StreamExt;
use tower_mesh::health::HealthChecker;
use tower_mesh::instance::{Check, Health};
use tower_mesh::registry::{Cached, Event, Registry};

use crate::counting::Counting;
use crate::{instance, svc, until_health};

#[tokio::test(start_paused = true)]
async fn a_checker_through_a_cached_registry_adds_no_watch() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counting = Counting::new();
    let registry = Cached::new(counting.clone()).await.unwrap();
    registry
        .register(instance("o-1", port, crate::quick(Check::tcp())).into())
        .await
        .unwrap();
    // What discovery of "orders" does: watch the service from a snapshot.
    let snapshot = registry.snapshot(&svc()).await.unwrap();
    let mut orders = registry.watch(&svc(), snapshot.revision());
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    checker
        .assignment()
        .wait_for(|a| a.len() == 1)
        .await
        .unwrap();

    drop(listener);
    until_health(&registry, "o-1", Health::Critical).await;
    // The service's watcher sees the checker's write.
    loop {
        match orders.next().await.unwrap().unwrap() {
            Event::Put { instance, .. } if instance.health() == Health::Critical => break,
            Event::Put { .. } | Event::Progress { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(checker.stats().writes, 1);
    // The cache's, shared by the checker and the service's watcher.
    assert_eq!(counting.watches(), 1);
    checker.shutdown().await;
}
