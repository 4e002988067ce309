//! The router in process: routes, prefixes, forwarded headers, and each failure's answer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use tower_mesh::gateway::{config::Config, serve, Bound};

use crate::{backend, get, http_client, sqlite_url};

/// Starts the gateway of `toml` (a SQLite registry in a temp dir); its addresses and the
/// sender that stops it.
async fn start(
    toml: &str,
) -> (
    Bound,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = Config::from_toml(toml).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        serve(
            config,
            async {
                let _ = stopped.await;
            },
            move |b| {
                let _ = bound_tx.send(b);
            },
        )
        .await
        .unwrap();
    });
    (bound_rx.await.unwrap(), stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_prefixes_headers_and_failures() {
    let (a, b, c, slow, failing) = (
        backend("a").await,
        backend("b").await,
        backend("c").await,
        backend("slow").await,
        backend("failing").await,
    );
    slow.delay_ms.store(5_000, Ordering::SeqCst);
    failing.status.store(500, Ordering::SeqCst);
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        r#"
        [registry]
        url = "{url}"
        [listen]
        gateway = "127.0.0.1:0"
        admin = "127.0.0.1:0"
        [[routes]]
        prefix = "/orders"
        service = "orders"
        [[routes]]
        prefix = "/keep/"
        service = "keep"
        strip_prefix = false
        [[routes]]
        prefix = "/"
        host = "api.example.com"
        service = "hosted"
        [[routes]]
        prefix = "/slow"
        service = "slow"
        timeout = "300ms"
        [[routes]]
        prefix = "/broken"
        service = "broken"
        [[routes]]
        prefix = "/nobody"
        service = "nobody"
        timeout = "300ms"
        [[routes]]
        prefix = "/failing"
        service = "failing"
        [[routes]]
        prefix = "/small"
        service = "orders"
        max_body_bytes = 10
        [mesh.services.failing]
        service_breaker = {{ consecutive_failures = 2, open_duration = "30s" }}
        [mesh.services.broken]
        retry = {{ max_retries = 1 }}
        [[register]]
        name = "orders"
        version = "1"
        endpoints = ["http://{a}"]
        [[register]]
        name = "keep"
        version = "1"
        endpoints = ["http://{b}"]
        [[register]]
        name = "hosted"
        version = "1"
        endpoints = ["http://{c}"]
        [[register]]
        name = "slow"
        version = "1"
        endpoints = ["http://{slow}"]
        [[register]]
        name = "broken"
        version = "1"
        endpoints = ["http://{refused}"]
        [[register]]
        name = "failing"
        version = "1"
        endpoints = ["http://{failing}"]
        "#,
        url = sqlite_url("routes"),
        a = a.addr,
        b = b.addr,
        c = c.addr,
        slow = slow.addr,
        refused = refused,
        failing = failing.addr,
    );
    let (bound, stop, task) = start(&toml).await;
    let url = |path: &str| format!("http://{}{path}", bound.gateway);

    // The prefix is stripped (on whole segments), the query kept, the headers set.
    let (status, _, body) = get(&url("/orders/42?x=1"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!("a /42?x=1 for=127.0.0.1 proto=http host={}", bound.gateway)
    );
    let (_, _, body) = get(&url("/orders"), None).await;
    assert!(body.starts_with("a / "), "{body}");
    assert_eq!(
        get(&url("/ordersx"), None).await.0,
        404,
        "whole segments only"
    );
    // Kept prefix.
    let (_, _, body) = get(&url("/keep/this"), None).await;
    assert!(body.starts_with("b /keep/this "), "{body}");
    // By host.
    let (_, _, body) = get(&url("/anything"), Some("api.example.com:8080")).await;
    assert!(body.starts_with("c /anything "), "{body}");
    let (status, _, body) = get(&url("/anything"), None).await;
    assert_eq!(status, 404);
    assert!(body.contains("no route for /anything"), "{body}");

    // Timeout: 504, naming the service.
    let (status, _, body) = get(&url("/slow"), None).await;
    assert_eq!(status, 504);
    assert!(body.contains("\"slow\""), "{body}");
    // Nothing listens: 502.
    let (status, _, body) = get(&url("/broken"), None).await;
    assert_eq!(status, 502);
    assert!(body.contains("\"broken\""), "{body}");
    // Nobody registered: 503 with retry-after.
    let (status, retry, body) = get(&url("/nobody"), None).await;
    assert_eq!(status, 503);
    assert!(retry.is_some());
    assert!(body.contains("\"nobody\""), "{body}");
    // An open breaker: 503 with the time until it may half-open.
    assert_eq!(get(&url("/failing"), None).await.0, 500);
    assert_eq!(get(&url("/failing"), None).await.0, 500);
    let (status, retry, body) = get(&url("/failing"), None).await;
    assert_eq!(status, 503, "{body}");
    let retry: u64 = retry.expect("retry-after").parse().unwrap();
    assert!((20..=30).contains(&retry), "{retry}");

    // Bodies over the route's limit: declared, or found while streaming.
    let client = http_client::<Full<Bytes>>();
    let req = Request::post(url("/small"))
        .body(Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), 413);
    let chunks = futures_util::stream::iter((0..10).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"0123456789")))
    }));
    let req = Request::post(url("/small"))
        .body(StreamBody::new(chunks))
        .unwrap();
    let rsp = http_client().request(req).await.unwrap();
    assert_eq!(rsp.status(), 413);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"orders\""));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .unwrap();
}
