//! Registering, heartbeating, registering again after being reaped, shutdown and drop, on the
//! memory registry with tokio's paused clock.

use std::time::Duration;

use tower_mesh::health::SelfRegistrationState;
use tower_mesh::registry::{
    Clock, Event, LeaseConfig, ManualClock, MemoryRegistry, Reaper, Registration, Registry,
};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// The guard keeps its lease alive: a reaper sweeping every second over a minute never finds
/// it lapsed (without heartbeats it would be critical after 3 s).
#[tokio::test(start_paused = true)]
async fn heartbeats_keep_the_lease() {
    let registry = MemoryRegistry::new();
    let _reaper = Reaper::new(registry.clone(), LeaseConfig::default()).spawn();
    let g = guard("o-1", 8001)
        .ttl(3 * SECOND)
        .spawn(registry.clone())
        .unwrap();
    g.registered().await;
    assert_eq!(health_of(&registry, "o-1").await, Some(Health::Passing));
    let mut watch = registry.watch(&svc(), registry.revision().await.unwrap());

    tokio::time::sleep(60 * SECOND).await;
    let status = g.status();
    assert_eq!(status.state, SelfRegistrationState::Registered);
    assert_eq!(status.registrations, 1);
    assert!(status.heartbeats >= 55, "{status:?}");
    assert!(status.last_error.is_none());
    assert_eq!(health_of(&registry, "o-1").await, Some(Health::Passing));
    // No change at all was seen: the lease never lapsed.
    assert!(
        futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(&mut watch)).is_none()
    );
}

/// Reaped while alive (here: the registry's clock jumps past the lease and the grace period
/// between two heartbeats), the instance is registered again by the next heartbeat.
#[tokio::test(start_paused = true)]
async fn registers_again_after_being_reaped() {
    let clock = ManualClock::new(1_800_000_000_000);
    let registry = MemoryRegistry::with_clock(Clock::from(clock.clone()));
    let config = LeaseConfig::builder()
        .grace(10 * SECOND)
        .without_self_preservation()
        .build()
        .unwrap();
    let g = guard("o-1", 8001)
        .ttl(3 * SECOND)
        .spawn(registry.clone())
        .unwrap();
    g.registered().await;
    let from = registry.revision().await.unwrap();

    // No tokio time passes from here to the reaping: the guard sends no heartbeat meanwhile.
    clock.advance(4 * SECOND);
    let lapsed = registry.reap(&config).await.unwrap();
    assert_eq!(lapsed.expired.len(), 1);
    assert_eq!(health_of(&registry, "o-1").await, Some(Health::Critical));
    clock.advance(11 * SECOND);
    let reaped = registry.reap(&config).await.unwrap();
    assert_eq!(reaped.deregistered.len(), 1);
    assert_eq!(health_of(&registry, "o-1").await, None);

    let status = status_where(&g, "a second registration", |s| s.registrations == 2).await;
    assert_eq!(status.state, SelfRegistrationState::Registered);
    assert_eq!(health_of(&registry, "o-1").await, Some(Health::Passing));
    // Lapsed, removed, registered again: in that order, and the lease works again.
    let mut watch = registry.watch(&svc(), from);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(match futures_util::StreamExt::next(&mut watch).await {
            Some(Ok(Event::Put { instance, .. })) => format!("put {}", instance.health()),
            Some(Ok(Event::Delete { .. })) => "delete".to_owned(),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(kinds, ["put critical", "delete", "put passing"]);
    let hb = g.status().heartbeats;
    for _ in 0..5 {
        tokio::time::sleep(SECOND).await;
        clock.advance(SECOND);
    }
    assert!(registry.reap(&config).await.unwrap().expired.is_empty());
    assert!(g.status().heartbeats > hb);
}

/// Registered again without a lease by someone else (an operator, a script): the guard puts
/// its lease back.
#[tokio::test(start_paused = true)]
async fn puts_the_lease_back_when_registered_without_one() {
    let registry = MemoryRegistry::new();
    let g = guard("o-1", 8001)
        .ttl(3 * SECOND)
        .spawn(registry.clone())
        .unwrap();
    g.registered().await;
    registry
        .register(Registration::new(instance("o-1", 8001)))
        .await
        .unwrap();
    status_where(&g, "a second registration", |s| s.registrations == 2).await;
    // The lease is back: a heartbeat renews it.
    registry
        .heartbeat(&svc(), &"o-1".parse().unwrap())
        .await
        .unwrap();
}

/// `shutdown` returns only once the instance is deregistered.
#[tokio::test(start_paused = true)]
async fn shutdown_deregisters_before_returning() {
    let registry = MemoryRegistry::new();
    let g = guard("o-1", 8001).spawn(registry.clone()).unwrap();
    g.registered().await;
    let updates = g.status_updates();
    g.shutdown().await.unwrap();
    assert_eq!(health_of(&registry, "o-1").await, None);
    assert_eq!(updates.borrow().state, SelfRegistrationState::Stopped);
    assert!(updates.has_changed().is_err(), "the task has ended");
}

/// Shut down before its first registration: nothing is left behind.
#[tokio::test(start_paused = true)]
async fn shutdown_right_after_spawn_leaves_nothing() {
    let registry = MemoryRegistry::new();
    let g = guard("o-1", 8001).spawn(registry.clone()).unwrap();
    g.shutdown().await.unwrap();
    assert_eq!(health_of(&registry, "o-1").await, None);
}

/// Dropped: the task deregisters the instance on its own and ends.
#[tokio::test(start_paused = true)]
async fn drop_deregisters_in_the_background() {
    let registry = MemoryRegistry::new();
    let g = guard("o-1", 8001).spawn(registry.clone()).unwrap();
    g.registered().await;
    let mut updates = g.status_updates();
    drop(g);
    // The sender goes away when the task ends, after setting `Stopped`.
    while updates.changed().await.is_ok() {}
    assert_eq!(updates.borrow().state, SelfRegistrationState::Stopped);
    assert_eq!(health_of(&registry, "o-1").await, None);
}

/// Dropped after its runtime is gone: no panic, and the instance is left to its lease (the
/// documented fallback), which a reaper then expires.
#[test]
fn drop_without_a_runtime_leaves_the_lease_to_lapse() {
    let clock = ManualClock::new(1_800_000_000_000);
    let registry = MemoryRegistry::with_clock(Clock::from(clock.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let g = rt.block_on(async {
        let g = guard("o-1", 8001)
            .ttl(3 * SECOND)
            .spawn(registry.clone())
            .unwrap();
        g.registered().await;
        g
    });
    drop(rt);
    drop(g);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(health_of(&registry, "o-1").await, Some(Health::Passing));
        let config = LeaseConfig::builder()
            .grace(Duration::ZERO)
            .without_self_preservation()
            .build()
            .unwrap();
        clock.advance(4 * SECOND);
        assert_eq!(registry.reap(&config).await.unwrap().expired.len(), 1);
        assert_eq!(registry.reap(&config).await.unwrap().deregistered.len(), 1);
    });
}

/// The times of the first `n` heartbeats of a guard with a 3 s lease (a 1 s interval) and
/// `jitter`, on the paused clock.
async fn heartbeat_times(jitter: f64, n: u64) -> Vec<tokio::time::Instant> {
    let registry = MemoryRegistry::new();
    let g = guard("o-1", 8001)
        .ttl(3 * SECOND)
        .heartbeat_jitter(jitter)
        .spawn(registry.clone())
        .unwrap();
    let mut updates = g.status_updates();
    let mut times = Vec::new();
    let mut seen = 0;
    while times.len() < n as usize {
        updates.changed().await.unwrap();
        let heartbeats = updates.borrow_and_update().heartbeats;
        if heartbeats > seen {
            assert_eq!(heartbeats, seen + 1, "one heartbeat at a time");
            seen = heartbeats;
            times.push(tokio::time::Instant::now());
        }
    }
    g.shutdown().await.unwrap();
    times
}

/// Heartbeats come up to `heartbeat_jitter` of the interval early, never late, and not in
/// step: a fleet started together spreads its writes.
#[tokio::test(start_paused = true)]
async fn heartbeats_are_jittered_early_never_late() {
    let times = heartbeat_times(0.2, 30).await;
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= SECOND.mul_f64(0.8) && *gap <= SECOND,
            "a gap of {gap:?}: {gaps:?}"
        );
    }
    let (min, max) = (*gaps.iter().min().unwrap(), *gaps.iter().max().unwrap());
    assert!(max - min > Duration::from_millis(50), "spread: {gaps:?}");
}

/// With `heartbeat_jitter(0.0)` the heartbeats are exactly one interval apart.
#[tokio::test(start_paused = true)]
async fn heartbeats_without_jitter_are_one_interval_apart() {
    let times = heartbeat_times(0.0, 10).await;
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], SECOND);
    }
}
