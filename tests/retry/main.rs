//! Retries that go somewhere else, end to end: registry-fed discovery, HTTP endpoints,
//! tower-mesh's balancer with an [`Avoiding`] round robin, tower's `Buffer`, and the retry
//! layer in front, against real hyper servers on loopback.
//!
//! Every server records the ids (`x-id`) of the requests it saw, so a test can tell which
//! attempt of which request went where.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_mesh::balance::{
    Avoid, Avoiding, Balance, BalanceHandle, BalanceLayer, EndpointId, Header, Pick, RingHash,
    RoundRobin,
};
use tower_mesh::discover::{
    HttpEndpoint, HttpEndpoints, InstanceEndpoint, MakeEndpoint, RegistryDiscover, Spawned,
};
use tower_mesh::instance::{Instance, InstanceId};
use tower_mesh::registry::{MemoryRegistry, Registration, Registry};
use tower_mesh::retry::{Builder, RetryLayer};

type Req = Request<Full<Bytes>>;

/// A server on loopback answering 200, or 503 while failing (gRPC: `grpc-status` 0, or
/// 14 `UNAVAILABLE` while failing), recording request ids.
struct Backend {
    addr: SocketAddr,
    failing: bool,
    seen: Mutex<Vec<u64>>,
}

impl Backend {
    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

async fn backend(failing: bool) -> Arc<Backend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = Arc::new(Backend {
        addr: listener.local_addr().unwrap(),
        failing,
        seen: Mutex::new(Vec::new()),
    });
    let shared = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let b = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let id = req.headers()["x-id"].to_str().unwrap().parse().unwrap();
                    b.seen.lock().unwrap().push(id);
                    let grpc = req.headers().get("content-type")
                        == Some(&HeaderValue::from_static("application/grpc"));
                    let rsp = if grpc {
                        // Trailers-only: the status in the headers, no message.
                        let code = if b.failing { "14" } else { "0" };
                        Response::builder().header("grpc-status", code)
                    } else if b.failing {
                        Response::builder().status(StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        Response::builder()
                    };
                    let rsp = rsp.body(Full::new(Bytes::new())).unwrap();
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

/// An address where nothing listens: connections are refused.
async fn refusing() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn at(id: &str, addr: SocketAddr) -> Registration {
    Instance::builder("orders", id)
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .build()
        .unwrap()
        .into()
}

fn id(s: &str) -> EndpointId {
    EndpointId::of(&s.parse::<InstanceId>().unwrap())
}

/// The balancer of the tests: registry → discovery → HTTP endpoints → `Avoiding<P>`.
type Balanced<P> = Balance<Spawned<InstanceEndpoint<HttpEndpoint<Full<Bytes>>>>, Avoiding<P>>;

/// The balancer over the three servers `a`, `b`, `c` at `addrs`, once all three are ready.
async fn balancer<P>(addrs: [SocketAddr; 3], strategy: P) -> Balanced<P>
where
    P: Pick<Req> + Clone + Send + 'static,
{
    let registry = MemoryRegistry::new();
    for (name, addr) in ["a", "b", "c"].into_iter().zip(addrs) {
        registry.register(at(name, addr)).await.unwrap();
    }
    let discover = RegistryDiscover::new(
        registry,
        "orders",
        HttpEndpoints::with_body::<Full<Bytes>>().weighted(),
    )
    .spawn();
    let mut balance = BalanceLayer::builder(Avoiding::new(strategy))
        .no_endpoints_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .build(discover);
    let handle = balance.handle();
    // The first `poll_ready` polls the endpoints; wait until all three are in.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            ServiceExt::<Req>::ready(&mut balance).await.unwrap();
            if handle.ready_len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("three endpoints discovered");
    balance
}

/// The client: the balancer behind `Buffer`, then retries.
async fn client<P>(
    addrs: [SocketAddr; 3],
    strategy: P,
    retry: Builder,
) -> (
    impl Service<Req, Response = Response<Incoming>, Error = BoxError> + Clone,
    BalanceHandle<InstanceId>,
)
where
    P: Pick<Req> + Clone + Send + 'static,
{
    let balance = balancer(addrs, strategy).await;
    let handle = balance.handle();
    let svc = retry.build().unwrap().layer(Buffer::new(balance, 64));
    (svc, handle)
}

/// The same client without `Buffer`: the balancer is cloneable itself.
async fn unbuffered_client<P>(
    addrs: [SocketAddr; 3],
    strategy: P,
    retry: Builder,
) -> impl Service<Req, Response = Response<Incoming>, Error = BoxError> + Clone
where
    P: Pick<Req> + Clone + Send + 'static,
{
    retry
        .build()
        .unwrap()
        .layer(balancer(addrs, strategy).await)
}

/// Two servers of three failing, no `Buffer`: a request is retried twice if it must, each
/// attempt on a server no earlier attempt of it reached, and served by the good one.
#[tokio::test]
async fn two_retries_go_to_two_other_servers() {
    let (good, bad1, bad2) = (
        backend(false).await,
        backend(true).await,
        backend(true).await,
    );
    let svc = unbuffered_client(
        [bad1.addr, bad2.addr, good.addr],
        hasher(),
        RetryLayer::builder().max_retries(2),
    )
    .await;
    const N: u64 = 30;
    gets_answer(&svc, N, StatusCode::OK).await;
    // Each request reached each failing server at most once and the good one once.
    assert!(counts(&bad1.seen(), N).iter().all(|&c| c <= 1));
    assert!(counts(&bad2.seen(), N).iter().all(|&c| c <= 1));
    assert!(counts(&good.seen(), N).iter().all(|&c| c == 1));
    // The hasher sends about two thirds of the first attempts to a failing server, some
    // of whose retries land on the other failing one before the good one.
    let twice = (0..N)
        .filter(|n| bad1.seen().contains(n) && bad2.seen().contains(n))
        .count();
    assert!(twice > 0, "no request needed two retries");
    // With one retry allowed, a request whose two attempts both failed fails.
    let svc = unbuffered_client(
        [bad1.addr, bad2.addr, good.addr],
        hasher(),
        RetryLayer::builder().max_retries(1),
    )
    .await;
    let mut failed = 0;
    for n in 100..160 {
        if send(&svc, request(Method::GET, n)).await.unwrap() != StatusCode::OK {
            failed += 1;
        }
    }
    assert!(failed > 0, "some requests hit both failing servers");
}

fn request(method: Method, n: u64) -> Req {
    Request::builder()
        .method(method)
        .uri("/orders/42")
        .header("x-id", n.to_string())
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap()
}

async fn send<S>(svc: &S, req: Req) -> Result<StatusCode, BoxError>
where
    S: Service<Req, Response = Response<Incoming>, Error = BoxError> + Clone,
{
    Ok(svc.clone().oneshot(req).await?.status())
}

/// Sends `n` GETs (ids `0..n`) one after the other; each is answered with `status`.
async fn gets_answer<S>(svc: &S, n: u64, status: StatusCode)
where
    S: Service<Req, Response = Response<Incoming>, Error = BoxError> + Clone,
{
    for id in 0..n {
        assert_eq!(send(svc, request(Method::GET, id)).await.unwrap(), status);
    }
}

/// How many times each id appears in `seen`.
fn counts(seen: &[u64], n: u64) -> Vec<usize> {
    (0..n)
        .map(|i| seen.iter().filter(|&&s| s == i).count())
        .collect()
}

/// Round robin would move on by itself; a hasher keyed on the request id sends every
/// attempt of a request to the same server unless the balancer honours the avoid set.
fn hasher() -> RingHash<Header> {
    RingHash::new(Header::new(http::HeaderName::from_static("x-id")))
}

#[tokio::test]
async fn a_retry_never_returns_to_the_server_that_failed_it() {
    failing_server(RoundRobin::new()).await;
    failing_server(hasher()).await;
}

async fn failing_server<P: Pick<Req> + Clone + Send + 'static>(strategy: P) {
    let (good1, good2, bad) = (
        backend(false).await,
        backend(false).await,
        backend(true).await,
    );
    let (svc, _) = client(
        [bad.addr, good1.addr, good2.addr],
        strategy,
        RetryLayer::builder(),
    )
    .await;
    const N: u64 = 60;
    for n in 0..N {
        let method =
            [Method::GET, Method::PUT, Method::DELETE, Method::HEAD][n as usize % 4].clone();
        assert_eq!(
            send(&svc, request(method, n)).await.unwrap(),
            StatusCode::OK
        );
    }
    let bad_seen = bad.seen();
    assert!(
        bad_seen.len() >= (N / 6) as usize,
        "the failing server saw {bad_seen:?}"
    );
    // The failing server saw each request at most once: its retry went elsewhere.
    assert!(counts(&bad_seen, N).iter().all(|&c| c <= 1), "{bad_seen:?}");
    // Every request was served exactly once by a good server.
    let mut good = good1.seen();
    good.extend(good2.seen());
    assert!(counts(&good, N).iter().all(|&c| c == 1), "{good:?}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_server() {
    refused(RoundRobin::new()).await;
    refused(hasher()).await;
}

async fn refused<P: Pick<Req> + Clone + Send + 'static>(strategy: P) {
    let (good1, good2) = (backend(false).await, backend(false).await);
    let down = refusing().await;
    let (svc, _) = client(
        [down, good1.addr, good2.addr],
        strategy,
        RetryLayer::builder(),
    )
    .await;
    const N: u64 = 30;
    gets_answer(&svc, N, StatusCode::OK).await;
    let mut good = good1.seen();
    good.extend(good2.seen());
    assert!(counts(&good, N).iter().all(|&c| c == 1), "{good:?}");
}

#[tokio::test]
async fn the_budget_caps_retries_under_a_total_outage() {
    let bad = [
        backend(true).await,
        backend(true).await,
        backend(true).await,
    ];
    let ratio = 0.1;
    let retry = RetryLayer::builder()
        .ttl(Duration::from_secs(60))
        .min_per_sec(0)
        .retry_ratio(ratio)
        .max_retries(2);
    let (svc, _) = client(
        [bad[0].addr, bad[1].addr, bad[2].addr],
        RoundRobin::new(),
        retry,
    )
    .await;
    const N: u64 = 100;
    gets_answer(&svc, N, StatusCode::SERVICE_UNAVAILABLE).await;
    let attempts: usize = bad.iter().map(|b| b.seen().len()).sum();
    let retries = attempts - N as usize;
    // Without the budget: 2 retries per request (200). With it: one retry per
    // `1 / ratio` requests deposited (tower's `TpsBudget` arithmetic), no reserve.
    let budget = N as usize / (1.0 / ratio) as usize;
    assert!(retries > 0, "no retry at all");
    assert!(retries <= budget, "{retries} retries, budget {budget}");
    // No request went back to a server that had failed it.
    for b in &bad {
        assert!(counts(&b.seen(), N).iter().all(|&c| c <= 1));
    }
}

#[tokio::test]
async fn post_is_not_retried() {
    let (good1, good2, bad) = (
        backend(false).await,
        backend(false).await,
        backend(true).await,
    );
    let (svc, _) = client(
        [bad.addr, good1.addr, good2.addr],
        RoundRobin::new(),
        RetryLayer::builder(),
    )
    .await;
    const N: u64 = 30;
    let mut unavailable = 0;
    for n in 0..N {
        if send(&svc, request(Method::POST, n)).await.unwrap() == StatusCode::SERVICE_UNAVAILABLE {
            unavailable += 1;
        }
    }
    let attempts = bad.seen().len() + good1.seen().len() + good2.seen().len();
    assert_eq!(attempts, N as usize, "a POST was sent twice");
    assert_eq!(unavailable, bad.seen().len());
    assert!(unavailable > 0);
}

#[tokio::test]
async fn grpc_unavailable_without_a_response_is_retried_elsewhere() {
    let (good1, good2, bad) = (
        backend(false).await,
        backend(false).await,
        backend(true).await,
    );
    let (svc, _) = client(
        [bad.addr, good1.addr, good2.addr],
        hasher(),
        RetryLayer::builder(),
    )
    .await;
    const N: u64 = 30;
    for n in 0..N {
        let mut req = request(Method::POST, n);
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        let rsp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(rsp.headers()["grpc-status"], "0");
    }
    let bad_seen = bad.seen();
    assert!(!bad_seen.is_empty());
    assert!(counts(&bad_seen, N).iter().all(|&c| c <= 1), "{bad_seen:?}");
    let mut good = good1.seen();
    good.extend(good2.seen());
    assert!(counts(&good, N).iter().all(|&c| c == 1), "{good:?}");
}

#[tokio::test]
async fn the_balancer_honours_an_avoid_set_and_serves_when_all_are_avoided() {
    let backends = [
        backend(false).await,
        backend(false).await,
        backend(false).await,
    ];
    let (svc, _) = client(
        [backends[0].addr, backends[1].addr, backends[2].addr],
        RoundRobin::new(),
        RetryLayer::builder(),
    )
    .await;
    // Two avoided: every request goes to the third.
    for n in 0..9 {
        let mut avoid = Avoid::new();
        avoid.insert(id("a"));
        avoid.insert(id("c"));
        let mut req = request(Method::GET, n);
        req.extensions_mut().insert(avoid.clone());
        assert_eq!(send(&svc, req).await.unwrap(), StatusCode::OK);
        assert_eq!(avoid.served(), Some(id("b")));
    }
    assert_eq!(backends[1].seen().len(), 9);
    // All avoided: still served, by the balancer's own pick.
    for n in 9..15 {
        let mut avoid = Avoid::new();
        for k in ["a", "b", "c"] {
            avoid.insert(id(k));
        }
        let mut req = request(Method::GET, n);
        req.extensions_mut().insert(avoid.clone());
        assert_eq!(send(&svc, req).await.unwrap(), StatusCode::OK);
        assert!(avoid.served().is_some());
    }
    let total: usize = backends.iter().map(|b| b.seen().len()).sum();
    assert_eq!(total, 15);
}

#[test]
fn bad_settings_name_the_field() {
    let e = RetryLayer::builder()
        .retry_ratio(1500.0)
        .build()
        .unwrap_err();
    assert_eq!(e.setting(), "retry_ratio");
    assert_eq!(
        e.to_string(),
        "invalid retry setting retry_ratio: 1500.0 (must be 0.0 to 1000.0)"
    );
    let e = RetryLayer::builder()
        .ttl(Duration::from_millis(10))
        .build()
        .unwrap_err();
    assert_eq!(e.setting(), "ttl");
    let e = RetryLayer::builder().max_retries(0).build().unwrap_err();
    assert_eq!(e.setting(), "max_retries");
    let e = RetryLayer::builder()
        .statuses([StatusCode::OK])
        .build()
        .unwrap_err();
    assert_eq!((e.setting(), e.value()), ("statuses", "200"));
}

/// A retryable request in flight holds the layer's shared part, whose service template (a
/// clone of the balancer) retries go through; dropping the request (cancellation) releases
/// it, and with the service gone too the balancer closes and its worker ends.
#[tokio::test(start_paused = true)]
async fn a_dropped_request_releases_its_clone_of_the_balancer() {
    use std::future::Future;
    use tower::discover::ServiceList;
    use tower_mesh::balance::WithWeight;

    let hang = tower::service_fn(|_req: Request<String>| {
        std::future::pending::<Result<Response<String>, Infallible>>()
    });
    let balance = BalanceLayer::builder(Avoiding::new(RoundRobin::new()))
        .build()
        .unwrap()
        .build(ServiceList::new(vec![WithWeight::new(hang, 1)]));
    let handle = balance.handle();
    let mut svc = RetryLayer::builder().build().unwrap().layer(balance);
    let mut fut = Box::pin(
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(String::from("x"))),
    );
    let waker = futures_util::task::noop_waker();
    assert!(fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker))
        .is_pending());
    drop(svc);
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert!(
        !handle.is_closed(),
        "the request in flight keeps the balancer"
    );
    drop(fut);
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert!(handle.is_closed(), "released when the request is dropped");
}
