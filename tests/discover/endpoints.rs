//! HTTP endpoints: the default body needs no annotation, another is chosen once; one factory
//! feeds tower's p2c and tower-mesh's balancer alike.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use tower::{Service, ServiceExt};
use tower_mesh::discover::{
    DefaultBody, HttpEndpoint, HttpEndpoints, MakeEndpoint, RegistryDiscover,
};
use tower_mesh::instance::Instance;
use tower_mesh::registry::{MemoryRegistry, Registration, Registry};

use crate::{at, send_n, server};

/// A client stored in a struct, its endpoint type named without a body type.
struct OneInstance {
    endpoint: HttpEndpoint,
}

/// `HttpEndpoints::new()` needs no type annotation: its requests carry `Full<Bytes>` (the
/// default body, which also carries an empty body). Another body type is chosen once, with
/// `with_body`, and reaches the same server.
#[tokio::test]
async fn default_body_needs_no_annotation_and_another_is_chosen_once() {
    let (addr, hits) = server("a").await;
    let instance = Instance::builder("orders", "a")
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .build()
        .unwrap();
    let mut factory = HttpEndpoints::new();
    let mut client = OneInstance {
        endpoint: factory.make_endpoint(&instance),
    };
    for body in [Full::default(), Full::new(Bytes::from_static(b"payload"))] {
        let req: http::Request<DefaultBody> = http::Request::post("/orders").body(body).unwrap();
        let rsp = client
            .endpoint
            .ready()
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "a");
    }

    let mut empty = HttpEndpoints::with_body::<Empty<Bytes>>().make_endpoint(&instance);
    let req = http::Request::get("/orders/42").body(Empty::new()).unwrap();
    let rsp = empty.ready().await.unwrap().call(req).await.unwrap();
    assert!(rsp.status().is_success());
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// One factory value, cloned, feeds tower's p2c balancer directly (its endpoints are `Load`:
/// `InstanceEndpoint` forwards the load of what it wraps) and tower-mesh's weighted balancer
/// (they carry the instance's weight), over real servers.
#[cfg(feature = "balance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_factory_feeds_tower_p2c_and_balance() {
    use tower::layer::layer_fn;
    use tower::load::{CompleteOnResponse, PendingRequests};
    use tower_mesh::balance::{BalanceLayer, Weighted};

    let (a, _) = server("a").await;
    let (b, _) = server("b").await;
    let registry = MemoryRegistry::new();
    registry.register(at("a", a)).await.unwrap();
    let weighted = |id: &str, addr: SocketAddr, weight: u32| -> Registration {
        Instance::builder("orders", id)
            .host(addr.ip().to_string())
            .port(u32::from(addr.port()))
            .weight(weight)
            .build()
            .unwrap()
            .into()
    };
    let rev = registry.register(weighted("b", b, 300)).await.unwrap();

    let factory = HttpEndpoints::new()
        .layered(layer_fn(|s| {
            PendingRequests::new(s, CompleteOnResponse::default())
        }))
        .weighted();

    // tower's p2c: no load wrapper around the discover, the endpoints are `Load` themselves.
    let discover = RegistryDiscover::new(registry.clone(), "orders", factory.clone()).spawn();
    discover.handle().applied(rev).await;
    let mut p2c = tower::balance::p2c::Balance::new(discover);
    let seen = send_n(&mut p2c, 60).await;
    assert_eq!(seen.values().sum::<usize>(), 60);
    assert!(seen.contains_key("a") && seen.contains_key("b"), "{seen:?}");

    // tower-mesh's balancer, weighted by the registry.
    let discover = RegistryDiscover::new(registry, "orders", factory).spawn();
    discover.handle().applied(rev).await;
    let mut balance = BalanceLayer::new(Weighted::new()).build(discover);
    let seen = send_n(&mut balance, 400).await;
    assert_eq!((seen["a"], seen["b"]), (100, 300), "{seen:?}");
}

/// tower-mesh's own balancer over the registry-fed stream: smooth weighted round robin reads
/// each instance's registered weight, real servers on loopback, and a re-registration with a
/// new weight takes effect.
#[cfg(feature = "balance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_balance_reads_instance_weights() {
    use tower_mesh::balance::{BalanceLayer, Weighted};
    let (a, _) = server("a").await;
    let (b, _) = server("b").await;
    let registry = MemoryRegistry::new();
    let weighted = |id: &str, addr: SocketAddr, weight: u32| -> Registration {
        Instance::builder("orders", id)
            .host(addr.ip().to_string())
            .port(u32::from(addr.port()))
            .weight(weight)
            .build()
            .unwrap()
            .into()
    };
    registry.register(weighted("a", a, 100)).await.unwrap();
    let rev = registry.register(weighted("b", b, 300)).await.unwrap();
    let discover =
        RegistryDiscover::new(registry.clone(), "orders", HttpEndpoints::new().weighted()).spawn();
    let handle = discover.handle();
    handle.applied(rev).await;
    let mut balancer = BalanceLayer::new(Weighted::new()).build(discover);
    let seen = send_n(&mut balancer, 400).await;
    assert_eq!(seen["a"], 100, "{seen:?}");
    assert_eq!(seen["b"], 300, "{seen:?}");

    // Equal weights now: the re-registration re-inserts "b" with its new weight.
    let rev = registry.register(weighted("b", b, 100)).await.unwrap();
    handle.applied(rev).await;
    let seen = send_n(&mut balancer, 400).await;
    assert_eq!((seen["a"], seen["b"]), (200, 200), "{seen:?}");
}
