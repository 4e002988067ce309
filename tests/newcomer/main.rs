//! A new user's client, written from the docs alone: HTTP endpoints from the registry, each
//! behind an endpoint breaker and weighted (in both orders), tower-mesh's balancer, a
//! service-level breaker and tower's `Buffer`, kept in a struct whose field types are all
//! named (no `impl Trait`, no boxing, no tower-http import), against real hyper servers on
//! loopback. The errors a caller needs to tell apart, "no endpoint" and "circuit open", are
//! matched through the buffer's wrapping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_mesh::balance::error::NoEndpoints;
use tower_mesh::balance::{Balance, BalanceHandle, BalanceLayer, RoundRobin};
use tower_mesh::breaker::classify::ServerErrorsClassifier;
use tower_mesh::breaker::error::Open;
use tower_mesh::breaker::{
    CircuitBreakerLayer, EndpointBreakerLayer, HttpCircuitBreaker, HttpClassifier,
    HttpEndpointBreaker, HttpEndpointBreakerLayer,
};
use tower_mesh::discover::{
    Builder, HttpEndpoint, HttpEndpoints, InstanceEndpoint, Layered, MakeEndpoint, Spawned,
    Weighted,
};
use tower_mesh::instance::{Instance, InstanceId};
use tower_mesh::registry::{AnyRegistry, Registration, Registry};

/// A backend on loopback answering 200 with its name, or 500 while failing.
async fn backend(name: &'static str) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let mut rsp = Response::new(Full::new(Bytes::from(name)));
                    if flag.load(Ordering::SeqCst) {
                        *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    async move { Ok::<_, Infallible>(rsp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, failing)
}

fn at(id: &str, addr: SocketAddr, weight: u32) -> Registration {
    Instance::builder("orders", id)
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .weight(weight)
        .build()
        .unwrap()
        .into()
}

/// The request type: `HttpEndpoints::new()`'s default body.
type Req = Request<Full<Bytes>>;

/// Breaker first, then weights.
type BreakerThenWeights = Weighted<Layered<HttpEndpoints, HttpEndpointBreakerLayer>>;
/// Weights first, then the breaker.
type WeightsThenBreaker = Layered<Weighted<HttpEndpoints>, HttpEndpointBreakerLayer>;

/// The two endpoint types the factories make.
type Endpoint1 = InstanceEndpoint<HttpEndpointBreaker<HttpEndpoint>>;
type Endpoint2 = HttpEndpointBreaker<InstanceEndpoint<HttpEndpoint>>;

/// Service breaker over the balancer over the discovered endpoints.
type Stack<E> = HttpCircuitBreaker<Balance<Spawned<E>, RoundRobin>>;

/// The stack a service keeps in its state, every type named.
struct OrdersClient<E>
where
    Spawned<E>: tower::discover::Discover,
    Stack<E>: Service<Req>,
{
    http: Buffer<Req, <Stack<E> as Service<Req>>::Future>,
    balancer: BalanceHandle<InstanceId>,
}

fn endpoint_breaker() -> HttpEndpointBreakerLayer {
    EndpointBreakerLayer::builder()
        // Let the service-level breaker trip first in this test.
        .consecutive_failures(50)
        .classifier(HttpClassifier::server_errors())
        .build_endpoint()
        .expect("valid endpoint breaker")
}

fn service_breaker() -> CircuitBreakerLayer<ServerErrorsClassifier> {
    CircuitBreakerLayer::builder()
        .name("orders")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .classifier(HttpClassifier::server_errors())
        .build()
        .expect("valid breaker")
}

/// The client and the scenario, once per factory type (the code a user writes once for
/// their own factory).
macro_rules! scenario {
    ($test:ident, $factory:ty, $endpoint:ty, $make:expr) => {
        #[tokio::test]
        async fn $test() {
            let registry = AnyRegistry::connect("memory:")
                .await
                .expect("memory registry");
            let factory: $factory = $make;
            let discover: Spawned<$endpoint> = Builder::new()
                .build(registry.clone(), "orders", factory)
                .expect("valid discovery")
                .spawn();
            let balance = BalanceLayer::builder(RoundRobin::new())
                .no_endpoints_timeout(Duration::from_millis(200))
                .build()
                .expect("valid balancer")
                .build(discover);
            let orders: OrdersClient<$endpoint> = OrdersClient {
                balancer: balance.handle(),
                http: Buffer::new(service_breaker().layer(balance), 64),
            };
            let get = || {
                let http = orders.http.clone();
                async move {
                    let req = Request::get("/orders/42").body(Full::default()).unwrap();
                    http.oneshot(req).await.map(|rsp| rsp.status())
                }
            };
            run(registry, &orders.balancer, get).await;
        }
    };
}

scenario!(
    breaker_then_weights,
    BreakerThenWeights,
    Endpoint1,
    HttpEndpoints::new().layered(endpoint_breaker()).weighted()
);

scenario!(
    weights_then_breaker,
    WeightsThenBreaker,
    Endpoint2,
    HttpEndpoints::new().weighted().layered(endpoint_breaker())
);

async fn run<G, F>(registry: AnyRegistry, balancer: &BalanceHandle<InstanceId>, get: G)
where
    G: Fn() -> F,
    F: std::future::Future<Output = Result<StatusCode, BoxError>>,
{
    // Started before any instance exists: the buffer answers "no endpoint", typed.
    let err = get().await.expect_err("nothing registered yet");
    let none = NoEndpoints::find(&*err).expect("NoEndpoints through the buffer");
    assert_eq!(none.discovered(), 0);
    assert!(Open::find(&*err).is_none(), "{err}");

    // Two weighted backends register: served by the same buffer, weights honoured.
    let (a, a_failing) = backend("a").await;
    let (b, b_failing) = backend("b").await;
    registry.register(at("orders-a", a, 3)).await.unwrap();
    registry.register(at("orders-b", b, 1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while balancer.ready_len() < 2 {
            let _ = get().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both backends discovered and ready");
    assert_eq!(get().await.unwrap(), StatusCode::OK);
    let weights: Vec<u32> = {
        let mut e = balancer.endpoints();
        e.sort_by(|x, y| x.key.as_str().cmp(y.key.as_str()));
        e.iter().map(|s| s.weight).collect()
    };
    assert_eq!(weights, [3, 1], "the registry's weights reach the balancer");

    // Both fail: three 500s open the service-level breaker, and the next call is refused
    // with `Open`, found through the buffer.
    a_failing.store(true, Ordering::SeqCst);
    b_failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get().await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let err = get().await.expect_err("the breaker is open");
    let open = Open::find(&*err).expect("Open through the buffer");
    assert_eq!(open.name(), "orders");
    assert!(NoEndpoints::find(&*err).is_none(), "{err}");
}
