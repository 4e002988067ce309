//! The endpoint breaker composed with discovery's weight wrapper in either order:
//! `.weighted().layered(breaker)` and `.layered(breaker).weighted()` both feed tower-mesh's
//! `Balance` (which reads each endpoint's `Weight`) and tower's p2c (which reads its `Load`),
//! against real hyper servers on loopback. The stack's types are named through tower-mesh's
//! aliases alone.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::load::pending_requests::Count;
use tower::load::{CompleteOnResponse, Load, PendingRequests};
use tower::{BoxError, Service, ServiceExt};
use tower_mesh::balance::{BalanceLayer, Weight};
use tower_mesh::breaker::classify::{HttpClassifier, ServerErrorsBody};
use tower_mesh::breaker::{EndpointBreakerLayer, HttpEndpointBreakerLayer};
use tower_mesh::discover::{HttpEndpoints, MakeEndpoint, RegistryDiscover};
use tower_mesh::instance::Instance;
use tower_mesh::registry::{MemoryRegistry, Registry, Revision};

use super::{start_backend, Backend};

type Req = Request<Empty<Bytes>>;
type Rsp = Response<ServerErrorsBody<Incoming>>;

/// Two failures in a row open an endpoint's breaker, for a minute.
fn breaker() -> HttpEndpointBreakerLayer {
    EndpointBreakerLayer::builder()
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(60))
        .classifier(HttpClassifier::server_errors())
        .build_endpoint()
        .unwrap()
}

fn instance(id: &str, backend: &Backend, weight: u32) -> Instance {
    Instance::builder("orders", id)
        .host(backend.addr.ip().to_string())
        .port(u32::from(backend.addr.port()))
        .weight(weight)
        .build()
        .unwrap()
}

/// A registry holding `heavy` (weight 3) and `light` (weight 1).
async fn registry(heavy: &Backend, light: &Backend) -> (MemoryRegistry, Revision) {
    let registry = MemoryRegistry::new();
    registry
        .register(instance("heavy", heavy, 3).into())
        .await
        .unwrap();
    let rev = registry
        .register(instance("light", light, 1).into())
        .await
        .unwrap();
    (registry, rev)
}

/// One request: its status, or the error.
async fn get<S>(svc: &mut S) -> Result<StatusCode, BoxError>
where
    S: Service<Req, Response = Rsp, Error = BoxError>,
{
    let req = Request::get("/orders/42").body(Empty::new()).unwrap();
    let rsp = svc.ready().await?.call(req).await?;
    let status = rsp.status();
    rsp.into_body().collect().await?;
    Ok(status)
}

fn served(b: &Backend) -> usize {
    b.served.load(Ordering::SeqCst)
}

/// Smooth weighted round robin over `heavy` (3) and `light` (1): the weights reach the
/// balancer through the breaker (3:1 exactly), and when `light` fails the balancer routes
/// around its open breaker.
async fn through_balance<F>(endpoints: F, heavy: &Backend, light: &Backend)
where
    F: MakeEndpoint + Unpin + Send + 'static,
    F::Service: Service<Req, Response = Rsp> + Weight + Send + 'static,
    <F::Service as Service<Req>>::Error: Into<BoxError>,
{
    let (registry, rev) = registry(heavy, light).await;
    let discover = RegistryDiscover::new(registry, "orders", endpoints).spawn();
    discover.handle().applied(rev).await;
    let mut balance = BalanceLayer::new(tower_mesh::balance::Weighted::new()).build(discover);
    let (h, l) = (served(heavy), served(light));
    for _ in 0..40 {
        assert_eq!(get(&mut balance).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        (served(heavy) - h, served(light) - l),
        (30, 10),
        "the weights, read through the breaker"
    );

    routes_around_failing(&mut balance, light).await;
}

/// `light` starts failing: its breaker opens after two failures, and then no request reaches
/// it. (A balancer may have polled `light` ready before its breaker opened, and that
/// readiness admits one more call, which fails uncounted; tower's readiness contract does not
/// let the endpoint breaker refuse a call it said it was ready for.)
async fn routes_around_failing<S>(svc: &mut S, light: &Backend)
where
    S: Service<Req, Response = Rsp, Error = BoxError>,
{
    light.failing.store(true, Ordering::SeqCst);
    let mut failed = 0;
    for _ in 0..200 {
        if get(svc).await.unwrap() != StatusCode::OK {
            failed += 1;
            if failed == 2 {
                break;
            }
        }
    }
    assert_eq!(failed, 2, "light is picked");
    let mut admitted = 0;
    for _ in 0..20 {
        if get(svc).await.unwrap() != StatusCode::OK {
            admitted += 1;
        }
    }
    assert!(admitted <= 1, "{admitted} calls after the breaker opened");
    let l = served(light);
    for _ in 0..20 {
        assert_eq!(get(svc).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        served(light),
        l,
        "nothing reaches light while its breaker is open"
    );
    light.failing.store(false, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn balance_reads_weights_through_the_breaker_in_either_order() {
    // The stack of the first order, kept in a struct by the names of its types.
    let named = client(MemoryRegistry::new());
    drop(named.balance);

    let (heavy, light) = (start_backend().await, start_backend().await);
    let endpoints = HttpEndpoints::with_body::<Empty<Bytes>>;
    // The breaker outside the weight wrapper: `EndpointBreaker` passes `Weight` on.
    through_balance(endpoints().weighted().layered(breaker()), &heavy, &light).await;
    // The breaker inside it: `InstanceEndpoint` carries the weight.
    through_balance(endpoints().layered(breaker()).weighted(), &heavy, &light).await;
}

/// tower's `Rng`, seeded, so that p2c's draws are the same on every run.
struct Seeded(SmallRng);

impl tower::util::rng::Rng for Seeded {
    fn next_u64(&mut self) -> u64 {
        self.0.random()
    }
}

/// tower's p2c over endpoints whose load (pending requests, measured under the breaker)
/// it reads through the breaker and the weight wrapper: requests are served by both
/// backends, and when `light` fails, p2c routes around its open breaker. The load is the
/// measured one: a call in flight counts until its future is dropped.
async fn through_p2c<F>(mut endpoints: F, heavy: &Backend, light: &Backend)
where
    F: MakeEndpoint + Unpin + Send + 'static,
    F::Service: Service<Req, Response = Rsp> + Load<Metric = Count> + Send + 'static,
    <F::Service as Service<Req>>::Error: Into<BoxError>,
{
    let mut endpoint = endpoints.make_endpoint(&instance("heavy", heavy, 3));
    std::future::poll_fn(|cx| endpoint.poll_ready(cx))
        .await
        .map_err(Into::into)
        .unwrap();
    let call = endpoint.call(Request::get("/").body(Empty::new()).unwrap());
    assert!(endpoint.load() > Count::default(), "a call in flight");
    drop(call);
    assert_eq!(endpoint.load(), Count::default());

    let (registry, rev) = registry(heavy, light).await;
    let discover = RegistryDiscover::new(registry, "orders", endpoints).spawn();
    discover.handle().applied(rev).await;
    let mut p2c =
        tower::balance::p2c::Balance::from_rng(discover, Seeded(SmallRng::seed_from_u64(7)));
    let (h, l) = (served(heavy), served(light));
    for _ in 0..40 {
        assert_eq!(get(&mut p2c).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(served(heavy) - h + served(light) - l, 40);
    assert!(served(heavy) > h && served(light) > l, "both are picked");

    routes_around_failing(&mut p2c, light).await;
}

#[tokio::test(start_paused = true)]
async fn tower_p2c_reads_load_through_the_breaker_in_either_order() {
    let (heavy, light) = (start_backend().await, start_backend().await);
    let pending = tower::layer::layer_fn(|endpoint| {
        PendingRequests::new(endpoint, CompleteOnResponse::default())
    });
    let endpoints = || HttpEndpoints::with_body::<Empty<Bytes>>().layered(pending);
    through_p2c(endpoints().weighted().layered(breaker()), &heavy, &light).await;
    through_p2c(endpoints().layered(breaker()).weighted(), &heavy, &light).await;
}

/// The endpoints of `.weighted().layered(breaker)`.
type Endpoint = tower_mesh::breaker::HttpEndpointBreaker<
    tower_mesh::discover::InstanceEndpoint<tower_mesh::discover::HttpEndpoint<Empty<Bytes>>>,
>;

/// That stack behind tower-mesh's balancer, named without tower-http.
struct Client {
    balance: tower_mesh::balance::Balance<
        tower_mesh::discover::Spawned<Endpoint>,
        tower_mesh::balance::Weighted,
    >,
}

fn client(registry: MemoryRegistry) -> Client {
    let endpoints = HttpEndpoints::with_body::<Empty<Bytes>>()
        .weighted()
        .layered(breaker());
    let discover = RegistryDiscover::new(registry, "orders", endpoints).spawn();
    Client {
        balance: BalanceLayer::new(tower_mesh::balance::Weighted::new()).build(discover),
    }
}
