//! A real PostgreSQL behind a loopback TCP proxy that is cut for 10 s: the guard retries
//! through the outage and its instance is kept (not reaped, not registered anew); shutting
//! down during an outage fails after the shutdown timeout and leaves the instance to its
//! lease.
//!
//! Real time (real I/O does not mix with tokio's paused clock); nothing asserts how long
//! anything takes.

use std::time::Duration;

use futures_util::StreamExt;
use tower_mesh::health::SelfRegistrationState;
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{Event, LeaseConfig, Reaper, Registry, Watch};

use super::*;

/// The guard's registry goes through the proxy; an observer and a reaper use a direct
/// connection to the same database (another process, unaffected by the outage).
async fn setup(base: &str) -> (support::Proxy, SqlRegistry, SqlRegistry) {
    let url = support::fresh_database(base).await;
    let (proxy, through) = support::behind_proxy(&url).await;
    let observer = SqlRegistry::connect(&url).await.unwrap();
    (proxy, through, observer)
}

/// Every event of the observer's watch until the instance is back to `Passing`.
async fn until_passing_again(watch: &mut Watch) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let event = eventually("the instance to be passing again", watch.next())
            .await
            .expect("the watch ended")
            .expect("the observer's watch does not go through the proxy");
        let done =
            matches!(&event, Event::Put { instance, .. } if instance.health() == Health::Passing);
        events.push(event);
        if done {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_ten_second_registry_outage() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let (proxy, through, observer) = setup(&base).await;
    // The lease (3 s) lapses during the outage; the grace period (60 s, from the lapse) is far
    // longer than the outage, so the instance must still be there, critical, when the proxy
    // comes back, and the guard's heartbeat must bring it back.
    let config = LeaseConfig::builder()
        .grace(Duration::from_secs(60))
        .sweep_interval(Duration::from_millis(200))
        .without_self_preservation()
        .build()
        .unwrap();
    let _reaper = Reaper::new(observer.clone(), config).spawn();
    let g = guard("o-1", 8001)
        .ttl(Duration::from_secs(3))
        .spawn(through)
        .unwrap();
    eventually("the first registration", g.registered()).await;
    status_where(&g, "two heartbeats", |s| s.heartbeats >= 2).await;
    assert_eq!(health_of(&observer, "o-1").await, Some(Health::Passing));
    let mut watch = observer.watch(&svc(), observer.revision().await.unwrap());

    proxy.cut();
    let failing = status_where(&g, "a failed heartbeat", |s| {
        s.state == SelfRegistrationState::Retrying
    })
    .await;
    let error = failing.last_error.expect("a failure is recorded");
    assert!(error.is_transient(), "{error}");
    // The outage lasts long enough for the lease to lapse: the heartbeats really stopped.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = g.status();
    assert_eq!(during.state, SelfRegistrationState::Retrying, "{during:?}");
    assert!(
        during.consecutive_failures >= 2,
        "it kept trying: {during:?}"
    );
    assert_eq!(health_of(&observer, "o-1").await, Some(Health::Critical));

    proxy.restore();
    let heartbeats = during.heartbeats;
    let after = status_where(&g, "heartbeats to resume", |s| {
        s.state == SelfRegistrationState::Registered && s.heartbeats > heartbeats
    })
    .await;
    // Kept alive, not registered anew: the same registration, renewed by heartbeats.
    assert_eq!(after.registrations, 1, "{after:?}");
    assert_eq!(after.consecutive_failures, 0);
    assert!(after.last_error.is_some(), "the last error is kept");
    // What the rest of the fleet saw: critical, then passing again, never removed.
    let events = until_passing_again(&mut watch).await;
    let healths: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Put { instance, .. } => instance.health(),
            other => panic!("the instance was not kept: {other:?}"),
        })
        .collect();
    assert_eq!(healths, [Health::Critical, Health::Passing]);
    let more = status_where(&g, "more heartbeats", |s| s.heartbeats > after.heartbeats).await;
    assert_eq!(more.registrations, 1);

    g.shutdown().await.unwrap();
    assert_eq!(health_of(&observer, "o-1").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_leaves_the_lease_to_lapse() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let (proxy, through, observer) = setup(&base).await;
    let g = guard("o-1", 8001)
        .ttl(Duration::from_secs(3))
        .shutdown_timeout(Duration::from_millis(1500))
        .spawn(through)
        .unwrap();
    eventually("the first registration", g.registered()).await;
    proxy.cut();
    let err = eventually("shutdown", g.shutdown()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    // Still registered: its lease will lapse and a reaper will remove it.
    assert_eq!(health_of(&observer, "o-1").await, Some(Health::Passing));
}
