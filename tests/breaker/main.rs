//! The endpoint breaker inside a balancer, against real hyper servers on loopback, and the
//! service-level breaker classifying gRPC statuses sent in HTTP/2 trailers.
//!
//! Five backends; one starts answering 500. Its endpoint breaker opens after the threshold,
//! the balancer stops sending it traffic, and once the backend heals it is readmitted
//! through exactly K probes. Everything is event-driven: no wall-clock assertions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_mesh::breaker::{
    CircuitBreakerLayer, EndpointBreakerLayer, Handle, HttpClassifier, State, Transition,
};

#[cfg(all(feature = "discover", feature = "balance"))]
mod compose;

const BACKENDS: usize = 5;
const BAD: usize = 2;
const THRESHOLD: u32 = 3;
const K: u32 = 2;
const CONCURRENCY: usize = 8;

struct Backend {
    addr: SocketAddr,
    failing: AtomicBool,
    served: AtomicUsize,
    /// Calls the client made to this endpoint, by the breaker state at the time of the call.
    calls: Mutex<HashMap<State, usize>>,
    breaker: OnceLock<Handle>,
}

async fn start_backend() -> Arc<Backend> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = Arc::new(Backend {
        addr: listener.local_addr().unwrap(),
        failing: AtomicBool::new(false),
        served: AtomicUsize::new(0),
        calls: Mutex::new(HashMap::new()),
        breaker: OnceLock::new(),
    });
    let b = backend.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let b = b.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        b.served.fetch_add(1, Ordering::SeqCst);
                        let status = if b.failing.load(Ordering::SeqCst) {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        };
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"hi")));
                        *resp.status_mut() = status;
                        async move { Ok::<_, Infallible>(resp) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    backend
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: usize,
    failed: usize,
}

#[tokio::test]
async fn balancer_routes_around_an_open_endpoint_and_readmits_it() {
    let mut backends = Vec::new();
    for _ in 0..BACKENDS {
        backends.push(start_backend().await);
    }

    // Transitions of every endpoint breaker, as events. The bad backend heals the moment its
    // breaker opens, so that readmission can follow.
    let (events_tx, mut events) = mpsc::unbounded_channel::<(String, State, State)>();
    let bad = backends[BAD].clone();
    let bad_name = format!("backend-{BAD}");
    let hook_bad_name = bad_name.clone();
    let layer = EndpointBreakerLayer::builder()
        .consecutive_failures(THRESHOLD)
        .open_duration(Duration::from_millis(300))
        .half_open_probes(K)
        .success_threshold(K)
        .classifier(HttpClassifier::server_errors())
        .on_state_change(move |t: &Transition<'_>| {
            if t.name == hook_bad_name && t.to == State::Open {
                bad.failing.store(false, Ordering::SeqCst);
            }
            let _ = events_tx.send((t.name.to_string(), t.from, t.to));
        })
        .build_endpoint()
        .unwrap();

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let endpoints: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, backend)| {
            let b = backend.clone();
            let uri: Uri = format!("http://{}/", backend.addr).parse().unwrap();
            let target = client
                .clone()
                .map_request(move |mut req: Request<Empty<Bytes>>| {
                    if let Some(h) = b.breaker.get() {
                        *b.calls.lock().unwrap().entry(h.state()).or_default() += 1;
                    }
                    *req.uri_mut() = uri.clone();
                    req
                });
            let endpoint = layer.layer_named(target, format!("backend-{i}"));
            backend.breaker.set(endpoint.handle()).unwrap();
            PendingRequests::new(endpoint, CompleteOnResponse::default())
        })
        .collect();
    let balance = Balance::new(ServiceList::new(endpoints));
    let svc = Buffer::new(balance, 1024);

    let batch = |svc: Buffer<Request<Empty<Bytes>>, _>| async move {
        let results = join_all(
            (0..CONCURRENCY).map(|_| svc.clone().oneshot(Request::new(Empty::<Bytes>::new()))),
        )
        .await;
        let mut tally = Tally::default();
        for r in results {
            let r: Result<Response<_>, BoxError> = r;
            match r {
                Ok(resp) if resp.status().is_success() => tally.ok += 1,
                _ => tally.failed += 1,
            }
        }
        tally
    };

    let safety = Duration::from_secs(60);
    tokio::time::timeout(safety, async {
        // Warm-up: every backend healthy.
        for _ in 0..10 {
            let t = batch(svc.clone()).await;
            assert_eq!(t.failed, 0);
        }
        assert!(backends.iter().all(|b| b.served.load(Ordering::SeqCst) > 0));

        // One backend starts answering 500 until its breaker opens.
        backends[BAD].failing.store(true, Ordering::SeqCst);
        let mut failures = 0;
        let mut batches = 0;
        loop {
            let t = batch(svc.clone()).await;
            failures += t.failed;
            batches += 1;
            assert!(batches < 1000, "the breaker never opened");
            if let Ok((name, from, to)) = events.try_recv() {
                assert_eq!(
                    (name.as_str(), from, to),
                    (bad_name.as_str(), State::Closed, State::Open)
                );
                break;
            }
        }
        assert!(failures >= THRESHOLD as usize);
        assert!(
            failures <= THRESHOLD as usize + CONCURRENCY,
            "client saw {failures} failures, more than threshold + in flight"
        );

        // Open: no call reaches the endpoint; then it half-opens, K probes succeed, it closes.
        let mut seen = Vec::new();
        let mut batches = 0;
        while !seen.contains(&State::Closed) {
            let t = batch(svc.clone()).await;
            assert_eq!(t.failed, 0, "healthy backends answer every request");
            while let Ok((name, _, to)) = events.try_recv() {
                assert_eq!(name, bad_name);
                seen.push(to);
            }
            batches += 1;
            assert!(batches < 100_000, "the endpoint was never readmitted");
        }
        assert_eq!(seen, vec![State::HalfOpen, State::Closed]);
        let calls = backends[BAD].calls.lock().unwrap().clone();
        assert_eq!(
            calls.get(&State::Open),
            None,
            "no calls while open: {calls:?}"
        );
        assert_eq!(
            calls.get(&State::HalfOpen),
            Some(&(K as usize)),
            "exactly K probes: {calls:?}"
        );

        // Readmitted: it serves traffic again.
        let before = backends[BAD].served.load(Ordering::SeqCst);
        for _ in 0..50 {
            assert_eq!(batch(svc.clone()).await.failed, 0);
        }
        assert!(backends[BAD].served.load(Ordering::SeqCst) > before);
        assert_eq!(backends[BAD].breaker.get().unwrap().state(), State::Closed);
        for (i, b) in backends.iter().enumerate() {
            if i != BAD {
                assert_eq!(b.breaker.get().unwrap().counters().failures, 0);
            }
        }
    })
    .await
    .expect("safety timeout: the scenario did not finish");
}

/// A gRPC-shaped server over real HTTP/2 on loopback: every response is one message followed
/// by trailers carrying `grpc-status` (14, UNAVAILABLE, while `failing`; 0 otherwise), with no
/// status in the headers.
async fn start_grpc_backend(failing: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let failing = failing.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let status = if failing.load(Ordering::SeqCst) {
                            "14"
                        } else {
                            "0"
                        };
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", status.parse().unwrap());
                        let frames = vec![
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let resp = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(futures_util::stream::iter(frames)))
                            .unwrap();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_status_in_trailers_opens_the_breaker() {
    let failing = Arc::new(AtomicBool::new(true));
    let addr = start_grpc_backend(failing.clone()).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("echo")
        .classifier(HttpClassifier::grpc())
        .consecutive_failures(THRESHOLD)
        .open_duration(Duration::from_secs(30))
        .build_with_handle()
        .unwrap();
    let mut svc = tower::ServiceBuilder::new().layer(layer).service(client);
    let uri: Uri = format!("http://{addr}/mesh.echo.v1.Echo/Say")
        .parse()
        .unwrap();
    let request = || {
        Request::post(uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    for i in 0..u64::from(THRESHOLD) {
        let resp = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers().get("grpc-status").is_none(),
            "status only in trailers"
        );
        assert_eq!(
            handle.counters().failures,
            i,
            "recorded at the end of the body"
        );
        let body = resp.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().unwrap()["grpc-status"], "14");
        assert_eq!(handle.counters().failures, i + 1);
    }
    assert_eq!(handle.state(), State::Open);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap_err();
    assert_eq!(err.as_open().map(|o| o.name()), Some("echo"));

    // Healthy again: an OK status in the trailers is a success.
    failing.store(false, Ordering::SeqCst);
    handle.reset();
    let resp = svc.ready().await.unwrap().call(request()).await.unwrap();
    resp.into_body().collect().await.unwrap();
    assert_eq!(handle.counters().successes, 1);
    assert_eq!(handle.state(), State::Closed);
}

/// A service-level breaker in a runtime built without the time driver: it opens, rejects and
/// reports as anywhere else, and never panics, not even a panic caught inside it (which would
/// abort a `panic = "abort"` build and reach the application's panic hook).
#[test]
fn service_breaker_in_a_runtime_without_timers_never_panics() {
    let panics = Arc::new(Mutex::new(Vec::<String>::new()));
    let this_test = std::thread::current().name().map(str::to_owned);
    let recorded = panics.clone();
    let previous = std::panic::take_hook();
    // Panic hooks are process-wide: record only this test's thread, pass everything on.
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name().map(str::to_owned) == this_test {
            recorded.lock().unwrap().push(info.to_string());
        }
        previous(info);
    }));

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (layer, handle) = CircuitBreakerLayer::builder()
        .consecutive_failures(THRESHOLD)
        .open_duration(Duration::from_secs(30))
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("down".into())
        }
    }));
    rt.block_on(async {
        for _ in 0..THRESHOLD {
            let e = svc.ready().await.unwrap().call(false).await.unwrap_err();
            assert!(!e.is_open(), "{e}");
        }
        assert_eq!(handle.state(), State::Open);
        for _ in 0..5 {
            let e = svc.ready().await.unwrap().call(true).await.unwrap_err();
            assert!(e.is_open(), "{e}");
        }
    });
    // Outside the runtime too.
    let e = futures_util::FutureExt::now_or_never(async {
        svc.ready().await.unwrap().call(true).await
    })
    .unwrap()
    .unwrap_err();
    assert!(e.is_open(), "{e}");
    // Back to the default hook (ours forwards to it anyway), then look at what was seen.
    drop(std::panic::take_hook());
    let seen = std::mem::take(&mut *panics.lock().unwrap());
    assert_eq!(seen, Vec::<String>::new(), "the breaker panicked");
    assert_eq!(handle.counters().rejected, 6);
    assert_eq!(handle.state(), State::Open);
}

/// An open endpoint breaker behind `Buffer` (paused clock): the request queued while it is
/// open waits, with nothing else flowing, until the open duration ends; the breaker's
/// wake-up then lets the buffer's worker send it as the half-open probe, which closes the
/// breaker. The buffer never sees a readiness error: later requests all succeed.
#[tokio::test(start_paused = true)]
async fn open_endpoint_breaker_behind_buffer_wakes_when_the_open_duration_ends() {
    let failing = Arc::new(AtomicBool::new(true));
    let reached = Arc::new(AtomicUsize::new(0));
    let (f, r) = (failing.clone(), reached.clone());
    let inner = tower::service_fn(move |_: ()| {
        r.fetch_add(1, Ordering::SeqCst);
        let fail = f.load(Ordering::SeqCst);
        async move {
            if fail {
                Err::<&'static str, BoxError>("down".into())
            } else {
                Ok("up")
            }
        }
    });
    let open_for = Duration::from_secs(10);
    let ep = EndpointBreakerLayer::builder()
        .consecutive_failures(THRESHOLD)
        .open_duration(open_for)
        .build_endpoint()
        .unwrap()
        .layer_named(inner, "buffered");
    let handle = ep.handle();
    let svc = Buffer::new(ep, 8);

    for _ in 0..THRESHOLD {
        let e = svc.clone().oneshot(()).await.unwrap_err();
        assert_eq!(e.to_string(), "down");
    }
    assert_eq!(handle.state(), State::Open);
    let opened = tokio::time::Instant::now();
    failing.store(false, Ordering::SeqCst);

    // Queued while open: the worker finds the endpoint not ready and waits for its wake-up.
    let queued = tokio::spawn(svc.clone().oneshot(()));
    tokio::time::sleep(open_for - Duration::from_millis(1)).await;
    assert!(!queued.is_finished(), "served while open");
    assert_eq!(reached.load(Ordering::SeqCst), THRESHOLD as usize);
    assert_eq!(handle.state(), State::Open);

    let answer = queued.await.unwrap();
    assert_eq!(answer.unwrap(), "up");
    assert_eq!(
        tokio::time::Instant::now() - opened,
        open_for,
        "served the moment the open duration ended"
    );
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(reached.load(Ordering::SeqCst), THRESHOLD as usize + 1);
    for _ in 0..10 {
        assert_eq!(svc.clone().oneshot(()).await.unwrap(), "up");
    }
}
