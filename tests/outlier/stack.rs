//! The detector where it lives: inside tower-mesh's balancer, behind tower's `Buffer`, over
//! plain services and over registry-discovered HTTP endpoints talking to real hyper servers on
//! loopback, with ejections published to the registry.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::time::sleep;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_mesh::balance::{BalanceLayer, RoundRobin, WithWeight};
use tower_mesh::breaker::HttpClassifier;
use tower_mesh::discover::{HttpEndpoints, MakeEndpoint, RegistryDiscover};
use tower_mesh::health::outlier::{HttpGateway, OutlierLayer, PublishToRegistry, Reason, Rule};
use tower_mesh::instance::{Health, Instance, InstanceId, ServiceName};
use tower_mesh::registry::{MemoryRegistry, Registration, Registry};

use super::{settle, Backend, TICK};

/// An endpoint found by the success-rate rule at the interval, while the balancer holds it as
/// ready, gets no further request; it returns when its ejection ends, with no request sent
/// meanwhile.
#[tokio::test(start_paused = true)]
async fn balance_behind_buffer_routes_around_an_ejected_endpoint_and_back() {
    let interval = Duration::from_secs(10);
    let outlier = OutlierLayer::builder()
        .classifier(HttpClassifier::server_errors())
        .interval(interval)
        .without_consecutive_5xx()
        .success_rate_request_volume(50)
        .base_ejection_time(Duration::from_secs(30))
        .max_ejection_percent(20)
        .build()
        .unwrap();
    let handle = outlier.handle();
    let backends: Vec<Backend> = (0..5).map(|_| Backend::new()).collect();
    let endpoints: Vec<_> = backends
        .iter()
        .map(|b| WithWeight::new(b.clone(), 1))
        .collect();
    let balance = ServiceBuilder::new()
        .layer(BalanceLayer::new(RoundRobin::new()))
        .layer(outlier)
        .service(ServiceList::new(endpoints));
    let client = Buffer::new(balance, 64);
    settle().await;

    backends[4].answer(500);
    let send = |n: usize| {
        let client = client.clone();
        async move {
            for _ in 0..n {
                client
                    .clone()
                    .oneshot(())
                    .await
                    .expect("the balancer answers");
            }
        }
    };
    send(500).await;
    let served: Vec<usize> = backends.iter().map(Backend::served).collect();
    assert_eq!(served, [100; 5]);

    sleep(interval + TICK).await;
    let ejection = handle.ejection(&4).expect("found by the success rate");
    assert!(
        matches!(ejection.reason, Reason::SuccessRate { .. }),
        "{ejection:?}"
    );
    assert_eq!(handle.counters().enforced.get(Rule::SuccessRate), 1);
    send(100).await;
    assert_eq!(backends[4].served(), 100, "no request after the ejection");
    assert_eq!(backends.iter().map(Backend::served).sum::<usize>(), 600);

    backends[4].answer(200);
    sleep(Duration::from_secs(30)).await;
    assert!(!handle.is_ejected(&4), "returned without a request");
    assert_eq!(backends.iter().map(Backend::served).sum::<usize>(), 600);
    send(50).await;
    assert_eq!(backends[4].served(), 110, "back in the rotation");
}

/// A backend on loopback answering with its name, or 503 while failing.
struct Server {
    addr: SocketAddr,
    failing: AtomicBool,
    served: AtomicUsize,
}

async fn server(name: &'static str) -> Arc<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Arc::new(Server {
        addr: listener.local_addr().unwrap(),
        failing: AtomicBool::new(false),
        served: AtomicUsize::new(0),
    });
    let shared = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    s.served.fetch_add(1, Ordering::SeqCst);
                    let mut rsp = Response::new(Full::new(Bytes::from(name)));
                    if s.failing.load(Ordering::SeqCst) {
                        *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    }
                    async move { Ok::<_, Infallible>(rsp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    server
}

fn orders() -> ServiceName {
    "orders".parse().unwrap()
}

fn at(id: &str, addr: SocketAddr) -> Registration {
    Instance::builder("orders", id)
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .build()
        .unwrap()
        .into()
}

/// One request; the body of a 2xx answer, or the status as an error.
async fn get<S, B>(client: &S) -> Result<String, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = BoxError> + Clone,
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

async fn health_of(registry: &MemoryRegistry, id: &InstanceId) -> Health {
    let snapshot = registry.snapshot(&orders()).await.unwrap();
    let instance = snapshot.instances().iter().find(|i| i.id() == id).unwrap();
    instance.health()
}

/// Registry → discovery → HTTP endpoints under outlier detection → round robin → `Buffer`,
/// against three hyper servers; one answers 503. Three 503s in a row eject it; the ejection
/// is published to the registry as `Warning`, which keeps it out of rotation after its
/// ejection ends (a `Warning` endpoint counts as unhealthy), until its health is set back to
/// `Passing`, as a successful active check does.
#[tokio::test(start_paused = true)]
async fn http_server_answering_503_is_ejected_published_and_readmitted() {
    let registry = MemoryRegistry::new();
    let (a, b, c) = (server("a").await, server("b").await, server("c").await);
    registry.register(at("a", a.addr)).await.unwrap();
    registry.register(at("b", b.addr)).await.unwrap();
    let rev = registry.register(at("c", c.addr)).await.unwrap();
    let c_id: InstanceId = "c".parse().unwrap();

    let outlier = OutlierLayer::builder()
        .name("orders")
        .classifier(HttpClassifier::server_errors())
        .gateway(HttpGateway)
        .without_consecutive_5xx()
        .consecutive_gateway_failure(3)
        .enforcing_consecutive_gateway_failure(100)
        .base_ejection_time(Duration::from_secs(30))
        .max_ejection_percent(34)
        .on_ejection(PublishToRegistry::new(registry.clone(), orders()))
        .build::<InstanceId>()
        .unwrap();
    let handle = outlier.handle();
    let endpoints = outlier
        .endpoints(HttpEndpoints::with_body::<Empty<Bytes>>())
        .weighted();
    let discover = RegistryDiscover::new(registry.clone(), "orders", endpoints).spawn();
    let applied = discover.handle();
    applied.applied(rev).await;
    let balance = BalanceLayer::builder(RoundRobin::new())
        .build()
        .unwrap()
        .build(discover);
    let client = Buffer::new(balance, 64);

    c.failing.store(true, Ordering::SeqCst);
    let mut unavailable = 0;
    for _ in 0..30 {
        match get(&client).await {
            Ok(body) => assert!(body == "a" || body == "b", "{body}"),
            Err(e) => {
                assert_eq!(e.to_string(), "status 503 Service Unavailable");
                unavailable += 1;
            }
        }
    }
    assert_eq!((unavailable, c.served.load(Ordering::SeqCst)), (3, 3));
    let ejection = handle.ejection(&c_id).expect("ejected");
    assert_eq!(
        ejection.reason,
        Reason::ConsecutiveGatewayFailure { failures: 3 }
    );

    // Published: the registry says `Warning` (written by the publisher's task).
    let mut tries = 0;
    while health_of(&registry, &c_id).await != Health::Warning {
        tries += 1;
        assert!(tries < 100, "never published");
        sleep(Duration::from_millis(10)).await;
    }

    // The service's health report shows the ejection beside the published `Warning`.
    let report = tower_mesh::health::service_health(&registry, &orders(), handle.clone())
        .await
        .unwrap();
    let c_report = report.instances().iter().find(|i| *i.id() == c_id).unwrap();
    assert_eq!(c_report.health(), Health::Warning);
    let why = c_report.ejection().expect("reported as ejected");
    assert!(why.contains("consecutive gateway failures"), "{why}");
    assert_eq!(
        report
            .instances()
            .iter()
            .filter(|i| i.ejection().is_some())
            .count(),
        1
    );

    // The backend heals; its ejection ends without traffic, but the fleet-wide `Warning`
    // keeps it out while healthy endpoints are enough.
    c.failing.store(false, Ordering::SeqCst);
    sleep(Duration::from_secs(31)).await;
    assert!(!handle.is_ejected(&c_id));
    for _ in 0..20 {
        let body = get(&client).await.unwrap();
        assert!(body == "a" || body == "b", "{body}");
    }
    assert_eq!(c.served.load(Ordering::SeqCst), 3);

    // A passing active check sets it back to `Passing`: it takes traffic again.
    let rev = registry
        .set_health(&orders(), &c_id, Health::Passing)
        .await
        .unwrap();
    applied.applied(rev).await;
    let mut from_c = 0;
    for _ in 0..30 {
        if get(&client).await.unwrap() == "c" {
            from_c += 1;
        }
    }
    assert_eq!(from_c, 10, "round robin over three again");
}

/// An ejection is not published over a `Critical` instance's health.
#[tokio::test(start_paused = true)]
async fn publishing_leaves_critical_instances_alone() {
    let registry = MemoryRegistry::new();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    registry.register(at("x", addr)).await.unwrap();
    registry.register(at("y", addr)).await.unwrap();
    let (x, y): (InstanceId, InstanceId) = ("x".parse().unwrap(), "y".parse().unwrap());
    registry
        .set_health(&orders(), &x, Health::Critical)
        .await
        .unwrap();

    let outlier = OutlierLayer::builder()
        .consecutive_5xx(1)
        .max_ejection_percent(100)
        .on_ejection(PublishToRegistry::new(registry.clone(), orders()))
        .build::<InstanceId>()
        .unwrap();
    let backend = Backend::new();
    backend.answer(0);
    let mut ex = outlier.layer_keyed(backend.clone(), x.clone());
    let mut wy = outlier.layer_keyed(backend, y.clone());
    super::calls(&mut ex, 1).await;
    super::calls(&mut wy, 1).await;
    assert_eq!(outlier.handle().ejected().len(), 2);
    let mut tries = 0;
    while health_of(&registry, &y).await != Health::Warning {
        tries += 1;
        assert!(tries < 100, "never published");
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(health_of(&registry, &x).await, Health::Critical);
}

/// tower's own p2c balancer over pending-requests load: the outlier endpoint carries the load
/// of what it wraps, and an ejected endpoint is skipped as not ready.
#[tokio::test(start_paused = true)]
async fn tower_p2c_over_pending_requests_routes_around_an_ejected_endpoint() {
    use tower::load::{CompleteOnResponse, PendingRequests};

    let outlier = OutlierLayer::builder()
        .consecutive_5xx(3)
        .max_ejection_percent(50)
        .build::<usize>()
        .unwrap();
    let backends: Vec<Backend> = (0..4).map(|_| Backend::new()).collect();
    let endpoints: Vec<_> = backends
        .iter()
        .map(|b| PendingRequests::new(b.clone(), CompleteOnResponse::default()))
        .collect();
    let balance = tower::balance::p2c::Balance::new(outlier.discover(ServiceList::new(endpoints)));
    let client = Buffer::new(balance, 16);
    backends[0].answer(0);
    for _ in 0..200 {
        let _ = client.clone().oneshot(()).await;
    }
    assert_eq!(
        backends[0].served(),
        3,
        "ejected on its third failure in a row"
    );
    assert!(outlier.handle().is_ejected(&0));
    assert_eq!(backends.iter().map(Backend::served).sum::<usize>(), 200);
}
