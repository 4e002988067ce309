//! The parts composed the way users compose them: a registry-fed discovery, HTTP endpoints
//! each behind an endpoint breaker, tower-mesh's balancer, and tower's `Buffer` in front,
//! against real hyper servers on loopback.
//!
//! Each test starts the client before the first instance registers, leaves it idle for
//! longer than every bound, churns instances, or opens every breaker: the buffer must never
//! die, and the client must serve as soon as a backend can. The clock is tokio's paused
//! clock (a blocked socket read lets it jump ahead, which only ever makes the bounds fire
//! sooner); no assertion reads the wall clock.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tower::buffer::Buffer;
use tower::{BoxError, Service, ServiceExt};
use tower_mesh::balance::error::NoEndpoints;
use tower_mesh::balance::{BalanceLayer, RoundRobin};
use tower_mesh::breaker::{EndpointBreakerLayer, HttpClassifier};
use tower_mesh::discover::{HttpEndpoints, MakeEndpoint, RegistryDiscover};
use tower_mesh::instance::{Instance, InstanceId, ServiceName};
use tower_mesh::registry::{MemoryRegistry, Registration, Registry};

/// A backend on loopback answering with its name (or 500 while failing), counting requests.
struct Backend {
    addr: SocketAddr,
    failing: AtomicBool,
    served: AtomicUsize,
}

async fn backend(name: &'static str) -> Arc<Backend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = Arc::new(Backend {
        addr: listener.local_addr().unwrap(),
        failing: AtomicBool::new(false),
        served: AtomicUsize::new(0),
    });
    let shared = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let b = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    b.served.fetch_add(1, Ordering::SeqCst);
                    let mut rsp = Response::new(Full::new(Bytes::from(name)));
                    if b.failing.load(Ordering::SeqCst) {
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
    b
}

fn at(id: &str, addr: SocketAddr) -> Registration {
    Instance::builder("orders", id)
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .build()
        .unwrap()
        .into()
}

fn orders() -> ServiceName {
    "orders".parse().unwrap()
}

/// The whole client: registry → discovery → HTTP endpoint behind an endpoint breaker →
/// round robin → `Buffer`.
type Req = Request<Empty<Bytes>>;

fn client(
    registry: MemoryRegistry,
    bound: Duration,
) -> (
    Buffer<Req, <TheBalance as Service<Req>>::Future>,
    tower_mesh::discover::DiscoverHandle,
) {
    let breaker = EndpointBreakerLayer::builder()
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(5))
        .classifier(HttpClassifier::server_errors())
        .build_endpoint()
        .unwrap();
    let discover = RegistryDiscover::new(
        registry,
        "orders",
        HttpEndpoints::with_body::<Empty<Bytes>>()
            .layered(breaker)
            .weighted(),
    )
    .spawn();
    let handle = discover.handle();
    let balance: TheBalance = BalanceLayer::builder(RoundRobin::new())
        .no_endpoints_timeout(bound)
        .build()
        .expect("valid balancer settings")
        .build(discover);
    (Buffer::new(balance, 64), handle)
}

type TheBalance = tower_mesh::balance::Balance<
    tower_mesh::discover::Spawned<
        tower_mesh::discover::InstanceEndpoint<
            tower_mesh::breaker::EndpointBreaker<
                tower_mesh::discover::HttpEndpoint<Empty<Bytes>>,
                HttpClassifier<tower_http::classify::ServerErrorsAsFailures>,
            >,
        >,
    >,
    RoundRobin,
>;

/// One request; the body of a 2xx answer, or the error (an HTTP error status as a string).
async fn get<S, B>(client: &S) -> Result<String, BoxError>
where
    S: Service<Req, Response = Response<B>, Error = BoxError> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let req = Request::get("/orders/42").body(Empty::new()).unwrap();
    let rsp = client.clone().oneshot(req).await?;
    let status = rsp.status();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes();
    if status.is_success() {
        Ok(String::from_utf8(body.to_vec()).unwrap())
    } else {
        Err(format!("status {status}").into())
    }
}

/// Started before any instance registers and idle well past the no-endpoints bound: the
/// requests made meanwhile fail fast with `NoEndpoints` (found through the buffer's
/// wrapping), and the first registration is served by the same client.
#[tokio::test(start_paused = true)]
async fn client_started_before_the_first_instance_serves_when_it_registers() {
    let registry = MemoryRegistry::new();
    let (client, handle) = client(registry.clone(), Duration::from_secs(1));
    let err = get(&client).await.expect_err("nothing registered");
    assert!(err.is::<NoEndpoints>(), "{err}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let err = get(&client).await.expect_err("still nothing");
    assert!(err.is::<NoEndpoints>(), "{err}");

    let a = backend("a").await;
    let rev = registry.register(at("a", a.addr)).await.unwrap();
    handle.applied(rev).await;
    for _ in 0..10 {
        assert_eq!(get(&client).await.unwrap(), "a");
    }
    assert_eq!(a.served.load(Ordering::SeqCst), 10);
}

/// Every endpoint's breaker opens: requests fail fast, the buffer survives, and when the
/// open duration ends the endpoints are ready again with no request having flowed.
#[tokio::test(start_paused = true)]
async fn all_breakers_open_then_back_without_traffic() {
    let registry = MemoryRegistry::new();
    let a = backend("a").await;
    let b = backend("b").await;
    registry.register(at("a", a.addr)).await.unwrap();
    let rev = registry.register(at("b", b.addr)).await.unwrap();
    let (client, handle) = client(registry.clone(), Duration::from_millis(100));
    handle.applied(rev).await;
    assert!(get(&client).await.is_ok());

    a.failing.store(true, Ordering::SeqCst);
    b.failing.store(true, Ordering::SeqCst);
    // Three failures each open both breakers; then no endpoint is ready.
    let mut statuses = 0;
    let err = loop {
        match get(&client).await {
            Err(e) if e.is::<NoEndpoints>() => break e,
            Err(_) => statuses += 1,
            Ok(body) => panic!("a failing backend answered {body}"),
        }
    };
    assert!(err.is::<NoEndpoints>());
    assert!((6..=8).contains(&statuses), "{statuses} failed calls");
    let served = a.served.load(Ordering::SeqCst) + b.served.load(Ordering::SeqCst);

    a.failing.store(false, Ordering::SeqCst);
    b.failing.store(false, Ordering::SeqCst);
    // Idle past the open duration: the breakers half-open and wake the balancer.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        a.served.load(Ordering::SeqCst) + b.served.load(Ordering::SeqCst),
        served,
        "nothing was sent while idle"
    );
    let body = get(&client).await.expect("served again by the same buffer");
    assert!(body == "a" || body == "b");
}

/// Thousands of instances (pod-style unique ids) registered and removed through one
/// client: only the live ones are in its balancer, and every request goes to one of them.
#[tokio::test(start_paused = true)]
async fn churn_through_thousands_of_instances() {
    let registry = MemoryRegistry::new();
    let a = backend("a").await;
    let b = backend("b").await;
    let (client, handle) = client(registry.clone(), Duration::from_secs(1));
    let mut rev = registry.register(at("stable", a.addr)).await.unwrap();
    for pod in 0..2_000 {
        let id = format!("pod-{pod}");
        registry.register(at(&id, b.addr)).await.unwrap();
        if pod >= 3 {
            let old: InstanceId = format!("pod-{}", pod - 3).parse().unwrap();
            rev = registry.deregister(&orders(), &old).await.unwrap();
        }
        if pod % 250 == 0 {
            handle.applied(rev).await;
            let body = get(&client).await.unwrap();
            assert!(body == "a" || body == "b", "{body}");
        }
    }
    handle.applied(rev).await;
    assert_eq!(handle.endpoints(), 4, "stable and the last three pods");
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..40 {
        *seen.entry(get(&client).await.unwrap()).or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&30), "{seen:?}");
}

/// Health reaches the balancer's panic threshold live: an instance registered `Warning`
/// counts as unhealthy (with two instances and the default 50% threshold, only the
/// passing one takes traffic); when it turns `Passing`, discovery updates the endpoint's
/// health and wakes the balancer, which polls that endpoint again, with no re-insert and
/// no request needed.
#[tokio::test(start_paused = true)]
async fn health_changes_reach_the_panic_threshold_live() {
    use tower_mesh::instance::Health;
    let registry = MemoryRegistry::new();
    let a = backend("a").await;
    let b = backend("b").await;
    registry.register(at("a", a.addr)).await.unwrap();
    let warning: Registration = Instance::builder("orders", "b")
        .host(b.addr.ip().to_string())
        .port(u32::from(b.addr.port()))
        .health(Health::Warning)
        .build()
        .unwrap()
        .into();
    let rev = registry.register(warning).await.unwrap();
    let (client, handle) = client(registry.clone(), Duration::from_secs(1));
    handle.applied(rev).await;
    for _ in 0..6 {
        assert_eq!(get(&client).await.unwrap(), "a");
    }
    let rev = registry
        .set_health(&orders(), &"b".parse().unwrap(), Health::Passing)
        .await
        .unwrap();
    handle.applied(rev).await;
    tokio::task::yield_now().await;
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..6 {
        *seen.entry(get(&client).await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        (seen.get("a"), seen.get("b")),
        (Some(&3), Some(&3)),
        "{seen:?}"
    );
    assert_eq!(b.served.load(Ordering::SeqCst), 3);
}
