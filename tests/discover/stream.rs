//! What the stream yields: on the memory registry, and on a registry that fails, with paused
//! time.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tower_mesh::discover::{Builder, RegistryDiscover};
use tower_mesh::instance::{Health, Instance};
use tower_mesh::registry::{Error, Event, MemoryRegistry, Registry, Revision, Snapshot};

use crate::flaky::flaky;
use crate::{drain, echo, id, inst, summary, svc};

#[tokio::test(start_paused = true)]
async fn inserts_updates_removes_and_filters() {
    let r = MemoryRegistry::new();
    r.register(inst("a", 1).into()).await.unwrap();
    r.register(inst("b", 2).into()).await.unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    let mut first = summary(&drain(&mut d).await);
    first.sort();
    assert_eq!(first, ["+a:1", "+b:2"]);
    assert_eq!(handle.endpoints(), 2);

    // Address change: re-inserted. Health passing -> warning: no change.
    r.register(inst("a", 11).into()).await.unwrap();
    r.set_health(&svc("orders"), &id("b"), Health::Warning)
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["+a:11"]);
    // Critical: removed; passing again: back.
    r.set_health(&svc("orders"), &id("b"), Health::Critical)
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["-b"]);
    r.set_health(&svc("orders"), &id("b"), Health::Passing)
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["+b:2"]);
    // Maintenance: removed. Drain (weight 0): removed too.
    r.set_health(&svc("orders"), &id("b"), Health::Maintenance)
        .await
        .unwrap();
    r.register(inst("a", 11).with_weight(0).unwrap().into())
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["-b", "-a"]);
    // Deregistered while absent: nothing; a new one: inserted; deregistered: removed.
    r.deregister(&svc("orders"), &id("b")).await.unwrap();
    let rev = r.register(inst("c", 3).into()).await.unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["+c:3"]);
    assert_eq!(handle.revision(), rev);
    r.deregister(&svc("orders"), &id("c")).await.unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["-c"]);
    // Other services never show up.
    r.register(
        Instance::builder("billing", "x")
            .port(9)
            .build()
            .unwrap()
            .into(),
    )
    .await
    .unwrap();
    assert!(drain(&mut d).await.is_empty());
    assert!(!handle.is_stale());
}

#[tokio::test(start_paused = true)]
async fn warning_filter_and_zone_preference() {
    let r = MemoryRegistry::new();
    let zoned = |id: &str, port, zone: &str| {
        Instance::builder("orders", id)
            .port(port)
            .zone(zone)
            .build()
            .unwrap()
    };
    r.register(zoned("a", 1, "z1").into()).await.unwrap();
    r.register(zoned("b", 2, "z2").into()).await.unwrap();
    r.register(zoned("w", 3, "z1").with_health(Health::Warning).into())
        .await
        .unwrap();
    let mut d = Builder::new()
        .include_warning(false)
        .prefer_zone("z1")
        .build(r.clone(), "orders", echo)
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["+a:1"]);
    // The preferred zone empties: fall back to every zone.
    r.set_health(&svc("orders"), &id("a"), Health::Critical)
        .await
        .unwrap();
    let mut got = summary(&drain(&mut d).await);
    got.sort();
    assert_eq!(got, ["+b:2", "-a"]);
    // It comes back: only it again.
    r.set_health(&svc("orders"), &id("a"), Health::Passing)
        .await
        .unwrap();
    let mut got = summary(&drain(&mut d).await);
    got.sort();
    assert_eq!(got, ["+a:1", "-b"]);
}

#[tokio::test(start_paused = true)]
async fn invalid_service_name_ends_with_an_error_at_first_poll() {
    let mut d = RegistryDiscover::new(MemoryRegistry::new(), "Not Valid", echo);
    match d.next().await {
        Some(Err(Error::Invalid(e))) => assert!(e.to_string().contains("Not Valid"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(d.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn outage_of_30s_keeps_the_set_and_resumes_exactly_once() {
    let r = flaky();
    for (n, port) in [("a", 1), ("b", 2), ("c", 3)] {
        r.register(inst(n, port).into()).await.unwrap();
    }
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    assert_eq!(drain(&mut d).await.len(), 3);

    r.down.store(true, Ordering::SeqCst);
    // Changes made while the registry is unreachable to this process.
    r.register(inst("d", 4).into()).await.unwrap();
    r.deregister(&svc("orders"), &id("a")).await.unwrap();
    r.register(inst("b", 22).into()).await.unwrap();
    r.set_health(&svc("orders"), &id("c"), Health::Critical)
        .await
        .unwrap();
    let last = r.register(inst("e", 5).into()).await.unwrap();
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            drain(&mut d).await.is_empty(),
            "nothing changes and nothing errors during the outage"
        );
    }
    assert!(handle.is_stale());
    assert!(handle.last_error().unwrap().contains("connection refused"));
    assert_eq!(handle.endpoints(), 3, "the last known set is still served");

    r.down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    let got = summary(&drain(&mut d).await);
    assert_eq!(
        got,
        ["+d:4", "-a", "+b:22", "-c", "+e:5"],
        "every missed change once, in order"
    );
    assert!(!handle.is_stale());
    assert_eq!(handle.revision(), last);
    assert_eq!(handle.endpoints(), 3);
}

#[tokio::test(start_paused = true)]
async fn registry_down_at_start_retries_until_it_answers() {
    let r = flaky();
    r.register(inst("a", 1).into()).await.unwrap();
    r.down.store(true, Ordering::SeqCst);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(drain(&mut d).await.is_empty());
    assert!(handle.is_stale());
    r.down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(summary(&drain(&mut d).await), ["+a:1"]);
    assert!(!handle.is_stale());
}

#[tokio::test(start_paused = true)]
async fn duplicate_and_out_of_order_events_are_ignored() {
    let r = flaky();
    let a1 = inst("a", 1);
    let a2 = inst("a", 2);
    *r.script.lock().unwrap() = Some(vec![
        Event::Put {
            revision: Revision::new(5),
            instance: a2.clone(),
        },
        Event::Put {
            revision: Revision::new(5),
            instance: a2.clone(),
        }, // duplicate
        Event::Put {
            revision: Revision::new(3),
            instance: a1.clone(),
        }, // late, older
        Event::Delete {
            revision: Revision::new(4),
            service: svc("orders"),
            id: id("a"),
        }, // late
        Event::Delete {
            revision: Revision::new(6),
            service: svc("orders"),
            id: id("a"),
        },
        Event::Put {
            revision: Revision::new(5),
            instance: a2,
        }, // older than the delete
    ]);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    assert_eq!(summary(&drain(&mut d).await), ["+a:2", "-a"]);
}

#[tokio::test(start_paused = true)]
async fn mass_disappearance_from_a_stale_registry_is_held() {
    let r = flaky();
    for n in 0..4 {
        r.register(inst(&format!("i{n}"), 1 + n).into())
            .await
            .unwrap();
    }
    // A stale source (a cache serving old data while its database is down) resets the set
    // to one instance: three of four would go.
    let stale = Snapshot::new(Revision::new(4), vec![inst("i0", 1)]).with_stale(true);
    *r.script.lock().unwrap() = Some(vec![Event::Reset(stale)]);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    assert_eq!(drain(&mut d).await.len(), 4, "the first load");
    assert!(drain(&mut d).await.is_empty(), "the removals are held");
    assert_eq!(handle.endpoints(), 4);
    // The registry is heard from again: the held removals are re-checked against it and go.
    r.register(inst("i9", 9).into()).await.unwrap();
    let mut got = summary(&drain(&mut d).await);
    got.sort();
    assert_eq!(got, ["+i9:9", "-i1", "-i2", "-i3"]);

    // A small reset from a stale source is applied at once.
    let r = flaky();
    for n in 0..4 {
        r.register(inst(&format!("i{n}"), 1 + n).into())
            .await
            .unwrap();
    }
    let names: Vec<_> = (0..3).map(|n| inst(&format!("i{n}"), 1 + n)).collect();
    *r.script.lock().unwrap() = Some(vec![Event::Reset(
        Snapshot::new(Revision::new(4), names).with_stale(true),
    )]);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let got = summary(&drain(&mut d).await);
    assert_eq!(got.len(), 5);
    assert_eq!(got[4], "-i3");
}
