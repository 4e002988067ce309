//! Discovery's bookkeeping under churn: what the stream keeps, and the work it does per event.

use futures_util::{FutureExt, StreamExt};
use tower::discover::Change;

use crate::instance::{Instance, InstanceId, ServiceName};
use crate::registry::{MemoryRegistry, Registry};

use super::Builder;

fn orders() -> ServiceName {
    "orders".parse().unwrap()
}

fn zoned(id: &str, zone: &str) -> Instance {
    Instance::builder("orders", id)
        .port(8080)
        .zone(zone)
        .build()
        .unwrap()
}

/// Takes what the stream has ready (a memory registry's watch is ready as soon as it changes;
/// the test never yields, so tokio's cooperative budget is lifted).
fn take<S>(d: &mut S) -> Vec<Change<InstanceId, u16>>
where
    S: futures_core::Stream<Item = Result<Change<InstanceId, u16>, crate::registry::Error>> + Unpin,
{
    let mut out = Vec::new();
    while let Some(item) = tokio::task::unconstrained(d.next()).now_or_never() {
        out.push(
            item.expect("the stream never ends")
                .expect("no errors here"),
        );
    }
    out
}

/// 100,000 pod-style instances, each registered and removed, through one stream that prefers
/// a zone: what the stream keeps follows the live instances (one), not every instance it ever
/// saw, and every batch of 20,000 events costs the same work. A reset at the end touches the
/// live instances only.
#[tokio::test]
async fn churn_of_100k_unique_instances_keeps_memory_and_work_flat() {
    let r = MemoryRegistry::new();
    r.register(zoned("stay", "z1").into()).await.unwrap();
    let mut d = Builder::new()
        .prefer_zone("z1")
        .build(r.clone(), "orders", |i: &Instance| i.port())
        .unwrap();
    assert_eq!(take(&mut d).len(), 1);
    let mut work = Vec::new();
    for batch in 0..10 {
        let before = d.internals().visits;
        let mut changes = 0;
        for n in 0..10_000 {
            let id = format!("pod-{batch}-{n}");
            // Half in the preferred zone (offered, then removed), half elsewhere (ignored).
            let zone = if n % 2 == 0 { "z1" } else { "z2" };
            r.register(zoned(&id, zone).into()).await.unwrap();
            r.deregister(&orders(), &id.parse().unwrap()).await.unwrap();
            if n % 100 == 99 {
                changes += take(&mut d).len();
                let kept = d.internals();
                assert_eq!(
                    (kept.instances, kept.slots, kept.held),
                    (1, 1, 0),
                    "after {} pods the stream keeps only the live instance",
                    batch * 10_000 + n + 1
                );
            }
        }
        assert_eq!(changes, 10_000, "5,000 inserts and 5,000 removals");
        work.push(d.internals().visits - before);
    }
    assert!(
        work.iter().all(|w| *w == work[0]) && work[0] <= 20_000,
        "the work per 20,000 events must not grow: {work:?}"
    );

    // The stream falls behind a compaction: a reset. It replaces one instance.
    let before = d.internals().visits;
    let id: InstanceId = "pod-late".parse().unwrap();
    r.register(zoned("pod-late", "z1").into()).await.unwrap();
    let rev = r.deregister(&orders(), &id).await.unwrap();
    r.compact(rev).await.unwrap();
    assert!(
        take(&mut d).is_empty(),
        "a pod that came and went yields nothing"
    );
    assert!(
        d.internals().visits - before <= 2,
        "the reset visits the live instance"
    );
    assert_eq!(d.internals().instances, 1);
    assert_eq!(d.handle().revision(), rev);

    // A burst: 10,000 pods at once, then gone. The room taken is given back.
    let room = d.internals().room;
    let pods: Vec<_> = (0..10_000)
        .map(|n| zoned(&format!("burst-{n}"), "z1").into())
        .collect();
    r.register_all(pods).await.unwrap();
    assert_eq!(take(&mut d).len(), 10_000);
    assert!(d.internals().room > 20_000);
    for n in 0..10_000 {
        let id = format!("burst-{n}").parse().unwrap();
        r.deregister(&orders(), &id).await.unwrap();
    }
    assert_eq!(take(&mut d).len(), 10_000);
    let kept = d.internals();
    assert_eq!((kept.instances, kept.slots), (1, 1));
    assert!(
        kept.room <= room.max(64 * 4),
        "the room taken by the burst is given back: {} after, {room} before",
        kept.room
    );
}
