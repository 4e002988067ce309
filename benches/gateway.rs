//! Issue 13's gateway figure: the gateway hop against calling the backend directly, on
//! loopback, in the same run.
//!
//! A hyper HTTP/1.1 backend answers `GET /` with `200 ok` on its own runtime (one worker
//! thread). The gateway (`tower_mesh::gateway::proxy::Gateway` under `axum::serve`, a
//! `Mesh` over a memory registry holding the backend, route `/` to it) runs on another
//! runtime (one worker thread). One bare hyper-util client (two workers) calls the backend
//! directly, or the gateway. The report alternates the two over rounds: latency (sequential
//! requests: p50, p99), throughput (32 tasks for 1.5 s) and CPU time per request (the whole
//! process's user + system time during the throughput run over the requests: client,
//! gateway and backend together; the difference is the gateway's share).
//!
//! ```text
//! cargo bench --all-features --bench gateway
//! GATEWAY_REPORT=only cargo bench --all-features --bench gateway   # the report alone
//! ```

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_seconds;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower_mesh::gateway::config::Config;
use tower_mesh::gateway::proxy::Gateway;
use tower_mesh::instance::Microservice;
use tower_mesh::mesh::Mesh;

type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

const LATENCY_REQUESTS: usize = 5_000;
const WARM_UP: usize = 500;
const CONCURRENCY: usize = 32;
const THROUGHPUT_TIME: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 5;

/// A runtime of `workers` threads, or a current-thread one for 0.
fn runtime(workers: usize) -> Runtime {
    let mut b = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all().build().unwrap()
}

/// Runs `f` on a runtime of its own in a thread of its own, for ever; returns what `f` sends.
fn background<T: Send + 'static>(
    f: impl FnOnce(
            tokio::sync::oneshot::Sender<T>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send
        + 'static,
) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = runtime(1);
        rt.block_on(f(tx));
    });
    rx.blocking_recv().unwrap()
}

fn start_backend() -> SocketAddr {
    background(|tx| {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    })
}

fn start_gateway(backend: SocketAddr) -> SocketAddr {
    background(move |tx| {
        Box::pin(async move {
            let config = Config::from_toml(
                "registry = { url = \"memory:\" }\n[[routes]]\nprefix = \"/\"\nservice = \"backend\"\nstrip_prefix = false\n",
            )
            .unwrap();
            let mesh = Mesh::builder()
                .registry_url("memory:")
                .build()
                .await
                .unwrap();
            mesh.register_service(
                &Microservice::new("backend", "1").endpoint(format!("http://{backend}")),
            )
            .await
            .unwrap();
            let gateway = Gateway::new(mesh.clone(), &config).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, axum::Router::new().fallback_service(gateway))
                .await
                .unwrap();
            drop(mesh);
        })
    })
}

async fn get(client: &Client, uri: &Uri) {
    let rsp = client
        .request(Request::get(uri.clone()).body(Full::default()).unwrap())
        .await
        .expect("request");
    assert!(rsp.status().is_success(), "{}", rsp.status());
    let _ = rsp.into_body().collect().await.unwrap();
}

async fn latencies(client: &Client, uri: &Uri) -> Vec<Duration> {
    for _ in 0..WARM_UP {
        get(client, uri).await;
    }
    let mut out = Vec::with_capacity(LATENCY_REQUESTS);
    for _ in 0..LATENCY_REQUESTS {
        let start = Instant::now();
        get(client, uri).await;
        out.push(start.elapsed());
    }
    out.sort();
    out
}

/// Requests per second, and process CPU seconds per request.
async fn throughput(client: &Client, uri: &Uri) -> (f64, f64) {
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < THROUGHPUT_TIME {
                    get(&client, &uri).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    (total as f64 / secs, cpu / total as f64)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let backend = start_backend();
    let gateway = start_gateway(backend);
    let direct: Uri = format!("http://{backend}/").parse().unwrap();
    let via: Uri = format!("http://{gateway}/").parse().unwrap();
    let rt = runtime(2);
    let client: Client = rt.block_on(async {
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
    });
    let client = Arc::new(client);

    if std::env::var("GATEWAY_REPORT").as_deref() != Ok("only") {
        let mut c = Criterion::default().configure_from_args();
        let mut group = c.benchmark_group("gateway/latency");
        for (name, uri) in [("direct", &direct), ("gateway", &via)] {
            group.bench_function(name, |b| {
                b.to_async(&rt).iter(|| get(&client, uri));
            });
        }
        group.finish();
        c.final_summary();
    }

    let (mut p50, mut p99, mut rps, mut cpu) = (
        [vec![], vec![]],
        [vec![], vec![]],
        [vec![], vec![]],
        [vec![], vec![]],
    );
    for round in 0..ROUNDS {
        for (i, uri) in [&direct, &via].into_iter().enumerate() {
            let lat = rt.block_on(latencies(&client, uri));
            let (r, c) = rt.block_on(throughput(&client, uri));
            p50[i].push(pct(&lat, 0.5));
            p99[i].push(pct(&lat, 0.99));
            rps[i].push(r);
            cpu[i].push(c * 1e6);
        }
        eprintln!(
            "round {}: p50 {:.1}/{:.1} us, rps {:.0}/{:.0}",
            round + 1,
            p50[0][round],
            p50[1][round],
            rps[0][round],
            rps[1][round]
        );
    }
    let m = |v: &mut Vec<f64>| median(v);
    let (d50, g50) = (m(&mut p50[0]), m(&mut p50[1]));
    let (d99, g99) = (m(&mut p99[0]), m(&mut p99[1]));
    let (drps, grps) = (m(&mut rps[0]), m(&mut rps[1]));
    let (dcpu, gcpu) = (m(&mut cpu[0]), m(&mut cpu[1]));
    println!(
        "direct:  p50 {d50:.1} us, p99 {d99:.1} us, {drps:.0} req/s, {dcpu:.1} us CPU/request"
    );
    println!(
        "gateway: p50 {g50:.1} us, p99 {g99:.1} us, {grps:.0} req/s, {gcpu:.1} us CPU/request"
    );
    println!(
        "ratio gateway/direct p50 latency: {:.2}x (target <= 2.3x)",
        g50 / d50
    );
    println!("ratio gateway/direct p99 latency: {:.2}x", g99 / d99);
    println!("ratio gateway/direct throughput: {:.2}x", grps / drps);
    println!(
        "gateway CPU per request: {:.1} us (process total {gcpu:.1} vs {dcpu:.1} us direct)",
        gcpu - dcpu
    );
}
