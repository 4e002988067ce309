//! Issue 12's end-to-end figures: HTTP/1.1 requests on loopback through the whole `Mesh`
//! client stack, against a bare hyper-util client and against tonic's style of stack
//! (`Buffer` + tower's P2C balancer over pending requests), to the same servers, in the same
//! run.
//!
//! Three hyper servers answer `GET /` with `200 ok` on loopback ports. They run on their own
//! tokio runtime (multi-thread, one worker, in its own thread), so the clients' runtime (two
//! workers) is separate. The clients, each sending `GET /` with a `Full<Bytes>` body and
//! reading the whole response:
//!
//! - `bare`: one hyper-util legacy `Client` (`build_http`), absolute URIs, the three servers in
//!   turn (round robin by a request counter);
//! - `buffer_p2c`: `RegistryDiscover` over a `MemoryRegistry` holding the three instances,
//!   `HttpEndpoints`, tower's `p2c::Balance` over `PendingRequestsDiscover`, behind a
//!   `Buffer` of 1,024;
//! - `mesh`: `Mesh::builder().registry_url("memory:")`, the service registered with its three
//!   endpoints, and `mesh.client("bench")` (the `Full<Bytes>` body given as a whole
//!   `RequestBody`, which is what the mesh's client takes).
//!
//! ```text
//! cargo bench --all-features --bench e2e
//! # only the report (skips criterion):
//! E2E_REPORT=only cargo bench --all-features --bench e2e
//! ```
//!
//! Criterion measures `e2e/latency/{bare,buffer_p2c,mesh}` (one request at a time). The report
//! that follows alternates the clients over seven rounds, each round measuring every client's
//! latency (20,000 sequential requests: p50, p99) and then its throughput (32 tasks, each
//! looping on a clone of the client, for 1.5 s), and prints the medians over rounds and the
//! `ratio ...` lines (the median of the per-round ratios, and the ratio of the medians).
//! `E2E_ROUNDS` changes the number of rounds, `E2E_CLIENT_WORKERS` the client runtime's
//! workers (2; `0` for a current-thread runtime). `E2E_REPORT=0` skips the report.
//!
//! `E2E_PROFILE=<bare|buffer_p2c|mesh>` measures that client's throughput alone for
//! `E2E_SECONDS` (10), to run under a sampling profiler (`perf record -e cpu-clock`).
//!
//! `E2E_CALLGRIND=<bare|buffer_p2c|mesh>` with `E2E_REQUESTS=<n>` (2,000 unless set) runs only
//! that client, on a current-thread runtime, for 200 warm-up requests and then `n` sequential
//! ones, with the servers in a child process (this binary again, with `E2E_SERVE=1`, which
//! prints the servers' addresses on its first line and exits when its standard input closes),
//! so that `valgrind --tool=callgrind` counts the client side only. The difference between
//! two request counts, divided by the difference of the counts, is the cost of one request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::{Service, ServiceExt};
use tower_mesh::discover::{p2c_pending, HttpEndpoints, RegistryDiscover};
use tower_mesh::instance::{Instance, Microservice};
use tower_mesh::mesh::{Mesh, RequestBody};
use tower_mesh::registry::{MemoryRegistry, Registry};

/// Sequential requests per client per round for the latency figures (after a warm-up).
const LATENCY_REQUESTS: usize = 20_000;
/// Warm-up requests before each latency measurement.
const LATENCY_WARM_UP: usize = 1_000;
/// Concurrent tasks for the throughput figures.
const CONCURRENCY: usize = 32;
/// How long each client's throughput is measured in each round.
const THROUGHPUT_TIME: Duration = Duration::from_millis(1500);
/// Concurrent warm-up before each throughput measurement (connections opened).
const THROUGHPUT_WARM_UP: Duration = Duration::from_millis(300);
/// Rounds of the report (`E2E_ROUNDS` changes it); medians over rounds are reported.
const ROUNDS: usize = 7;
/// Warm-up requests in callgrind mode, before the counted ones.
const CALLGRIND_WARM_UP: usize = 200;

type Body = Full<Bytes>;
type HyperClient = hyper_util::client::legacy::Client<HttpConnector, Body>;
type Discovered = tower_mesh::discover::Spawned<tower_mesh::discover::HttpEndpoint>;
type P2c = tower::balance::p2c::Balance<
    tower::load::PendingRequestsDiscover<Discovered, tower::load::CompleteOnResponse>,
    Request<Body>,
>;
type P2cFuture = <P2c as Service<Request<Body>>>::Future;

/// The clients measured, in the order they alternate.
const KINDS: [Kind; 3] = [Kind::Bare, Kind::BufferP2c, Kind::Mesh];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bare,
    BufferP2c,
    Mesh,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::BufferP2c => "buffer_p2c",
            Kind::Mesh => "mesh",
        }
    }

    fn from_name(name: &str) -> Kind {
        KINDS
            .into_iter()
            .find(|k| k.name() == name)
            .unwrap_or_else(|| panic!("unknown client {name:?}: bare, buffer_p2c or mesh"))
    }
}

#[path = "common/cpu.rs"]
mod cpu;
#[path = "e2e/servers.rs"]
mod servers;

use servers::{serve_child, spawn_server_process, start_servers};

// ---------------------------------------------------------------------------------------------
// Clients

/// One of the clients measured; clones share what the client shares (pool, balancer).
// The bare client is held as an application holds it, not boxed (a few clones a round).
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Client {
    Bare {
        client: HyperClient,
        uris: Arc<[Uri]>,
        next: usize,
    },
    BufferP2c(Buffer<Request<Body>, P2cFuture>),
    Mesh(tower_mesh::mesh::Client),
}

/// What a client keeps alive besides itself (the mesh, discovery's registry).
#[allow(dead_code)]
enum Keep {
    Nothing,
    Registry(MemoryRegistry),
    Mesh(Mesh),
}

impl Client {
    /// Makes a client of `kind` for the servers at `addrs`, on the current runtime.
    async fn new(kind: Kind, addrs: &[SocketAddr]) -> (Client, Keep) {
        match kind {
            Kind::Bare => {
                let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .build_http::<Body>();
                let uris = addrs
                    .iter()
                    .map(|a| format!("http://{a}/").parse().unwrap())
                    .collect();
                (
                    Client::Bare {
                        client,
                        uris,
                        next: 0,
                    },
                    Keep::Nothing,
                )
            }
            Kind::BufferP2c => {
                let (service, registry) = buffer_p2c(addrs).await;
                (Client::BufferP2c(service), Keep::Registry(registry))
            }
            Kind::Mesh => {
                let (client, mesh) = mesh_client(addrs).await;
                (Client::Mesh(client), Keep::Mesh(mesh))
            }
        }
    }

    /// Starts this clone's round robin at `offset` (the bare client's; the others balance).
    fn offset(mut self, offset: usize) -> Self {
        if let Client::Bare { next, .. } = &mut self {
            *next = offset;
        }
        self
    }

    /// One `GET /`, its status checked and its body read.
    async fn send(&mut self) {
        match self {
            Client::Bare { client, uris, next } => {
                let uri = uris[*next % uris.len()].clone();
                *next = next.wrapping_add(1);
                let request = Request::get(uri).body(Body::default()).unwrap();
                read(client.request(request).await.expect("bare request")).await
            }
            Client::BufferP2c(service) => {
                let request = Request::get("/").body(Body::default()).unwrap();
                let response = service
                    .ready()
                    .await
                    .expect("buffer_p2c ready")
                    .call(request)
                    .await
                    .expect("buffer_p2c request");
                read(response).await
            }
            Client::Mesh(service) => {
                // The mesh takes a `RequestBody`: this `Full<Bytes>` becomes a whole body
                // (replayable on another endpoint).
                let request = Request::get("/")
                    .body(RequestBody::from(Body::default()))
                    .unwrap();
                let response = service
                    .ready()
                    .await
                    .expect("mesh ready")
                    .call(request)
                    .await
                    .expect("mesh request");
                read(response).await
            }
        }
    }
}

/// Checks the status and reads the whole body (`ok`).
async fn read<B>(response: Response<B>)
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
}

/// tonic's style of stack: registry-fed discovery, tower's P2C over pending requests, a buffer.
async fn buffer_p2c(addrs: &[SocketAddr]) -> (Buffer<Request<Body>, P2cFuture>, MemoryRegistry) {
    let registry = MemoryRegistry::new();
    for (id, addr) in ["a", "b", "c"].into_iter().zip(addrs) {
        let instance = Instance::builder("bench", id)
            .host("127.0.0.1")
            .port(u32::from(addr.port()))
            .build()
            .unwrap();
        registry.register(instance.into()).await.unwrap();
    }
    let discover = RegistryDiscover::new(registry.clone(), "bench", HttpEndpoints::new()).spawn();
    let service = Buffer::new(p2c_pending(discover), 1024);
    (service, registry)
}

/// The `mesh` client: the whole stack from `Mesh` (default policies), over the in-memory
/// registry, the service registered with the three servers as its endpoints.
async fn mesh_client(addrs: &[SocketAddr]) -> (tower_mesh::mesh::Client, Mesh) {
    let mesh = Mesh::builder()
        .registry_url("memory:")
        .build()
        .await
        .expect("a mesh over the memory registry");
    let mut service = Microservice::new("bench", "1.0.0");
    for addr in addrs {
        service = service.endpoint(format!("http://{addr}"));
    }
    mesh.register_service(&service)
        .await
        .expect("the bench service registered");
    let client = mesh.client("bench").expect("a client for bench");
    (client, mesh)
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// `n` sequential requests on `client` after `warm_up` ones, in a task of the runtime (as an
/// application's handler would run); each request's duration.
async fn latencies(client: &Client, warm_up: usize, n: usize) -> Vec<Duration> {
    let mut client = client.clone();
    tokio::spawn(async move {
        for _ in 0..warm_up {
            client.send().await;
        }
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            client.send().await;
            times.push(start.elapsed());
        }
        times
    })
    .await
    .unwrap()
}

/// Requests per second of `CONCURRENCY` tasks, each looping on its own clone of `client`,
/// for `time`, and the process's CPU time per request in microseconds (client and servers:
/// they share the process).
async fn throughput(client: &Client, time: Duration) -> (f64, f64) {
    let cpu0 = cpu::cpu_seconds();
    let start = Instant::now();
    let deadline = start + time;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let mut client = client.clone().offset(i);
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    client.send().await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let rps = total as f64 / start.elapsed().as_secs_f64();
    let cpu_us = (cpu::cpu_seconds() - cpu0) * 1e6 / total as f64;
    (rps, cpu_us)
}

/// The client side's runtime for the criterion group and the report: multi-thread, two
/// workers (the machine's cores) unless `E2E_CLIENT_WORKERS` says otherwise (`0`: a
/// current-thread runtime).
fn client_runtime() -> Runtime {
    match env_count("E2E_CLIENT_WORKERS", 2) {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        workers => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("e2e-client-worker")
            .enable_all()
            .build()
            .unwrap(),
    }
}

fn criterion_benches(c: &mut Criterion, runtime: &Runtime, clients: &[(Kind, Client)]) {
    let mut group = c.benchmark_group("e2e/latency");
    for (kind, client) in clients {
        group.bench_function(kind.name(), |b| {
            b.to_async(runtime).iter_custom(|iters| {
                let mut client = client.clone();
                async move {
                    tokio::spawn(async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            client.send().await;
                        }
                        start.elapsed()
                    })
                    .await
                    .unwrap()
                }
            })
        });
    }
    group.finish();
}

/// One client's figures, one entry per round.
#[derive(Debug, Default, Clone)]
struct Figures {
    p50: Vec<f64>,
    p99: Vec<f64>,
    throughput: Vec<f64>,
    cpu: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median over rounds of `ours[i] / theirs[i]`: each round's clients ran minutes apart at
/// most, seconds apart at best, so their ratio is less moved by the machine's load than the
/// ratio of medians taken over the whole run.
fn median_ratio(ours: &[f64], theirs: &[f64]) -> f64 {
    let ratios: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| a / b).collect();
    median(&ratios)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A count from the environment, or `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a count")))
        .unwrap_or(default)
}

fn report(runtime: &Runtime, clients: &[(Kind, Client)]) {
    let rounds = env_count("E2E_ROUNDS", ROUNDS);
    let mut figures = vec![Figures::default(); clients.len()];
    for round in 1..=rounds {
        for ((kind, client), figures) in clients.iter().zip(&mut figures) {
            let mut times = runtime.block_on(latencies(client, LATENCY_WARM_UP, LATENCY_REQUESTS));
            times.sort();
            let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
            println!(
                "round {round} latency {:<10} p50 {:7.1} us  p99 {:7.1} us  (concurrency 1, {LATENCY_REQUESTS} requests)",
                kind.name(),
                us(p50),
                us(p99)
            );
            figures.p50.push(us(p50));
            figures.p99.push(us(p99));
        }
        for ((kind, client), figures) in clients.iter().zip(&mut figures) {
            runtime.block_on(throughput(client, THROUGHPUT_WARM_UP));
            let (rps, cpu_us) = runtime.block_on(throughput(client, THROUGHPUT_TIME));
            println!(
                "round {round} throughput {:<10} {rps:9.0} req/s  {cpu_us:5.1} us CPU/request  (concurrency {CONCURRENCY}, {THROUGHPUT_TIME:?})",
                kind.name()
            );
            figures.throughput.push(rps);
            figures.cpu.push(cpu_us);
        }
    }
    let of = |kind: Kind| &figures[clients.iter().position(|(k, _)| *k == kind).unwrap()];
    for (kind, _) in clients {
        let f = of(*kind);
        println!(
            "report {:<10} p50 {:7.1} us  p99 {:7.1} us  throughput {:9.0} req/s  CPU {:5.1} us/request  (medians of {rounds} rounds)",
            kind.name(),
            median(&f.p50),
            median(&f.p99),
            median(&f.throughput),
            median(&f.cpu)
        );
    }
    let (bare, p2c, mesh) = (of(Kind::Bare), of(Kind::BufferP2c), of(Kind::Mesh));
    // Each line: the median of the per-round ratios, then the ratio of the medians.
    let line = |name: &str, ours: &[f64], theirs: &[f64], unit: &str, target: &str| {
        println!(
            "ratio {name} {:.3} (median of {rounds} per-round ratios; ratio of medians {:.3}: {:.1} vs {:.1} {unit}; {target})",
            median_ratio(ours, theirs),
            median(ours) / median(theirs),
            median(ours),
            median(theirs),
        );
    };
    line(
        "mesh/bare throughput",
        &mesh.throughput,
        &bare.throughput,
        "req/s",
        "target >= 0.9",
    );
    line(
        "mesh/bare p50",
        &mesh.p50,
        &bare.p50,
        "us",
        "target <= 1.15",
    );
    line("mesh/bare p99", &mesh.p99, &bare.p99, "us", "informational");
    line(
        "mesh/buffer_p2c throughput",
        &mesh.throughput,
        &p2c.throughput,
        "req/s",
        "target >= 1.1",
    );
    line(
        "buffer_p2c/bare throughput",
        &p2c.throughput,
        &bare.throughput,
        "req/s",
        "informational",
    );
    line(
        "buffer_p2c/bare p50",
        &p2c.p50,
        &bare.p50,
        "us",
        "informational",
    );
    // CPU per request (client and servers, in the throughput runs): steadier than
    // requests per second on a shared machine, and what throughput follows when the cores
    // are the limit.
    line(
        "mesh/bare CPU per request",
        &mesh.cpu,
        &bare.cpu,
        "us",
        "informational",
    );
    line(
        "mesh/buffer_p2c CPU per request",
        &mesh.cpu,
        &p2c.cpu,
        "us",
        "informational",
    );
}

/// `E2E_CALLGRIND=<client>`: one client, `E2E_REQUESTS` sequential requests after a fixed
/// warm-up, on a current-thread runtime, the servers in a child process.
fn callgrind(kind: Kind) {
    let n = env_count("E2E_REQUESTS", 2_000);
    let (mut child, addrs) = spawn_server_process();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut client, keep) = Client::new(kind, &addrs).await;
        for _ in 0..CALLGRIND_WARM_UP {
            client.send().await;
        }
        for _ in 0..n {
            client.send().await;
        }
        drop((client, keep));
    });
    drop(runtime);
    drop(child.stdin.take());
    let _ = child.wait();
    println!(
        "{}: {CALLGRIND_WARM_UP} warm-up + {n} requests",
        kind.name()
    );
}

/// `E2E_PROFILE=<client>`: that client's throughput alone, as in the report (servers in
/// this process, the client runtime of `E2E_CLIENT_WORKERS`), for `E2E_SECONDS` (10), to
/// run under a sampling profiler (`perf record -e cpu-clock`).
fn profile(runtime: &Runtime, kind: Kind, addrs: &[SocketAddr]) {
    let seconds = env_count("E2E_SECONDS", 10);
    runtime.block_on(async {
        let (client, keep) = Client::new(kind, addrs).await;
        throughput(&client, THROUGHPUT_WARM_UP).await;
        let (rps, cpu_us) = throughput(&client, Duration::from_secs(seconds as u64)).await;
        println!(
            "profile {:<10} {rps:9.0} req/s  {cpu_us:5.1} us CPU/request  (concurrency {CONCURRENCY}, {seconds} s)",
            kind.name()
        );
        drop((client, keep));
    });
}

fn main() {
    if std::env::var_os("E2E_SERVE").is_some() {
        serve_child();
        return;
    }
    if let Ok(name) = std::env::var("E2E_CALLGRIND") {
        callgrind(Kind::from_name(&name));
        return;
    }
    // E2E_REPORT=only skips criterion; E2E_REPORT=0 skips the report.
    let mode = std::env::var("E2E_REPORT").unwrap_or_default();
    let addrs = start_servers();
    let runtime = client_runtime();
    if let Ok(name) = std::env::var("E2E_PROFILE") {
        profile(&runtime, Kind::from_name(&name), &addrs);
        return;
    }
    let (clients, _keep): (Vec<(Kind, Client)>, Vec<Keep>) = runtime.block_on(async {
        let mut clients = Vec::new();
        let mut keep = Vec::new();
        for kind in KINDS {
            let (client, k) = Client::new(kind, &addrs).await;
            clients.push((kind, client));
            keep.push(k);
        }
        (clients, keep)
    });
    if mode != "only" {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        criterion_benches(&mut c, &runtime, &clients);
        c.final_summary();
    }
    if mode != "0" {
        report(&runtime, &clients);
    }
}
