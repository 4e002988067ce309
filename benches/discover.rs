//! Discovery benchmarks:
//!
//! - `load-10k`: from an SQLite registry holding 10,000 instances of one service to a discover
//!   set holding 10,000 HTTP endpoints, against the raw `SELECT` of the same rows through sqlx
//!   plus making the same endpoints (target: at most 1.5x);
//! - `propagation`: from `register()` to the `Change::Insert` on the stream, per backend
//!   (memory; SQLite and PostgreSQL with the watcher in another registry, as another process
//!   would be: SQLite polls every 10 ms, PostgreSQL is woken by NOTIFY).
//!
//! `cargo bench --all-features --bench discover -- --warm-up-time 1 --measurement-time 3`
//!
//! `DISCOVER_PROFILE=ours|raw[:iterations]` runs one side of `load-10k` only, for a profiler;
//! `DISCOVER_PROFILE=compare[:rounds]` alternates the two and prints the fastest and median.

use std::collections::HashMap;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use futures_util::StreamExt;
use sqlx::Row;
use tokio::runtime::Runtime;
use tower::discover::Change;
use tower_mesh::discover::{HttpEndpoint, HttpEndpoints, MakeEndpoint, RegistryDiscover};
use tower_mesh::instance::{Instance, InstanceId};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{MemoryRegistry, Registration, Registry};

const N: usize = 10_000;

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn temp_sqlite(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("tm-dbench-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    format!("sqlite://{}", path.display())
}

fn inst(n: usize) -> Instance {
    Instance::builder("orders", format!("o-{n}"))
        .host(format!("10.0.{}.{}", n / 250, n % 250 + 1))
        .port(8080)
        .version("1.0.0")
        .metadata("team", "core")
        .build()
        .unwrap()
}

/// Loads the 10,000 instances through a discover stream into a set of HTTP endpoints.
async fn ours(registry: &SqlRegistry) -> HashMap<InstanceId, HttpEndpoint> {
    let mut d = RegistryDiscover::new(registry.clone(), "orders", HttpEndpoints::new());
    let mut set = HashMap::with_capacity(N);
    while set.len() < N {
        match d.next().await {
            Some(Ok(Change::Insert(k, s))) => {
                set.insert(k, s);
            }
            other => panic!("{other:?}"),
        }
    }
    set
}

/// The same rows through a typed sqlx pool, decoded into the same instances, into the same set
/// of the same endpoints.
async fn raw(pool: &sqlx::SqlitePool) -> HashMap<InstanceId, HttpEndpoint> {
    let rows = sqlx::query(
        "SELECT service, instance_id, host, port, scheme, version, weight, zone, \
         metadata, health FROM mesh_instances WHERE service = ?",
    )
    .bind("orders")
    .fetch_all(pool)
    .await
    .unwrap();
    let mut factory = HttpEndpoints::new();
    let mut set = HashMap::with_capacity(N);
    for row in rows {
        let id: String = row.get(1);
        let host: String = row.get(2);
        let port: i64 = row.get(3);
        let version: String = row.get(5);
        let metadata: String = row.get(8);
        let metadata: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&metadata).unwrap();
        let i = Instance::builder("orders", id)
            .host(host)
            .port(port as u32)
            .version(version)
            .metadata_map(metadata)
            .build()
            .unwrap();
        set.insert(i.id().clone(), factory.make_endpoint(&i));
    }
    set
}

fn setup(rt: &Runtime) -> (SqlRegistry, sqlx::SqlitePool) {
    let url = temp_sqlite("load");
    let registry = rt.block_on(SqlRegistry::connect(&url)).unwrap();
    let regs: Vec<Registration> = (0..N).map(|n| inst(n).into()).collect();
    rt.block_on(registry.register_all(regs)).unwrap();
    let pool = rt.block_on(sqlx::SqlitePool::connect(&url)).unwrap();
    (registry, pool)
}

fn load(c: &mut Criterion) {
    let rt = rt();
    // Pools clean up on the runtime when dropped.
    let _enter = rt.enter();
    let (registry, pool) = setup(&rt);
    assert_eq!(
        rt.block_on(ours(&registry)).len(),
        rt.block_on(raw(&pool)).len()
    );
    let mut group = c.benchmark_group("load-10k");
    group.sample_size(10);
    group.bench_function("registry-discover", |b| {
        b.to_async(&rt).iter(|| ours(&registry))
    });
    group.bench_function("raw-select-and-endpoints", |b| {
        b.to_async(&rt).iter(|| raw(&pool))
    });
    group.finish();
}

/// `DISCOVER_PROFILE=ours|raw[:iterations]`: set up, then only load that many times (default
/// 20), for `perf record` or `valgrind --tool=callgrind` (compare with 0 iterations to subtract
/// the setup). `DISCOVER_PROFILE=compare[:rounds]`: alternate one load of each side per round
/// (default 40) and print each side's fastest and median load: on a shared machine other
/// processes only ever add time, so the fastest loads are the ones to compare.
fn profile(which: &str) {
    let (side, iterations) = which.split_once(':').unwrap_or((which, "20"));
    let iterations: usize = iterations.parse().unwrap();
    let rt = rt();
    let _enter = rt.enter();
    let (registry, pool) = setup(&rt);
    if side == "compare" {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..iterations {
            let start = tokio::time::Instant::now();
            assert_eq!(rt.block_on(ours(&registry)).len(), N);
            a.push(start.elapsed());
            let start = tokio::time::Instant::now();
            assert_eq!(rt.block_on(raw(&pool)).len(), N);
            b.push(start.elapsed());
        }
        a.sort();
        b.sort();
        let (fa, fb, ma, mb) = (a[0], b[0], a[a.len() / 2], b[b.len() / 2]);
        println!(
            "load-10k over {iterations} rounds: ours fastest {fa:.1?} median {ma:.1?}; raw fastest {fb:.1?} median {mb:.1?}; ratio fastest {:.3} median {:.3}",
            fa.as_secs_f64() / fb.as_secs_f64(),
            ma.as_secs_f64() / mb.as_secs_f64(),
        );
        return;
    }
    for _ in 0..iterations {
        let n = match side {
            "ours" => rt.block_on(ours(&registry)).len(),
            "raw" => rt.block_on(raw(&pool)).len(),
            other => panic!("DISCOVER_PROFILE={other}: ours, raw or compare"),
        };
        assert_eq!(n, N);
    }
}

fn propagation(c: &mut Criterion) {
    let rt = rt();
    let _enter = rt.enter();
    let mut group = c.benchmark_group("propagation");
    let mut backends: Vec<(&str, MakePair<'_>)> = Vec::new();
    backends.push((
        "memory",
        Box::new(|| {
            let r = MemoryRegistry::new();
            (Writer::Memory(r.clone()), Watcher::Memory(r))
        }),
    ));
    let sqlite = temp_sqlite("prop");
    let rt2 = &rt;
    backends.push((
        "sqlite-other-process-10ms-poll",
        Box::new(move || {
            let w = rt2.block_on(SqlRegistry::connect(&sqlite)).unwrap();
            let r = rt2
                .block_on(
                    SqlRegistry::builder(&sqlite)
                        .poll_interval(Duration::from_millis(10))
                        .connect(),
                )
                .unwrap();
            (Writer::Sql(w), Watcher::Sql(r))
        }),
    ));
    if let Ok(base) = std::env::var("TOWER_MESH_TEST_POSTGRES") {
        let url = rt.block_on(async {
            use sqlx::{Connection, Executor};
            sqlx::any::install_default_drivers();
            let name = format!("tm_dbench_{}", std::process::id());
            let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await;
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            let mut u = url::Url::parse(&base).unwrap();
            u.set_path(&format!("/{name}"));
            u.to_string()
        });
        backends.push((
            "postgres-other-process-notify",
            Box::new(move || {
                let w = rt2.block_on(SqlRegistry::connect(&url)).unwrap();
                let r = rt2.block_on(SqlRegistry::connect(&url)).unwrap();
                (Writer::Sql(w), Watcher::Sql(r))
            }),
        ));
    }
    for (name, make) in &backends {
        let (writer, watcher) = make();
        let mut d = match &watcher {
            Watcher::Memory(r) => Either::A(RegistryDiscover::new(
                r.clone(),
                "orders",
                |i: &Instance| i.port(),
            )),
            Watcher::Sql(r) => Either::B(RegistryDiscover::new(
                r.clone(),
                "orders",
                |i: &Instance| i.port(),
            )),
        };
        let mut port = 1u32;
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = tokio::time::Instant::now();
                    for _ in 0..iters {
                        port = port % 60_000 + 1;
                        writer
                            .register(
                                Instance::builder("orders", "p-1")
                                    .port(port)
                                    .build()
                                    .unwrap(),
                            )
                            .await;
                        loop {
                            let change = match &mut d {
                                Either::A(d) => d.next().await,
                                Either::B(d) => d.next().await,
                            };
                            if let Some(Ok(Change::Insert(_, p))) = change {
                                if p as u32 == port {
                                    break;
                                }
                            }
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Makes a writer and a watcher on one backend.
type MakePair<'a> = Box<dyn Fn() -> (Writer, Watcher) + 'a>;

enum Writer {
    Memory(MemoryRegistry),
    Sql(SqlRegistry),
}

impl Writer {
    async fn register(&self, i: Instance) {
        match self {
            Writer::Memory(r) => r.register(i.into()).await.unwrap(),
            Writer::Sql(r) => r.register(i.into()).await.unwrap(),
        };
    }
}

enum Watcher {
    Memory(MemoryRegistry),
    Sql(SqlRegistry),
}

enum Either<A, B> {
    A(A),
    B(B),
}

fn estimate(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let text =
        std::fs::read_to_string(format!("{dir}/criterion/{group}/{id}/new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

criterion_group!(benches, load, propagation);

fn main() {
    if let Ok(which) = std::env::var("DISCOVER_PROFILE") {
        profile(&which);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        if let (Some(ours), Some(raw)) = (
            estimate("load-10k", "registry-discover"),
            estimate("load-10k", "raw-select-and-endpoints"),
        ) {
            println!(
                "ratio load-10k (ours / raw select + endpoints): {:.3} (target <= 1.5)",
                ours / raw
            );
        }
        for id in [
            "memory",
            "sqlite-other-process-10ms-poll",
            "postgres-other-process-notify",
        ] {
            if let Some(ns) = estimate("propagation", id) {
                println!("propagation {id}: {:.1} us", ns / 1000.0);
            }
        }
    }
}
