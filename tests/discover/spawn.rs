//! A stream driven in the background: it hands out differences, and reports its task dying.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Context;

use futures_util::Stream;
use tower_mesh::discover::RegistryDiscover;
use tower_mesh::instance::Instance;
use tower_mesh::registry::{MemoryRegistry, Registry, Revision};

use crate::flaky::flaky;
use crate::{drain, echo, flag, id, inst, summary, svc};

/// A spawned stream keeps the set the balancer should hold and hands out the differences when
/// polled: nothing piles up while no request flows, and no endpoint is made before it is taken.
#[tokio::test(start_paused = true)]
async fn spawned_hands_out_differences_not_every_change() {
    let r = MemoryRegistry::new();
    let first = r.register(inst("x", 9).into()).await.unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let mut d = RegistryDiscover::new(r.clone(), "orders", move |i: &Instance| {
        counter.fetch_add(1, Ordering::SeqCst);
        i.clone()
    })
    .spawn();
    let handle = d.handle();
    handle.applied(first).await;
    assert_eq!(summary(&drain(&mut d).await), ["+x:9"]);
    assert_eq!(made.load(Ordering::SeqCst), 1);
    // The balancer has taken everything; then no request flows for a while.
    let (woken, waker) = flag();
    assert!(Pin::new(&mut d)
        .poll_next(&mut Context::from_waker(&waker))
        .is_pending());

    r.register(inst("a", 1).into()).await.unwrap();
    r.deregister(&svc("orders"), &id("a")).await.unwrap();
    for port in 1..=10 {
        r.register(inst("b", port).into()).await.unwrap();
    }
    let mut rev = Revision::ZERO;
    for n in 0..10_000 {
        let pod = format!("pod-{n}");
        r.register(inst(&pod, 80).into()).await.unwrap();
        rev = r.deregister(&svc("orders"), &id(&pod)).await.unwrap();
    }
    handle.applied(rev).await;
    assert!(
        woken.take(),
        "the balancer's task is woken when there is a change"
    );
    assert_eq!(
        made.load(Ordering::SeqCst),
        1,
        "no endpoint is made before the balancer takes it"
    );
    assert_eq!(handle.endpoints(), 2);
    assert_eq!(
        summary(&drain(&mut d).await),
        ["+b:10"],
        "a came and went, b changed ten times, the pods came and went"
    );
    assert_eq!(made.load(Ordering::SeqCst), 2);

    // Held by the balancer now: changed and changed back is one re-insert; removed is a removal.
    r.register(inst("b", 11).into()).await.unwrap();
    let rev = r.register(inst("b", 10).into()).await.unwrap();
    handle.applied(rev).await;
    assert_eq!(summary(&drain(&mut d).await), ["+b:10"]);
    r.register(inst("c", 3).into()).await.unwrap();
    let rev = r.deregister(&svc("orders"), &id("b")).await.unwrap();
    handle.applied(rev).await;
    assert_eq!(summary(&drain(&mut d).await), ["+c:3", "-b"]);
    assert_eq!(handle.endpoints(), 2);
    assert_eq!(made.load(Ordering::SeqCst), 4);
}

/// The task driving a spawned stream dies (here, a registry whose watch panics): the handle
/// reports it and the balancer's task is woken, instead of the set silently freezing.
#[tokio::test(start_paused = true)]
async fn a_spawned_stream_whose_task_dies_reports_it() {
    let r = flaky();
    let rev = r.register(inst("a", 1).into()).await.unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo).spawn();
    let handle = d.handle();
    handle.applied(rev).await;
    assert_eq!(summary(&drain(&mut d).await), ["+a:1"]);
    let (woken, waker) = flag();
    assert!(Pin::new(&mut d)
        .poll_next(&mut Context::from_waker(&waker))
        .is_pending());

    r.panics.store(true, Ordering::SeqCst);
    r.register(inst("b", 2).into()).await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(handle.is_stale(), "the dead task is reported");
    assert!(
        handle
            .last_error()
            .unwrap()
            .contains("background task stopped"),
        "{:?}",
        handle.last_error()
    );
    assert!(woken.take(), "the balancer is woken to see it");
    assert!(drain(&mut d).await.is_empty());
    assert_eq!(handle.endpoints(), 1, "the last set is still served");
}
