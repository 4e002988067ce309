//! An axum app whose handler calls another service through a mesh `Client` kept in axum
//! `State`, and answers the mesh's errors as a gateway does: 503 (with `retry-after` when a
//! breaker says when to come back), 504, 502.
//!
//! The `frontend` app serves `GET /greet` by calling `GET /hello` on the `greeter` service.
//! A plain HTTP client then calls the frontend while the greeter:
//!
//! 1. answers: 200 with the greeter's body;
//! 2. answers later than the greeter's timeout (500 ms): 504;
//! 3. is deregistered (`unregister_service`): 503, no endpoint;
//! 4. is registered again but fails every call with 500: the frontend passes the 500s on
//!    until the greeter's circuit breaker opens, then answers 503 with `retry-after`.
//!
//! The registry is an embedded SQLite file in the temporary directory, removed at the end.
//!
//! Run it with `cargo run --example axum_upstream --features mesh`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, ServiceExt};
use tower_mesh::instance::Microservice;
use tower_mesh::mesh::policy::PolicyOverrides;
use tower_mesh::mesh::{Client, Error, Mesh};

/// The frontend's handler: the greeter's answer, or the mesh's error as a gateway's answer.
async fn greet(State(greeter): State<Client>) -> Response {
    let req = Request::get("/hello")
        .body(tower_mesh::mesh::RequestBody::empty())
        .expect("a valid request");
    match greeter.oneshot(req).await {
        // The greeter's response, its body streamed through.
        Ok(rsp) => rsp.map(axum::body::Body::new),
        Err(e) => gateway_error(e),
    }
}

/// 503 for no endpoint or an open breaker (with `retry-after` in whole seconds, rounded up,
/// when known), 504 for a timeout, 502 for a failed upstream call or discovery.
fn gateway_error(e: Error) -> Response {
    let status = match e.status() {
        // The request this handler built could not be sent: our bug, not the caller's.
        StatusCode::BAD_REQUEST => StatusCode::INTERNAL_SERVER_ERROR,
        status => status,
    };
    let mut rsp = (status, format!("{e}\n")).into_response();
    if let Some(after) = e.retry_after() {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        rsp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    rsp
}

const ANSWER: u8 = 0;
const SLOW: u8 = 1;
const FAIL: u8 = 2;

/// The greeter: answers, answers after 2 s, or fails with 500, as `mode` says.
async fn hello(State(mode): State<Arc<AtomicU8>>) -> (StatusCode, &'static str) {
    match mode.load(Ordering::Relaxed) {
        ANSWER => (StatusCode::OK, "hello from greeter"),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (StatusCode::OK, "hello, eventually")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "greeter is broken"),
    }
}

async fn serve(app: Router) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener, app,
    )));
    Ok(addr)
}

/// Calls the frontend: status, `retry-after`, body.
async fn call(
    http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    frontend: std::net::SocketAddr,
) -> Result<(StatusCode, Option<String>, String), BoxError> {
    let rsp = http
        .request(Request::get(format!("http://{frontend}/greet")).body(Empty::new())?)
        .await?;
    let status = rsp.status();
    let retry_after = rsp
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let body = rsp.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).trim_end().to_owned();
    Ok((status, retry_after, body))
}

fn show(phase: &str, (status, retry_after, body): &(StatusCode, Option<String>, String)) {
    let retry_after = retry_after
        .as_ref()
        .map(|s| format!(" retry-after: {s}"))
        .unwrap_or_default();
    println!("{phase:<28} -> {}{retry_after} {body:?}", status.as_u16());
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let db = std::env::temp_dir().join(format!(
        "tower-mesh-axum-upstream-{}.db",
        std::process::id()
    ));
    // Removed when dropped, also when a check below fails and panics.
    let db = TempDb(db);
    run(&db.0).await
}

async fn run(db: &std::path::Path) -> Result<(), BoxError> {
    let mode = Arc::new(AtomicU8::new(ANSWER));
    let greeter_addr = serve(
        Router::new()
            .route("/hello", get(hello))
            .with_state(mode.clone()),
    )
    .await?;

    let mesh = Mesh::builder()
        .registry_url(format!("sqlite://{}?mode=rwc", db.display()))
        .service(
            "greeter",
            PolicyOverrides {
                timeout: Some(Duration::from_millis(500)),
                ..PolicyOverrides::default()
            },
        )
        .build()
        .await?;
    let greeter = Microservice::new("greeter", "1.0.0").endpoint(format!("http://{greeter_addr}"));
    mesh.register_service(&greeter).await?;

    // The frontend keeps the greeter's client in its state.
    let frontend = serve(
        Router::new()
            .route("/greet", get(greet))
            .with_state(mesh.client("greeter")?),
    )
    .await?;
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    // 1. Through the upstream.
    let ok = call(&http, frontend).await?;
    show("1. greeter answers", &ok);
    assert_eq!(
        (ok.0, ok.2.as_str()),
        (StatusCode::OK, "hello from greeter")
    );

    // 2. Later than the greeter's timeout.
    mode.store(SLOW, Ordering::Relaxed);
    let slow = call(&http, frontend).await?;
    show("2. greeter too slow", &slow);
    assert_eq!(slow.0, StatusCode::GATEWAY_TIMEOUT);
    mode.store(ANSWER, Ordering::Relaxed);

    // 3. Deregistered. The frontend's client learns of it through the registry's watch, a
    //    moment later; until then the greeter still answers.
    mesh.unregister_service(&greeter).await?;
    let mut gone = call(&http, frontend).await?;
    for _ in 0..20 {
        if gone.0 != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gone = call(&http, frontend).await?;
    }
    show("3. greeter deregistered", &gone);
    assert_eq!(gone.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(gone.2.contains("no endpoint"), "{}", gone.2);

    // 4. Back, but failing: its 500s pass through until the breaker opens.
    mode.store(FAIL, Ordering::Relaxed);
    mesh.register_service(&greeter).await?;
    let mut passed_through = 0;
    let open = loop {
        let r = call(&http, frontend).await?;
        match r.0 {
            StatusCode::INTERNAL_SERVER_ERROR if passed_through < 50 => passed_through += 1,
            // Not discovered again yet.
            StatusCode::SERVICE_UNAVAILABLE if r.1.is_none() && passed_through == 0 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break r,
        }
    };
    println!("4. greeter fails with 500    -> 500 passed through {passed_through} times, then:");
    show("   breaker open", &open);
    assert_eq!(open.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(open.1.is_some(), "an open breaker says when to retry");
    assert!(open.2.contains("circuit breaker"), "{}", open.2);

    println!("axum_upstream: 200, 504, 503 and 503 with retry-after, as the greeter changed");
    Ok(())
}

/// The SQLite file, removed with its WAL companions when dropped.
struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
