//! Live health: a move between `Passing` and `Warning` reaches the endpoint the balancer holds
//! without a re-insert.

use std::convert::Infallible;
use std::task::Context;

use futures_util::Stream;
use tower::discover::Change;
use tower::Service;
use tower_mesh::discover::{MakeEndpoint, RegistryDiscover};
use tower_mesh::instance::{Health, Instance, InstanceId};
use tower_mesh::registry::{Error, MemoryRegistry, Registry};

use crate::{drain, flag, id, inst, svc};

fn ok(_: ()) -> std::future::Ready<Result<(), Infallible>> {
    std::future::ready(Ok(()))
}

type Always = tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), Infallible>>>;
type Endpoint = tower_mesh::discover::InstanceEndpoint<Always>;

fn weighted_endpoints() -> tower_mesh::discover::Weighted<impl FnMut(&Instance) -> Always> {
    (|_: &Instance| tower::service_fn(ok as fn(()) -> _)).weighted()
}

/// An instance that registered as `Warning` turns `Passing`: no re-insert, but the endpoint the
/// balancer holds reads `Passing` (so it counts as healthy for the panic threshold), and the
/// task that last polled its readiness is woken to re-read it. The same both ways, and for
/// clones.
async fn health_changes_reach_the_endpoint<S>(r: &MemoryRegistry, d: &mut S)
where
    S: Stream<Item = Result<Change<InstanceId, Endpoint>, Error>> + Unpin,
{
    let mut got = drain(d).await;
    assert_eq!(got.len(), 1);
    let Some(Change::Insert(_, mut endpoint)) = got.pop() else {
        panic!("an insert");
    };
    let copy = endpoint.clone();
    assert_eq!(endpoint.health(), Health::Warning);
    let (woken, waker) = flag();
    let mut cx = Context::from_waker(&waker);
    assert!(endpoint.poll_ready(&mut cx).is_ready());

    r.set_health(&svc("orders"), &id("a"), Health::Passing)
        .await
        .unwrap();
    assert!(
        drain(d).await.is_empty(),
        "no re-insert for Warning -> Passing"
    );
    assert_eq!(endpoint.health(), Health::Passing);
    assert_eq!(copy.health(), Health::Passing, "clones share the health");
    assert!(woken.take(), "the task that polled the endpoint is woken");
    #[cfg(feature = "balance")]
    assert!(tower_mesh::balance::Weight::is_healthy(&endpoint));

    // And back, after the balancer polled the endpoint again.
    assert!(endpoint.poll_ready(&mut cx).is_ready());
    r.set_health(&svc("orders"), &id("a"), Health::Warning)
        .await
        .unwrap();
    assert!(drain(d).await.is_empty());
    assert_eq!(endpoint.health(), Health::Warning);
    assert!(woken.take());
    #[cfg(feature = "balance")]
    assert!(!tower_mesh::balance::Weight::is_healthy(&endpoint));

    // A re-registration with the same address and health is no change and wakes nothing.
    r.register(inst("a", 1).with_health(Health::Warning).into())
        .await
        .unwrap();
    assert!(drain(d).await.is_empty());
    assert!(!woken.take());

    // Critical is a change: removed.
    r.set_health(&svc("orders"), &id("a"), Health::Critical)
        .await
        .unwrap();
    let got = drain(d).await;
    assert!(matches!(&got[..], [Change::Remove(k)] if k.as_str() == "a"));
}

#[tokio::test(start_paused = true)]
async fn health_changes_reach_the_endpoint_without_reinsert() {
    let r = MemoryRegistry::new();
    r.register(inst("a", 1).with_health(Health::Warning).into())
        .await
        .unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", weighted_endpoints());
    health_changes_reach_the_endpoint(&r, &mut d).await;
}

#[tokio::test(start_paused = true)]
async fn health_changes_reach_the_endpoint_through_spawn() {
    let r = MemoryRegistry::new();
    r.register(inst("a", 1).with_health(Health::Warning).into())
        .await
        .unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", weighted_endpoints()).spawn();
    health_changes_reach_the_endpoint(&r, &mut d).await;
}
