//! A hyper-util client behind the mesh calling three local hyper servers, one of which is
//! slowed down and then killed.
//!
//! Phases, each a few hundred `GET`s with 8 in flight, printing how many each server
//! answered:
//!
//! 1. every server healthy: the default strategy (`p2c`, peak EWMA) spreads the load;
//! 2. server `b` answers 200 ms late: peak EWMA sees it and moves traffic away from it;
//! 3. server `b` is killed (its listener and connections closed, as a crash would): every
//!    request still succeeds;
//! 4. still killed, with the strategy switched to `round_robin` at run time, which offers `b`
//!    its share regardless of latency: the requests sent there fail, are retried on another
//!    endpoint (a `GET` is idempotent), and `b`'s endpoint breaker opens and takes it out of
//!    the rotation. Every request still succeeds.
//!
//! The registry is an embedded SQLite file in the temporary directory, removed at the end.
//!
//! Run it with `cargo run --example hyper_client --features mesh`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::{JoinHandle, JoinSet};
use tower::{BoxError, ServiceExt};
use tower_mesh::instance::Microservice;
use tower_mesh::mesh::policy::StrategyPolicy;
use tower_mesh::mesh::{Client, Mesh};

/// A hyper server on loopback answering every request with its name, after `delay_ms`.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Server {
    async fn start(name: &'static str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let accept = tokio::spawn(async move {
            // The connections live in this set: aborting the accept loop drops it, which
            // aborts them and closes their sockets.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let delay = delay.clone();
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let delay = Duration::from_millis(delay.load(Ordering::Relaxed));
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            name.as_bytes(),
                        ))))
                    }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            name,
            addr,
            delay_ms,
            accept,
        })
    }

    /// Closes the listener and every connection, as a crash would.
    async fn kill(&self) {
        self.accept.abort();
        while !self.accept.is_finished() {
            tokio::task::yield_now().await;
        }
    }
}

/// What one phase saw: responses by server, and failed calls.
#[derive(Default)]
struct Tally {
    by_server: BTreeMap<String, usize>,
    failed: usize,
}

impl Tally {
    fn of(&self, name: &str) -> usize {
        self.by_server.get(name).copied().unwrap_or(0)
    }

    fn print(&self, phase: &str, servers: &[Server]) {
        let counts: Vec<String> = servers
            .iter()
            .map(|s| format!("{}={:>3}", s.name, self.of(s.name)))
            .collect();
        println!("{phase:<34} {}  failed={}", counts.join(" "), self.failed);
    }
}

/// `n` calls of `GET /`, `concurrency` at a time.
async fn load(client: &Client, n: usize, concurrency: usize) -> Tally {
    let results: Vec<Result<String, BoxError>> = stream::iter(0..n)
        .map(|_| {
            let client = client.clone();
            async move {
                let req = Request::get("/").body(tower_mesh::mesh::RequestBody::empty())?;
                let rsp = client.oneshot(req).await?;
                if rsp.status() != StatusCode::OK {
                    return Err(format!("status {}", rsp.status()).into());
                }
                let body = rsp.into_body().collect().await?.to_bytes();
                Ok(String::from_utf8(body.to_vec())?)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut tally = Tally::default();
    for r in results {
        match r {
            Ok(name) => *tally.by_server.entry(name).or_default() += 1,
            Err(e) => {
                tally.failed += 1;
                eprintln!("  call failed: {e}");
            }
        }
    }
    tally
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let db =
        std::env::temp_dir().join(format!("tower-mesh-hyper-client-{}.db", std::process::id()));
    // Removed when dropped, also when a check below fails and panics.
    let db = TempDb(db);
    run(&db.0).await
}

async fn run(db: &std::path::Path) -> Result<(), BoxError> {
    let servers = [
        Server::start("a").await?,
        Server::start("b").await?,
        Server::start("c").await?,
    ];
    let mesh = Mesh::builder()
        .registry_url(format!("sqlite://{}?mode=rwc", db.display()))
        .build()
        .await?;
    let mut greeter = Microservice::new("greeter", "1.0.0");
    for s in &servers {
        greeter = greeter.endpoint(format!("http://{}", s.addr));
    }
    mesh.register_service(&greeter).await?;
    let client = mesh.client("greeter")?;
    println!(
        "3 servers registered; strategy {}",
        mesh.policies("greeter")?.strategy.name
    );

    // 1. Even spread.
    let even = load(&client, 300, 8).await;
    even.print("1. all healthy (p2c)", &servers);
    assert_eq!(even.failed, 0);
    for s in &servers {
        assert!(
            even.of(s.name) >= 30,
            "{} got {} of 300",
            s.name,
            even.of(s.name)
        );
    }

    // 2. `b` is slow: peak EWMA moves the traffic to `a` and `c`.
    let b = &servers[1];
    b.delay_ms.store(200, Ordering::Relaxed);
    let slow = load(&client, 300, 8).await;
    slow.print("2. b answers 200 ms late (p2c)", &servers);
    assert_eq!(slow.failed, 0);
    assert!(
        slow.of("b") <= 15,
        "b got {} of 300 while slow",
        slow.of("b")
    );

    // 3. `b` is killed; it stays registered (a crash deregisters nothing).
    b.kill().await;
    let killed = load(&client, 300, 8).await;
    killed.print("3. b killed (p2c)", &servers);
    assert_eq!(killed.failed, 0);
    assert_eq!(killed.of("b"), 0);

    // 4. Still killed, with a strategy that ignores latency.
    mesh.set_strategy(
        "greeter",
        StrategyPolicy {
            name: "round_robin".to_owned(),
            ..StrategyPolicy::default()
        },
    )?;
    let rr = load(&client, 300, 8).await;
    rr.print("4. b killed (round_robin)", &servers);
    assert_eq!(rr.failed, 0);
    assert_eq!(rr.of("b"), 0);
    // The balancer's view: `b` is still discovered (still registered) but not ready.
    let endpoints = client.balance().endpoints();
    let name_of = |key: &str| {
        servers
            .iter()
            .find(|s| s.addr.to_string() == key)
            .map_or("?", |s| s.name)
    };
    let view: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let state = if e.ready { "ready" } else { "not ready" };
            format!("{} {state}", name_of(e.key.as_str()))
        })
        .collect();
    println!("   balancer: {}", view.join(", "));
    let b_state = endpoints
        .iter()
        .find(|e| name_of(e.key.as_str()) == "b")
        .ok_or("b is still registered, so still discovered")?;
    assert!(!b_state.ready, "b's endpoint should be out of the rotation");
    match client.outlier().ejection(&b_state.key) {
        Some(e) => println!("   outlier detection: b ejected ({})", e.reason),
        None => println!("   outlier detection: b not ejected (its endpoint breaker is open)"),
    }

    let total = even.failed + slow.failed + killed.failed + rr.failed;
    println!("hyper_client: 1200 calls, {total} failed; b took no call after it was killed");
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
