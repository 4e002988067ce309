//! The conformance suite: every function here runs against every backend.

use std::time::Duration;

use futures_util::StreamExt;
use tower_mesh::instance::{Health, Instance, InstanceId, ServiceName};
use tower_mesh::registry::{
    Error, Event, LeaseConfig, ManualClock, Registration, Registry, Revision, Watch,
};

pub use super::checks::{checks_round_trip, health_output_round_trips};

/// A registry under test and the way to move its lease clock.
pub struct Ctx<R> {
    pub registry: R,
    pub manual: Option<ManualClock>,
}

impl<R: Registry> Ctx<R> {
    pub async fn advance(&self, by: Duration) {
        match &self.manual {
            Some(clock) => clock.advance(by),
            None => tokio::time::advance(by).await,
        }
    }
}

pub fn svc(name: &str) -> ServiceName {
    name.parse().unwrap()
}

pub fn id(name: &str) -> InstanceId {
    name.parse().unwrap()
}

pub fn inst(service: &str, id: &str, port: u32) -> Instance {
    Instance::builder(service, id)
        .host("127.0.0.1")
        .port(port)
        .version("1.0.0")
        .zone("z1")
        .metadata("team", "core")
        .build()
        .unwrap()
}

/// The default lease settings with this grace period.
pub fn grace(grace: Duration) -> LeaseConfig {
    LeaseConfig::builder().grace(grace).build().unwrap()
}

pub fn leased(i: Instance, ttl_secs: u64) -> Registration {
    Registration::new(i)
        .with_ttl(Duration::from_secs(ttl_secs))
        .unwrap()
}

/// The next `Ok` event, failing on an error item or a 10 s (tokio time) wait.
pub async fn next_event(watch: &mut Watch) -> Event {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn ids(instances: &[Instance]) -> Vec<String> {
    instances.iter().map(|i| i.id().to_string()).collect()
}

pub async fn register_and_snapshot<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let r1 = r
        .register(inst("orders", "o-2", 8002).into())
        .await
        .unwrap();
    let r2 = r
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let r3 = r
        .register(inst("billing", "b-1", 9001).into())
        .await
        .unwrap();
    assert!(
        r1 < r2 && r2 < r3,
        "revisions strictly increase: {r1} {r2} {r3}"
    );
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(ids(snap.instances()), ["o-1", "o-2"]);
    assert_eq!(snap.revision(), r3);
    assert!(snap.corrupt().is_empty());
    assert!(!snap.is_stale());
    let o1 = &snap.instances()[0];
    assert_eq!(o1, &inst("orders", "o-1", 8001));
    assert_eq!(o1.metadata()["team"], "core");
    assert_eq!(o1.zone(), Some("z1"));
    assert_eq!(
        r.services().await.unwrap(),
        vec![svc("billing"), svc("orders")]
    );
    assert_eq!(r.revision().await.unwrap(), r3);
    let none = r.snapshot(&svc("nobody")).await.unwrap();
    assert!(none.instances().is_empty());
}

pub async fn upsert_replaces<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let first = r
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let changed = inst("orders", "o-1", 8002).with_weight(7).unwrap();
    let second = r.register(changed.clone().into()).await.unwrap();
    assert!(second > first);
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(snap.instances(), [changed]);
}

pub async fn deregister_removes<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    r.register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    r.register(inst("orders", "o-2", 8002).into())
        .await
        .unwrap();
    let rev = r.deregister(&svc("orders"), &id("o-1")).await.unwrap();
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(ids(snap.instances()), ["o-2"]);
    assert_eq!(snap.revision(), rev);
    let err = r.deregister(&svc("orders"), &id("o-1")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        r#"instance "o-1" of service "orders" not found"#
    );
    assert_eq!(
        r.revision().await.unwrap(),
        rev,
        "a failed call takes no revision"
    );
    r.deregister(&svc("orders"), &id("o-2")).await.unwrap();
    assert!(r.services().await.unwrap().is_empty());
}

pub async fn set_health_changes<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    r.register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let rev = r
        .set_health(&svc("orders"), &id("o-1"), Health::Warning)
        .await
        .unwrap();
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(snap.instances()[0].health(), Health::Warning);
    assert_eq!(snap.revision(), rev);
    let err = r
        .set_health(&svc("orders"), &id("nope"), Health::Critical)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
}

pub async fn heartbeat_and_ttl<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let cfg = grace(Duration::from_secs(30));
    r.register(inst("orders", "static", 8000).into())
        .await
        .unwrap();
    r.register(leased(inst("orders", "o-1", 8001), 10))
        .await
        .unwrap();
    let err = r
        .heartbeat(&svc("orders"), &id("static"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoLease { .. }), "{err}");
    let err = r.heartbeat(&svc("orders"), &id("ghost")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    ctx.advance(Duration::from_secs(6)).await;
    assert_eq!(r.heartbeat(&svc("orders"), &id("o-1")).await.unwrap(), None);
    ctx.advance(Duration::from_secs(9)).await; // 15 s after registering, 9 after the heartbeat
    let report = r.reap(&cfg).await.unwrap();
    assert!(
        report.expired.is_empty(),
        "renewed lease must not lapse: {report:?}"
    );

    let mut watch = r.watch(&svc("orders"), r.revision().await.unwrap());
    ctx.advance(Duration::from_secs(2)).await; // 11 s after the heartbeat
    let report = r.reap(&cfg).await.unwrap();
    assert_eq!(report.expired, vec![(svc("orders"), id("o-1"))]);
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    let o1 = snap.instances().iter().find(|i| i.id() == "o-1").unwrap();
    assert_eq!(o1.health(), Health::Critical, "a lapsed lease is critical");
    match next_event(&mut watch).await {
        Event::Put { instance, .. } => assert_eq!(instance.health(), Health::Critical),
        e => panic!("expected a put, got {e:?}"),
    }
    // A second sweep does nothing more while the grace period runs.
    assert!(r.reap(&cfg).await.unwrap().expired.is_empty());

    // A heartbeat brings it back, with its registered health.
    let revived = r.heartbeat(&svc("orders"), &id("o-1")).await.unwrap();
    assert!(revived.is_some());
    match next_event(&mut watch).await {
        Event::Put { instance, revision } => {
            assert_eq!(instance.health(), Health::Passing);
            assert_eq!(Some(revision), revived);
        }
        e => panic!("expected a put, got {e:?}"),
    }

    // Missed again, then the grace period passes: deregistered.
    ctx.advance(Duration::from_secs(11)).await;
    assert_eq!(r.reap(&cfg).await.unwrap().expired.len(), 1);
    // The grace period counts from the sweep above, which turned it critical (1 s after the
    // lease's deadline).
    ctx.advance(Duration::from_secs(29)).await;
    assert!(r.reap(&cfg).await.unwrap().deregistered.is_empty());
    ctx.advance(Duration::from_secs(1)).await;
    let report = r.reap(&cfg).await.unwrap();
    assert_eq!(report.deregistered, vec![(svc("orders"), id("o-1"))]);
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(
        ids(snap.instances()),
        ["static"],
        "leaseless instances never expire"
    );
    let _ = next_event(&mut watch).await; // critical again
    match next_event(&mut watch).await {
        Event::Delete { id: gone, .. } => assert_eq!(gone, id("o-1")),
        e => panic!("expected a delete, got {e:?}"),
    }
}

pub async fn self_preservation<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let cfg = LeaseConfig::default(); // hold back when > 50 % of >= 4 leases lapse at once
    let regs = (0..6)
        .map(|n| leased(inst("orders", &format!("o-{n}"), 8000 + n), 10))
        .collect();
    r.register_all(regs).await.unwrap();
    ctx.advance(Duration::from_secs(5)).await;
    // Two keep heartbeating; four (67 %) go silent, as if the registry were cut off from them.
    ctx.advance(Duration::from_secs(6)).await;
    for n in 0..2 {
        let _ = r.heartbeat(&svc("orders"), &id(&format!("o-{n}"))).await;
    }
    let report = r.reap(&cfg).await.unwrap();
    assert!(report.expired.is_empty(), "{report:?}");
    assert_eq!(report.held_back, 4);
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert!(snap
        .instances()
        .iter()
        .all(|i| i.health() == Health::Passing));

    // Without the guard they expire.
    let report = r
        .reap(
            &LeaseConfig::builder()
                .without_self_preservation()
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(report.expired.len(), 4);

    // One lapse in six is ordinary and expires even with the guard.
    for n in 0..6 {
        r.heartbeat(&svc("orders"), &id(&format!("o-{n}")))
            .await
            .unwrap();
    }
    ctx.advance(Duration::from_secs(6)).await;
    for n in 1..6 {
        r.heartbeat(&svc("orders"), &id(&format!("o-{n}")))
            .await
            .unwrap();
    }
    ctx.advance(Duration::from_secs(6)).await;
    let report = r.reap(&cfg).await.unwrap();
    assert_eq!(report.expired, vec![(svc("orders"), id("o-0"))]);
}

/// Five changes to `orders` (and one to `billing`) for the watch tests; returns their revisions.
async fn history<R: Registry>(r: &R) -> Vec<Revision> {
    vec![
        r.register(inst("orders", "o-1", 8001).into())
            .await
            .unwrap(),
        r.register(inst("orders", "o-2", 8002).into())
            .await
            .unwrap(),
        r.register(inst("billing", "b-1", 9001).into())
            .await
            .unwrap(),
        r.set_health(&svc("orders"), &id("o-1"), Health::Maintenance)
            .await
            .unwrap(),
        r.deregister(&svc("orders"), &id("o-2")).await.unwrap(),
        r.register(inst("orders", "o-3", 8003).into())
            .await
            .unwrap(),
    ]
}

pub async fn watch_from_zero<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let revs = history(r).await;
    let mut w = r.watch(&svc("orders"), Revision::ZERO);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_event(&mut w).await);
    }
    let got: Vec<Revision> = seen.iter().map(Event::revision).collect();
    assert_eq!(got, [revs[0], revs[1], revs[3], revs[4], revs[5]]);
    assert!(
        matches!(&seen[2], Event::Put { instance, .. } if instance.health() == Health::Maintenance)
    );
    assert!(matches!(&seen[3], Event::Delete { id: d, .. } if d == &id("o-2")));
    // Live changes follow, other services' do not.
    r.register(inst("billing", "b-2", 9002).into())
        .await
        .unwrap();
    let live = r
        .register(inst("orders", "o-4", 8004).into())
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await.revision(), live);
}

pub async fn watch_from_middle<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let revs = history(r).await;
    let mut w = r.watch(&svc("orders"), revs[3]);
    assert_eq!(next_event(&mut w).await.revision(), revs[4]);
    assert_eq!(next_event(&mut w).await.revision(), revs[5]);
    let mut all = r.watch_all(revs[1]);
    for rev in &revs[2..] {
        assert_eq!(next_event(&mut all).await.revision(), *rev);
    }
}

pub async fn watch_after_compaction<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let revs = history(r).await;
    r.compact(revs[3]).await.unwrap();
    // From before the compaction point: a full reset first, never silent gaps.
    let mut w = r.watch(&svc("orders"), revs[1]);
    match next_event(&mut w).await {
        Event::Reset(snap) => {
            assert_eq!(ids(snap.instances()), ["o-1", "o-3"]);
            assert_eq!(snap.revision(), revs[5]);
        }
        e => panic!("expected a reset, got {e:?}"),
    }
    let live = r
        .register(inst("orders", "o-9", 8009).into())
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await.revision(), live);
    // From after it: plain events.
    let mut w = r.watch(&svc("orders"), revs[3]);
    assert_eq!(next_event(&mut w).await.revision(), revs[4]);
}

pub async fn concurrent_writers<R: Registry>(ctx: Ctx<R>) {
    let r = ctx.registry.clone();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for n in 0..25u32 {
                let i = inst("orders", &format!("t{t}-{n}"), 1000 + t * 100 + n);
                revs.push(r.register(i.into()).await.unwrap());
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200, "every write got its own revision");
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(snap.instances().len(), 200);
    let mut w = r.watch(&svc("orders"), Revision::ZERO);
    let mut last = Revision::ZERO;
    for _ in 0..200 {
        let e = next_event(&mut w).await;
        assert!(e.revision() > last, "in order");
        last = e.revision();
    }
    assert_eq!(last, *all.last().unwrap());
}

pub async fn batch_registration<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let regs: Vec<Registration> = (0..600)
        .map(|n| inst("orders", &format!("o-{n}"), 1 + n).into())
        .collect();
    let before = r.revision().await.unwrap();
    let last = r.register_all(regs).await.unwrap();
    assert_eq!(last.get() - before.get(), 600, "one revision per instance");
    assert_eq!(
        r.snapshot(&svc("orders")).await.unwrap().instances().len(),
        600
    );
    let mut w = r.watch(&svc("orders"), before);
    let mut n = 0;
    while n < 600 {
        next_event(&mut w).await;
        n += 1;
    }
    assert_eq!(r.register_all(Vec::new()).await.unwrap(), last);
}

pub async fn bad_input_is_rejected<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let i = inst("orders", "o-1", 8001);
    let err = Registration::new(i.clone())
        .with_ttl(Duration::ZERO)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid ttl 0ns for instance "o-1": must be between 1ms and 24h"#
    );
    assert!(Registration::new(i)
        .with_ttl(Duration::from_secs(90_000))
        .is_err());
    assert!("Bad_Name".parse::<ServiceName>().is_err());
    assert!("".parse::<InstanceId>().is_err());
    // Nothing was stored by the rejected calls.
    assert_eq!(r.revision().await.unwrap(), Revision::ZERO);
}

/// Self-preservation over a window: the registry is cut off from its instances, whose leases
/// lapse spread over the TTL (about one in ten per one-second sweep, as in a real outage).
/// However long the outage lasts, the registry never empties itself, and when the instances
/// come back they are all still there.
pub async fn outage_never_empties<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let cfg = grace(Duration::from_secs(30));
    let n = 20u32;
    let regs = (0..n)
        .map(|k| leased(inst("orders", &format!("o-{k}"), 8000 + k), 10))
        .collect();
    r.register_all(regs).await.unwrap();
    // Heartbeats spread over the TTL: instance k last renews at 0.5 s * (k + 1).
    for k in 0..n {
        ctx.advance(Duration::from_millis(500)).await;
        r.heartbeat(&svc("orders"), &id(&format!("o-{k}")))
            .await
            .unwrap();
        r.reap(&cfg).await.unwrap();
    }
    // The outage: no heartbeat lands for 200 s (several times TTL + grace), one sweep a second.
    let mut expired = 0;
    for _ in 0..200 {
        ctx.advance(Duration::from_secs(1)).await;
        let report = r.reap(&cfg).await.unwrap();
        assert!(
            report.deregistered.is_empty(),
            "an outage must not empty the registry: {report:?}"
        );
        expired += report.expired.len();
    }
    assert!(
        expired <= n as usize / 2 + 1,
        "self-preservation stops marking lapses once the window's share passes the limit: {expired}"
    );
    assert_eq!(
        r.snapshot(&svc("orders")).await.unwrap().instances().len(),
        n as usize
    );
    // The outage ends: every instance renews, and all are passing again.
    for k in 0..n {
        r.heartbeat(&svc("orders"), &id(&format!("o-{k}")))
            .await
            .unwrap();
    }
    let report = r.reap(&cfg).await.unwrap();
    assert!(report.expired.is_empty() && report.deregistered.is_empty());
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(snap.instances().len(), n as usize);
    assert!(snap
        .instances()
        .iter()
        .all(|i| i.health() == Health::Passing));
}

/// Ordinary lapses of a few instances are reaped, and the grace period counts from when the
/// instance turned critical (the sweep that saw the lapse), not from the lease's deadline.
pub async fn grace_counts_from_critical<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let cfg = grace(Duration::from_secs(30));
    let regs = (0..10)
        .map(|k| leased(inst("orders", &format!("o-{k}"), 8000 + k), 10))
        .collect();
    r.register_all(regs).await.unwrap();
    let beat = |from: u32| async move {
        for k in from..10 {
            r.heartbeat(&svc("orders"), &id(&format!("o-{k}")))
                .await
                .unwrap();
        }
    };
    // o-0 and o-1 stop renewing; their leases run out at t = 10 s. No sweep runs until t = 25 s
    // (every reaper was down), so they turn critical at 25 s.
    for _ in 0..5 {
        ctx.advance(Duration::from_secs(5)).await;
        beat(2).await;
    }
    let report = r.reap(&cfg).await.unwrap();
    assert_eq!(
        report.expired,
        vec![(svc("orders"), id("o-0")), (svc("orders"), id("o-1"))]
    );
    // t = 50 s: 40 s after the deadline, 25 s after turning critical: still there.
    for _ in 0..5 {
        ctx.advance(Duration::from_secs(5)).await;
        beat(2).await;
        let report = r.reap(&cfg).await.unwrap();
        assert!(
            report.deregistered.is_empty(),
            "grace counts from the critical time: {report:?}"
        );
    }
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(snap.instances().len(), 10);
    // t = 56 s: 31 s after turning critical: deregistered.
    ctx.advance(Duration::from_secs(6)).await;
    beat(2).await;
    let report = r.reap(&cfg).await.unwrap();
    assert_eq!(
        report.deregistered,
        vec![(svc("orders"), id("o-0")), (svc("orders"), id("o-1"))]
    );
    assert_eq!(
        ids(r.snapshot(&svc("orders")).await.unwrap().instances()),
        (2..10).map(|k| format!("o-{k}")).collect::<Vec<_>>()
    );
}

/// A watcher that asks for changes after a revision the registry has not reached (one from a
/// history the registry no longer has: a restored database, a new file) gets the whole current
/// state as a [`Event::Reset`] instead of waiting forever; changes after it follow.
pub async fn watch_from_above_current_revision<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let revs = history(r).await;
    let current = *revs.last().unwrap();
    let mut w = r.watch(&svc("orders"), Revision::new(current.get() + 100));
    match next_event(&mut w).await {
        Event::Reset(snap) => {
            assert_eq!(ids(snap.instances()), ["o-1", "o-3"]);
            assert_eq!(snap.revision(), current);
        }
        e => panic!("expected a reset, got {e:?}"),
    }
    let live = r
        .register(inst("orders", "o-9", 8009).into())
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await.revision(), live);
}
