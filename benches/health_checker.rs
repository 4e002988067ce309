//! Issue 11's first health figure: 1,000 HTTP instances on loopback checked every second for
//! 10 s by one `HealthChecker`; process CPU time per check against one request of a bare
//! hyper-util client on a kept-alive connection, measured the same way in the same run.
//!
//! Process CPU time (user + system, every thread) is read from `/proc/self/stat` (Linux) before
//! and after each phase; the servers run in the same process in both phases, so both figures
//! include the server side of a request.
//!
//! ```text
//! cargo bench --features health --bench health_checker
//! ```
//!
//! `TM_BENCH_SECS` changes the 10 s measurement of the checker phase. Exits with status 1 when
//! the ratio is above 1.5.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower_mesh::health::HealthChecker;
use tower_mesh::instance::{Check, Instance};
use tower_mesh::registry::{MemoryRegistry, Registration, Registry};

const INSTANCES: usize = 1_000;
const TARGET: f64 = 1.5;

/// Process CPU time so far (user + system, all threads), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux only)");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux ABI tokio supports.
    Duration::from_millis(ticks * 10)
}

/// An HTTP/1.1 keep-alive server answering `200 ok` on a loopback port.
async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// CPU time per request of a bare hyper-util client, one kept-alive connection, sequential
/// requests (reading each body, as the checker does).
async fn baseline(requests: u64) -> (Duration, u64) {
    let addr = serve().await;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = format!("http://{addr}/healthz").parse().unwrap();
    let get = |client: &Client<HttpConnector, Empty<Bytes>>| {
        let request = hyper::Request::get(uri.clone())
            .header(http::header::USER_AGENT, "bench")
            .body(Empty::new())
            .unwrap();
        let response = client.request(request);
        async move {
            let response = response.await.unwrap();
            assert!(response.status().is_success());
            response.into_body().collect().await.unwrap();
        }
    };
    for _ in 0..1_000 {
        get(&client).await; // warm-up, and the connection is made
    }
    let before = cpu_time();
    for _ in 0..requests {
        get(&client).await;
    }
    (cpu_time() - before, requests)
}

/// CPU time per request of a bare hyper-util client sending what the checker sends: one
/// request a second (plus up to 100 ms of random jitter) on each of `addrs`' kept-alive
/// connections, for `secs` seconds, each from its own task.
async fn paced(addrs: &[SocketAddr], secs: u64) -> (Duration, u64) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for addr in addrs {
        let uri: hyper::Uri = format!("http://{addr}/healthz").parse().unwrap();
        let (client, count) = (client.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut next =
                tokio::time::Instant::now() + Duration::from_millis(rand::random_range(0..=100));
            loop {
                tokio::time::sleep_until(next).await;
                let started = tokio::time::Instant::now();
                let request = hyper::Request::get(uri.clone())
                    .header(http::header::USER_AGENT, "bench")
                    .body(Empty::new())
                    .unwrap();
                let response = client.request(request).await.unwrap();
                assert!(response.status().is_success());
                response.into_body().collect().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                next = started
                    + Duration::from_secs(1)
                    + Duration::from_millis(rand::random_range(0..=100));
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // every connection made
    let (before_cpu, before) = (cpu_time(), count.load(std::sync::atomic::Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (after_cpu, after) = (cpu_time(), count.load(std::sync::atomic::Ordering::Relaxed));
    for task in tasks {
        task.abort();
    }
    (after_cpu - before_cpu, after - before)
}

/// CPU time per check of one checker over `addrs` as HTTP instances checked every second.
async fn checker(addrs: &[SocketAddr], secs: u64) -> (Duration, u64) {
    let registry = MemoryRegistry::new();
    let check = Check::http("/healthz")
        .interval(Duration::from_secs(1))
        .jitter(Duration::from_millis(100))
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut registrations: Vec<Registration> = Vec::with_capacity(INSTANCES);
    for (i, addr) in addrs.iter().enumerate() {
        let instance = Instance::builder("bench", format!("b-{i}"))
            .host("127.0.0.1")
            .port(addr.port().into())
            .check(check.clone())
            .build()
            .unwrap();
        registrations.push(instance.into());
    }
    registry.register_all(registrations).await.unwrap();
    let checker = HealthChecker::builder("bench-checker")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    checker
        .assignment()
        .wait_for(|a| a.len() == INSTANCES)
        .await
        .unwrap();
    // Warm-up: every connection made and in the pool.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before_cpu, before) = (cpu_time(), checker.stats());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (after_cpu, after) = (cpu_time(), checker.stats());
    assert_eq!(after.failures, before.failures, "every check passes");
    assert_eq!(after.writes, 0, "no transitions, no writes");
    checker.shutdown().await;
    (after_cpu - before_cpu, after.checks - before.checks)
}

fn main() {
    let secs: u64 = std::env::var("TM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = runtime
        .block_on(async { futures_util::future::join_all((0..INSTANCES).map(|_| serve())).await });
    let (loop_cpu, loop_n) = runtime.block_on(baseline(100_000));
    let (base_cpu, base_n) = runtime.block_on(paced(&addrs, secs));
    let (ours_cpu, ours_n) = runtime.block_on(checker(&addrs, secs));
    let tight = loop_cpu.as_secs_f64() / loop_n as f64;
    let base = base_cpu.as_secs_f64() / base_n as f64;
    let ours = ours_cpu.as_secs_f64() / ours_n as f64;
    let ratio = ours / base;
    println!(
        "bare hyper-util request, one kept-alive connection, back to back: {loop_n} requests, {loop_cpu:?} CPU, {:.2} us CPU/request",
        tight * 1e6
    );
    println!(
        "bare hyper-util request, {INSTANCES} kept-alive connections, each every 1 s for {secs} s: {base_n} requests, {base_cpu:?} CPU, {:.2} us CPU/request",
        base * 1e6
    );
    println!(
        "health checker, {INSTANCES} HTTP instances every 1 s for {secs} s: {ours_n} checks, {ours_cpu:?} CPU, {:.2} us CPU/check",
        ours * 1e6
    );
    println!(
        "ratio health checker CPU/check vs bare request at the same pace: {ratio:.2} [target <= {TARGET}]"
    );
    println!(
        "ratio health checker CPU/check vs back-to-back bare request: {:.2} [informational] ({:?} in all)",
        ours / tight,
        started.elapsed()
    );
    if ratio > TARGET {
        std::process::exit(1);
    }
}
