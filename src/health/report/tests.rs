use std::time::Duration;

use super::*;
use crate::instance::{Check, LastCheck};
use crate::registry::{HealthUpdate, LeaseConfig, MemoryRegistry, Registration};

fn svc(s: &str) -> ServiceName {
    s.parse().unwrap()
}

fn id(s: &str) -> InstanceId {
    s.parse().unwrap()
}

fn instance(i: &str, port: u32) -> Instance {
    Instance::builder("orders", i).port(port).build().unwrap()
}

/// Four instances, one per status: `a` passing by an HTTP check, `b` warning with a reason,
/// `c` critical because its lease lapsed, `d` in maintenance.
async fn fleet() -> MemoryRegistry {
    let r = MemoryRegistry::new();
    let checked = instance("a", 8001)
        .to_builder()
        .check(Check::http("/healthz").build().unwrap())
        .build()
        .unwrap();
    r.register(checked.into()).await.unwrap();
    r.register(instance("b", 8002).into()).await.unwrap();
    let leased = Registration::new(instance("c", 8003))
        .with_ttl(Duration::from_secs(5))
        .unwrap();
    r.register(leased).await.unwrap();
    r.register(instance("d", 8004).into()).await.unwrap();
    let now = r.clock().now_ms();
    let ok = HealthUpdate::new(Health::Passing).with_last_check(LastCheck::new("HTTP 200 OK", now));
    r.set_health_with(&svc("orders"), &id("a"), ok)
        .await
        .unwrap();
    let slow =
        HealthUpdate::new(Health::Warning).with_last_check(LastCheck::new("p99 above 2s", now + 1));
    r.set_health_with(&svc("orders"), &id("b"), slow)
        .await
        .unwrap();
    r.set_health(&svc("orders"), &id("d"), Health::Maintenance)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    let report = r.reap(&LeaseConfig::default()).await.unwrap();
    assert_eq!(report.expired, [(svc("orders"), id("c"))]);
    r
}

#[tokio::test(start_paused = true)]
async fn counts_statuses_and_shows_each_instance() {
    let r = fleet().await;
    let ejected = |i: &InstanceId| (i == "a").then(|| "5 consecutive 5xx".to_owned());
    let report = service_health(&r, &svc("orders"), ejected).await.unwrap();
    assert_eq!(report.service(), "orders");
    assert_eq!(report.revision(), r.revision().await.unwrap());
    assert!(!report.is_stale() && report.corrupt().is_empty());
    let c = *report.counts();
    assert_eq!(
        (c.passing, c.warning, c.critical, c.maintenance, c.ejected),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(c.total(), 4);
    assert_eq!(c.get(Health::Critical), 1);

    let [a, b, cc, d] = report.instances() else {
        panic!("{report:?}")
    };
    assert_eq!(a.id(), "a");
    assert_eq!(a.health(), Health::Passing);
    assert_eq!(a.output(), Some("HTTP 200 OK"));
    assert!(a.is_ejected());
    assert_eq!(a.ejection(), Some("5 consecutive 5xx"));
    assert!(a.instance().check().is_some());
    assert_eq!(b.health(), Health::Warning);
    assert_eq!(b.output(), Some("p99 above 2s"));
    assert_eq!(b.checked_at_ms(), a.checked_at_ms().map(|t| t + 1));
    assert!(!b.is_ejected());
    assert_eq!(cc.health(), Health::Critical, "a lapsed lease is critical");
    assert_eq!(cc.last_check(), None);
    assert_eq!(d.health(), Health::Maintenance);
    assert_eq!(d.output(), None, "a plain set_health leaves no output");

    let critical: Vec<_> = report
        .with_health(Health::Critical)
        .map(|i| i.id())
        .collect();
    assert_eq!(critical, [&id("c")]);

    // No lookup: nothing is ejected.
    let report = service_health(&r, &svc("orders"), ()).await.unwrap();
    assert_eq!(report.counts().ejected, 0);
    assert!(report.instances().iter().all(|i| !i.is_ejected()));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_service_has_an_empty_report() {
    let r = fleet().await;
    let report = service_health(&r, &svc("billing"), ()).await.unwrap();
    assert!(report.instances().is_empty());
    assert_eq!(*report.counts(), HealthCounts::default());
    assert_eq!(report.counts().total(), 0);
}

#[tokio::test(start_paused = true)]
async fn serializes_flat_for_an_admin_api() {
    let r = MemoryRegistry::new();
    let checked = instance("a", 8001)
        .to_builder()
        .check(Check::tcp().build().unwrap())
        .build()
        .unwrap();
    r.register(checked.into()).await.unwrap();
    r.register(instance("b", 8002).into()).await.unwrap();
    let refused = LastCheck::new("connect: connection refused", 1_800_000_000_000);
    let update = HealthUpdate::new(Health::Critical).with_last_check(refused);
    r.set_health_with(&svc("orders"), &id("a"), update)
        .await
        .unwrap();
    let ejected = |i: &InstanceId| (i == "b").then(|| "success rate 40% < 71%".to_owned());
    let report = service_health(&r, &svc("orders"), ejected).await.unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "service": "orders",
            "revision": 3,
            "stale": false,
            "counts": {"passing": 1, "warning": 0, "critical": 1, "maintenance": 0, "ejected": 1},
            "instances": [
                {"id": "a", "authority": "127.0.0.1:8001", "health": "critical", "check": "tcp",
                 "output": "connect: connection refused", "checked_at_ms": 1_800_000_000_000_i64},
                {"id": "b", "authority": "127.0.0.1:8002", "health": "passing",
                 "ejection": "success rate 40% < 71%"},
            ],
            "corrupt": [],
        })
    );
}

#[cfg(feature = "sql")]
#[test]
fn stale_and_corrupt_snapshots_are_reported() {
    let corrupt = CorruptRecord::new(
        "orders".to_owned(),
        "bad".to_owned(),
        Some(Revision::new(7)),
        "health_check",
        "{not json".to_owned(),
        "expected ident".to_owned(),
    );
    let snapshot = Snapshot::new(Revision::new(9), vec![instance("a", 8001)])
        .with_stale(true)
        .with_corrupt(vec![corrupt.clone()]);
    let report = ServiceHealth::from_snapshot(svc("orders"), snapshot, &());
    assert!(report.is_stale());
    assert_eq!(report.corrupt(), [corrupt]);
    assert_eq!(
        report.counts().total(),
        1,
        "a corrupt record is not counted"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["corrupt"][0], report.corrupt()[0].to_string());
}
