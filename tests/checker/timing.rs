//! Intervals, the unhealthy interval and thresholds (paused clock); starting and stopping
//! checks as instances come, change and leave; bad specs and settings refused.

use std::time::Duration;

use tower_mesh::health::{HealthChecker, HealthCheckerError};
use tower_mesh::instance::{Check, Health};
use tower_mesh::registry::{MemoryRegistry, Registry};

use crate::servers::{Answer, HttpServer};
use crate::{health_of, iid, instance, svc, until_health};

#[tokio::test(start_paused = true)]
async fn thresholds_and_intervals() {
    let server = HttpServer::start(Answer::status(503)).await;
    let registry = MemoryRegistry::new();
    let check = Check::http("/")
        .interval(Duration::from_secs(10))
        .unhealthy_interval(Duration::from_secs(2))
        .jitter(Duration::ZERO)
        .timeout(Duration::from_secs(1))
        .unhealthy_threshold(3)
        .healthy_threshold(4)
        .build()
        .unwrap();
    registry
        .register(instance("o-1", server.addr.port(), check).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();

    // Failures at 0 s, 10 s and 20 s: critical after the third.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(server.requests(), 2);
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Passing);
    tokio::time::sleep(Duration::from_secs(6)).await; // t = 21 s
    assert_eq!(server.requests(), 3);
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Critical);

    // While critical, every 2 s: 22, 24, ..., 40 s.
    tokio::time::sleep(Duration::from_secs(20)).await; // t = 41 s
    assert_eq!(server.requests(), 13);

    // Four successes in a row to pass again: 42, 44, 46, 48 s.
    server.set(Answer::ok(""));
    tokio::time::sleep(Duration::from_secs(6)).await; // t = 47 s: three successes
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Critical);
    tokio::time::sleep(Duration::from_secs(2)).await; // t = 49 s
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Passing);
    // Back to the 10 s interval: the next probe at 58 s.
    let before = server.requests();
    tokio::time::sleep(Duration::from_secs(8)).await; // t = 57 s
    assert_eq!(server.requests(), before);
    tokio::time::sleep(Duration::from_secs(2)).await; // t = 59 s
    assert_eq!(server.requests(), before + 1);
    checker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn checks_follow_instances_joining_changing_and_leaving() {
    let healthy = HttpServer::start(Answer::ok("")).await;
    let failing = HttpServer::start(Answer::status(500)).await;
    let registry = MemoryRegistry::new();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    let mut assignment = checker.assignment();

    // No check declared: not checked.
    let plain = tower_mesh::instance::Instance::builder("orders", "plain")
        .host("127.0.0.1")
        .port(healthy.addr.port().into())
        .build()
        .unwrap();
    registry.register(plain.into()).await.unwrap();
    registry
        .register(instance("o-1", healthy.addr.port(), crate::quick(Check::http("/"))).into())
        .await
        .unwrap();
    assignment.wait_for(|a| a.len() == 1).await.unwrap();
    assert!(assignment.borrow().contains(&svc(), &iid("o-1")));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let on_healthy = healthy.requests();
    assert!(on_healthy >= 3);

    // The check changes (another port): the check restarts against the new target.
    let moved = crate::quick(Check::http("/").port(failing.addr.port().into()));
    registry
        .register(instance("o-1", healthy.addr.port(), moved).into())
        .await
        .unwrap();
    until_health(&registry, "o-1", Health::Critical).await;
    assert_eq!(healthy.requests(), on_healthy);

    // Maintenance: not checked (and not overwritten).
    registry
        .set_health(&svc(), &iid("o-1"), Health::Maintenance)
        .await
        .unwrap();
    assignment.wait_for(|a| a.is_empty()).await.unwrap();
    let on_failing = failing.requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(failing.requests(), on_failing);
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Maintenance);

    // Out of maintenance: checked again, from the health it was given.
    registry
        .set_health(&svc(), &iid("o-1"), Health::Passing)
        .await
        .unwrap();
    assignment.wait_for(|a| a.len() == 1).await.unwrap();
    until_health(&registry, "o-1", Health::Critical).await;

    // It leaves: its check stops.
    registry.deregister(&svc(), &iid("o-1")).await.unwrap();
    assignment.wait_for(|a| a.is_empty()).await.unwrap();
    let on_failing = failing.requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(failing.requests(), on_failing);
    checker.shutdown().await;
}

#[tokio::test]
async fn bad_specs_and_settings_are_refused() {
    // Spec validation (instance::check) refuses before anything reaches a checker.
    let err = Check::http("healthz").build().unwrap_err();
    assert!(err.to_string().contains("\"healthz\""), "{err}");
    let err = Check::tcp().interval(Duration::ZERO).build().unwrap_err();
    assert!(err.to_string().contains("interval"), "{err}");
    // A stored spec is validated when read back, too.
    let bad = r#"{"kind":"http","method":"GET","path":"nope","statuses":["200-299"],"interval_ms":1000,"jitter_ms":0,"timeout_ms":500,"unhealthy_interval_ms":1000,"healthy_threshold":1,"unhealthy_threshold":1}"#;
    assert!(serde_json::from_str::<Check>(bad).is_err());

    let registry = MemoryRegistry::new();
    let err = HealthChecker::builder("c-1")
        .replicas(0)
        .spawn(registry.clone())
        .unwrap_err();
    assert!(matches!(err, HealthCheckerError::Replicas { value: 0 }));
    assert_eq!(
        err.to_string(),
        "invalid health checker replicas 0: must be at least 1"
    );
    let err = HealthChecker::builder("not a valid id!")
        .spawn(registry.clone())
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid health checker identity");
    assert!(std::error::Error::source(&err).is_some());
    let err = HealthChecker::builder("c-1")
        .lease_ttl(Duration::ZERO)
        .spawn(registry)
        .unwrap_err();
    assert!(matches!(err, HealthCheckerError::Lease(_)), "{err:?}");
}

/// Through a `Cached` registry: the checker's writes wait until the cache has seen them, so
/// the process reads its own transitions at once.
#[tokio::test(start_paused = true)]
async fn works_through_a_cached_registry() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let registry = tower_mesh::registry::Cached::new(MemoryRegistry::new())
        .await
        .unwrap();
    registry
        .register(instance("o-1", port, crate::quick(Check::tcp())).into())
        .await
        .unwrap();
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
    let output = until_health(&registry, "o-1", Health::Critical)
        .await
        .unwrap();
    assert!(output.contains("refused"), "{output}");
    assert_eq!(checker.stats().writes, 1);
    checker.shutdown().await;
}
