//! Breaker names (distinct per endpoint, shared rather than leaked), what a dropped endpoint
//! releases, and errors: printed once in a chain, found through `Buffer` and `BoxError`.

use std::sync::{Arc, Weak};

use tower::buffer::Buffer;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_layer::Layer;

use super::*;

/// `Layer::layer` outside discovery numbers the breakers of one layer and its clones; an
/// explicit name is kept as it is.
#[test]
fn endpoint_breakers_made_by_layer_are_numbered() {
    let layer = quick().build_endpoint().unwrap();
    let a = layer.layer(echo());
    let b = layer.clone().layer(echo());
    assert_eq!(a.handle().name(), "test#1");
    assert_eq!(b.handle().name(), "test#2");
    assert_eq!(layer.layer_named(echo(), "mine").handle().name(), "mine");
    let unnamed = EndpointBreakerLayer::builder().build_endpoint().unwrap();
    assert_eq!(unnamed.layer(echo()).handle().name(), "breaker#1");
    // The service-level breaker keeps the builder's name, or the default.
    let (_, handle) = CircuitBreakerLayer::builder().build_with_handle().unwrap();
    assert_eq!(handle.name(), "breaker");
}

/// Everything the breaker keeps (its state, its name, its `metrics` handles) is freed once
/// the endpoint, its handles, its response futures and its rejections are gone; the name is
/// shared with the rejections, not copied or interned.
#[tokio::test(start_paused = true)]
async fn a_dropped_breaker_releases_everything_it_kept() {
    let builder = quick().consecutive_failures(1);
    #[cfg(feature = "metrics")]
    let builder = builder.metrics(true);
    let layer = builder.build().unwrap();
    let (shared, name) = (
        Arc::downgrade(&layer.shared),
        Arc::downgrade(layer.shared.name()),
    );
    let mut svc = layer.layer(echo());
    drop(layer);
    run(&mut svc, Err("down")).await.unwrap_err();
    let rejection = svc.ready().await.unwrap().call(Ok("a")).await.unwrap_err();
    let open = rejection.as_open().expect("open").clone();
    assert!(
        Arc::ptr_eq(open.shared_name(), &name.upgrade().expect("alive")),
        "the rejection shares the breaker's name"
    );
    drop((svc, rejection));
    assert!(shared.upgrade().is_none(), "the breaker is freed");
    assert_eq!(open.name(), "test", "a rejection keeps the name alive");
    drop(open);
    assert!(name.upgrade().is_none(), "and the name with it");

    // The same for an endpoint breaker, with a call in flight when it is dropped.
    let layer = quick().build_endpoint().unwrap();
    let (inner, mut backend) = tower_test::mock::pair::<&'static str, &'static str>();
    let mut ep = layer.layer(inner);
    let (shared, name) = weak_parts(&ep.handle());
    backend.allow(1);
    ep.ready().await.unwrap();
    let call = ep.call("x");
    drop(ep);
    assert!(shared.upgrade().is_some(), "the call in flight holds it");
    drop(call);
    assert!(shared.upgrade().is_none() && name.upgrade().is_none());
}

fn weak_parts(handle: &Handle) -> (Weak<crate::breaker::state::Shared>, Weak<str>) {
    (
        Arc::downgrade(&handle.shared),
        Arc::downgrade(handle.shared.name()),
    )
}

/// An error with a source of its own, to see how a chain prints.
#[derive(Debug, thiserror::Error)]
#[error("request to orders failed")]
struct Upstream(#[source] std::io::Error);

/// The messages of `e` and its sources, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect()
}

/// `Error` is transparent: its chain is the inner error's, each message once; a rejection
/// is one message with no source.
#[tokio::test(start_paused = true)]
async fn errors_print_once_in_a_chain() {
    let (layer, handle) = quick().build_with_handle().unwrap();
    let mut svc = layer.layer(service_fn(|_: ()| async {
        Err::<(), _>(Upstream(std::io::Error::other("connection reset")))
    }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(matches!(err, error::Error::Inner(_)));
    assert_eq!(
        chain(&err),
        ["request to orders failed", "connection reset"],
        "transparent: the inner error's chain"
    );
    handle.force_open();
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(
        chain(&err),
        [r#"circuit breaker for "test" is forced open"#]
    );
    let e = CircuitBreakerLayer::builder()
        .jitter(2.0)
        .build()
        .unwrap_err();
    assert_eq!(chain(&e).len(), 1, "{e}");
}

/// `Open::find` behind a real `Buffer`: a rejection arrives as a `BoxError`; one from an
/// inner breaker arrives inside the outer breaker's transparent `Error::Inner`; and a
/// rejection that failed a buffered service's readiness arrives inside the buffer's
/// `ServiceError`.
#[tokio::test(start_paused = true)]
async fn open_is_found_through_buffer_and_box_error() {
    let (inner, inner_handle) = quick().name("inner").build_with_handle().unwrap();
    let (outer, outer_handle) = quick().name("outer").build_with_handle().unwrap();
    let svc = ServiceBuilder::new()
        .buffer(8)
        .layer(outer)
        .buffer(8)
        .layer(inner)
        .service(echo());
    assert_eq!(svc.clone().oneshot(Ok("a")).await.unwrap(), "a");

    inner_handle.force_open();
    let err: BoxError = svc.clone().oneshot(Ok("a")).await.unwrap_err();
    let open = error::Open::find(&*err).expect("found through both buffers and the outer breaker");
    assert_eq!(open.name(), "inner");
    assert_eq!(err.to_string(), open.to_string(), "printed once");
    assert_eq!(chain(&*err).len(), 1);
    inner_handle.reset();

    outer_handle.force_open();
    let err = svc.clone().oneshot(Ok("a")).await.unwrap_err();
    assert_eq!(error::Open::find(&*err).unwrap().name(), "outer");
    outer_handle.reset();

    // A service whose readiness fails with a rejection (as one that waits for a breaker
    // might): `Buffer` fails for good, and hands out its `ServiceError`.
    let (_, handle) = quick().name("gate").build_with_handle().unwrap();
    handle.force_open();
    let rejection = handle.shared.open_error(State::ForcedOpen);
    let failing = FailReady(Some(error::Error::from(rejection)));
    let mut buffered = Buffer::<(), _>::new(failing, 1);
    let err = match buffered.ready().await {
        Err(e) => e,
        Ok(b) => b.call(()).await.unwrap_err(),
    };
    assert!(
        err.is::<tower::buffer::error::ServiceError>(),
        "{err}: a ServiceError"
    );
    assert_eq!(error::Open::find(&*err).unwrap().name(), "gate");
}

/// A service whose `poll_ready` fails once with the given error.
struct FailReady(Option<error::Error>);

impl Service<()> for FailReady {
    type Response = ();
    type Error = error::Error;
    type Future = std::future::Ready<Result<(), error::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(self.0.take().map_or(Ok(()), Err))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

/// Names through discovery: `<service>/<instance id>` by default and `<name>/<instance id>`
/// with a builder name, whether the breaker is the layer given to `layered`, nested in a
/// `ServiceBuilder` stack, or wrapped by `weighted`; `Layer::layer` outside the factory
/// numbers again.
#[cfg(feature = "discover")]
#[test]
fn discovery_names_each_breaker_after_its_instance() {
    use crate::discover::MakeEndpoint;
    use crate::instance::Instance;
    use std::time::Duration;

    let instance = |id: &str| {
        Instance::builder("orders", id)
            .host("10.0.0.1")
            .port(80)
            .build()
            .unwrap()
    };
    let (one, two) = (instance("orders-1"), instance("orders-2"));
    let factory = |_: &Instance| echo();

    let unnamed = EndpointBreakerLayer::builder().build_endpoint().unwrap();
    let mut f = factory.layered(unnamed.clone());
    assert_eq!(f.make_endpoint(&one).handle().name(), "orders/orders-1");
    assert_eq!(
        f.make_live_endpoint(&two).0.handle().name(),
        "orders/orders-2"
    );
    // Outside the factory, numbered as before.
    assert_eq!(unnamed.layer(echo()).handle().name(), "breaker#1");

    let named = quick().name("billing").build_endpoint().unwrap();
    let mut stacked = factory.layered(
        ServiceBuilder::new()
            .layer(named.clone())
            .timeout(Duration::from_secs(1))
            .into_inner(),
    );
    assert_eq!(
        stacked.make_endpoint(&one).handle().name(),
        "billing/orders-1"
    );
    let mut weighted_outside = factory.layered(named.clone()).weighted();
    let (ep, _) = weighted_outside.make_live_endpoint(&two);
    assert_eq!(ep.get_ref().handle().name(), "billing/orders-2");
    let mut weighted_inside = factory.weighted().layered(named.clone());
    assert_eq!(
        weighted_inside.make_endpoint(&two).handle().name(),
        "billing/orders-2"
    );
    assert_eq!(
        named.layer_instance(echo(), &one).handle().name(),
        "billing/orders-1"
    );
}

/// Through a real discovery stream and balancer: an instance that is deregistered has its
/// endpoint dropped by the balancer, and its breaker (state, name, metrics handles) is freed.
#[cfg(all(feature = "discover", feature = "balance"))]
#[tokio::test(start_paused = true)]
async fn a_removed_endpoint_frees_its_breaker() {
    use crate::balance::{BalanceLayer, RoundRobin};
    use crate::discover::{MakeEndpoint, RegistryDiscover};
    use crate::instance::{Instance, InstanceId};
    use crate::registry::{MemoryRegistry, Registry};

    let registry = MemoryRegistry::new();
    let made = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = made.clone();
    let builder = quick();
    #[cfg(feature = "metrics")]
    let builder = builder.metrics(true);
    let mut endpoints = (|_: &Instance| echo())
        .layered(builder.build_endpoint().unwrap())
        .weighted();
    // Records each endpoint's breaker, weakly, as discovery makes it.
    let factory = move |instance: &Instance| {
        let (ep, _) = endpoints.make_live_endpoint(instance);
        let handle = ep.get_ref().handle();
        crate::sync::lock(&seen).push((handle.name().to_owned(), weak_parts(&handle)));
        ep
    };
    let discover = RegistryDiscover::new(registry.clone(), "orders", factory).spawn();
    let discovered = discover.handle();
    let mut balance = BalanceLayer::new(RoundRobin::new()).build(discover);
    for id in ["orders-1", "orders-2"] {
        let instance = Instance::builder("orders", id)
            .host("10.0.0.1")
            .port(80)
            .build()
            .unwrap();
        discovered
            .applied(registry.register(instance.into()).await.unwrap())
            .await;
    }
    for _ in 0..4 {
        assert_eq!(
            balance.ready().await.unwrap().call(Ok("a")).await.unwrap(),
            "a"
        );
    }
    let names: Vec<_> = crate::sync::lock(&made)
        .iter()
        .map(|m| m.0.clone())
        .collect();
    assert_eq!(
        names,
        ["test/orders-1", "test/orders-2"],
        "the builder's name"
    );

    let id: InstanceId = "orders-1".parse().unwrap();
    let rev = registry
        .deregister(&"orders".parse().unwrap(), &id)
        .await
        .unwrap();
    discovered.applied(rev).await;
    let (removed, kept) = {
        let made = crate::sync::lock(&made);
        (made[0].1.clone(), made[1].1.clone())
    };
    // The balancer's worker applies the removal in the background.
    for _ in 0..100 {
        if removed.0.upgrade().is_none() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        removed.0.upgrade().is_none(),
        "the removed endpoint's breaker is freed"
    );
    assert!(removed.1.upgrade().is_none(), "and its name");
    assert!(
        kept.0.upgrade().is_some(),
        "the other endpoint's breaker lives on"
    );
    assert_eq!(
        balance.ready().await.unwrap().call(Ok("b")).await.unwrap(),
        "b"
    );
}
