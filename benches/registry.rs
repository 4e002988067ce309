//! Registry benchmarks, each a ratio against a baseline measured in the same run:
//!
//! - heartbeat: `SqlRegistry::heartbeat` against the same `UPDATE` through raw sqlx (SQLite,
//!   and PostgreSQL when `TOWER_MESH_TEST_POSTGRES` is set);
//! - batch: `register_all` of 100 instances against 100 `register` calls (per instance);
//! - watch latency: register-to-event against a bare tokio broadcast (memory) and a raw
//!   upsert + NOTIFY + LISTEN round trip (PostgreSQL); for polling backends the p50/p99 of
//!   register-to-event over the poll interval.
//!
//! `cargo bench --bench registry -- --warm-up-time 1 --measurement-time 3` prints the ratios
//! at the end.

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt;
use sqlx::{Connection, Executor};
use tokio::runtime::Runtime;
use tower_mesh::instance::{Instance, InstanceId, ServiceName};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{MemoryRegistry, Registration, Registry, Revision};

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn inst(id: &str, port: u32) -> Instance {
    Instance::builder("orders", id).port(port).build().unwrap()
}

fn leased(id: &str, port: u32) -> Registration {
    Registration::new(inst(id, port))
        .with_ttl(Duration::from_secs(3600))
        .unwrap()
}

fn temp_sqlite(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("tm-bench-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    format!("sqlite://{}", path.display())
}

async fn fresh_pg(base: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("tm_bench_{}", std::process::id());
    let mut conn = sqlx::AnyConnection::connect(base).await.unwrap();
    let _ = conn
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let mut url = url::Url::parse(base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

const HEARTBEAT_SQL: &str = "UPDATE mesh_instances SET expires_at_ms = ? + ttl_ms \
     WHERE service = ? AND instance_id = ? AND ttl_ms IS NOT NULL AND lease_expired = 0";

/// PostgreSQL leases follow the server's clock: the deadline is computed in the statement.
const HEARTBEAT_SQL_PG: &str = "UPDATE mesh_instances SET expires_at_ms = \
     (CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp()) * 1000) AS BIGINT) + $1) + ttl_ms \
     WHERE service = $2 AND instance_id = $3 AND ttl_ms IS NOT NULL AND lease_expired = 0";

fn heartbeat(c: &mut Criterion) {
    let rt = rt();
    // Pools and listeners clean up on the runtime when dropped.
    let _enter = rt.enter();
    let mut group = c.benchmark_group("heartbeat");
    group.throughput(Throughput::Elements(1));
    let mut targets = vec![("sqlite", temp_sqlite("hb"))];
    if let Ok(base) = std::env::var("TOWER_MESH_TEST_POSTGRES") {
        targets.push(("postgres", rt.block_on(fresh_pg(&base))));
    }
    for (backend, url) in targets {
        let registry = rt.block_on(SqlRegistry::connect(&url)).unwrap();
        rt.block_on(registry.register(leased("o-1", 8001))).unwrap();
        let service: ServiceName = "orders".parse().unwrap();
        let id: InstanceId = "o-1".parse().unwrap();
        group.bench_function(BenchmarkId::new("tower-mesh", backend), |b| {
            b.to_async(&rt)
                .iter(|| async { registry.heartbeat(&service, &id).await.unwrap() })
        });
        // The same statement through a typed sqlx pool of the same size.
        match backend {
            "sqlite" => {
                let pool = rt
                    .block_on(
                        sqlx::sqlite::SqlitePoolOptions::new()
                            .max_connections(10)
                            .connect(&url),
                    )
                    .unwrap();
                let mut now = 1_i64;
                group.bench_function(BenchmarkId::new("raw-sqlx", backend), |b| {
                    b.to_async(&rt).iter(|| {
                        now += 1;
                        let pool = pool.clone();
                        async move {
                            sqlx::query(HEARTBEAT_SQL)
                                .bind(now)
                                .bind("orders")
                                .bind("o-1")
                                .execute(&pool)
                                .await
                                .unwrap()
                        }
                    })
                });
            }
            _ => {
                let pool = rt
                    .block_on(
                        sqlx::postgres::PgPoolOptions::new()
                            .max_connections(10)
                            .connect(&url),
                    )
                    .unwrap();
                group.bench_function(BenchmarkId::new("raw-sqlx", backend), |b| {
                    b.to_async(&rt).iter(|| {
                        let pool = pool.clone();
                        async move {
                            sqlx::query(HEARTBEAT_SQL_PG)
                                .bind(0_i64)
                                .bind("orders")
                                .bind("o-1")
                                .execute(&pool)
                                .await
                                .unwrap()
                        }
                    })
                });
            }
        }
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let rt = rt();
    let _enter = rt.enter();
    let mut group = c.benchmark_group("register-100");
    group.throughput(Throughput::Elements(100));
    group.sample_size(10);
    let url = temp_sqlite("batch");
    let registry = rt.block_on(SqlRegistry::connect(&url)).unwrap();
    let regs: Vec<Registration> = (0..100)
        .map(|n| inst(&format!("o-{n}"), 1 + n).into())
        .collect();
    group.bench_function("batched", |b| {
        b.to_async(&rt)
            .iter(|| async { registry.register_all(regs.clone()).await.unwrap() })
    });
    group.bench_function("one-by-one", |b| {
        b.to_async(&rt).iter(|| async {
            for r in regs.iter().cloned() {
                registry.register(r).await.unwrap();
            }
        })
    });
    group.finish();
}

fn watch_latency(c: &mut Criterion) {
    let rt = rt();
    let _enter = rt.enter();
    let mut group = c.benchmark_group("register-to-event");
    // Memory against a bare broadcast wake (send, then a woken receiver).
    let registry = MemoryRegistry::with_options(Default::default(), 1024).unwrap();
    let service: ServiceName = "orders".parse().unwrap();
    let mut watch = rt.block_on(async { registry.watch(&service, Revision::ZERO) });
    let reg = inst("o-1", 8001);
    group.bench_function("memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    registry.register(reg.clone().into()).await.unwrap();
                    watch.next().await.unwrap().unwrap();
                }
                start.elapsed()
            })
        })
    });
    let (tx, mut rx) = tokio::sync::broadcast::channel::<std::sync::Arc<Instance>>(1024);
    let shared = std::sync::Arc::new(reg.clone());
    group.bench_function("broadcast-baseline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    tx.send(shared.clone()).unwrap();
                    rx.recv().await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    // The same, with the watcher a separate, parked task that must be woken: what a watcher
    // really is. A reply channel (the same for both) tells the writer the event arrived.
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    group.bench_function("memory-wake", |b| {
        b.iter_custom(|iters| {
            local.block_on(async {
                let registry = MemoryRegistry::with_options(Default::default(), 1024).unwrap();
                let mut watch = registry.watch(&service, Revision::ZERO);
                let (done, mut arrived) = tokio::sync::mpsc::channel::<()>(1);
                let watcher = tokio::spawn(async move {
                    while let Some(Ok(_)) = watch.next().await {
                        if done.send(()).await.is_err() {
                            break;
                        }
                    }
                });
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    registry.register(reg.clone().into()).await.unwrap();
                    arrived.recv().await.unwrap();
                }
                let elapsed = start.elapsed();
                watcher.abort();
                elapsed
            })
        })
    });
    group.bench_function("broadcast-wake-baseline", |b| {
        b.iter_custom(|iters| {
            local.block_on(async {
                let (tx, mut rx) =
                    tokio::sync::broadcast::channel::<std::sync::Arc<Instance>>(1024);
                let (done, mut arrived) = tokio::sync::mpsc::channel::<()>(1);
                let watcher = tokio::spawn(async move {
                    while rx.recv().await.is_ok() {
                        if done.send(()).await.is_err() {
                            break;
                        }
                    }
                });
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    tx.send(shared.clone()).unwrap();
                    arrived.recv().await.unwrap();
                }
                let elapsed = start.elapsed();
                watcher.abort();
                elapsed
            })
        })
    });

    if let Ok(base) = std::env::var("TOWER_MESH_TEST_POSTGRES") {
        let url = rt.block_on(fresh_pg(&base));
        // Writer and watcher are separate registries: the wake-up comes through NOTIFY.
        let writer = rt.block_on(SqlRegistry::connect(&url)).unwrap();
        let watcher = rt.block_on(SqlRegistry::connect(&url)).unwrap();
        let mut watch = rt.block_on(async {
            let mut w = watcher.watch(&service, Revision::ZERO);
            writer.register(reg.clone().into()).await.unwrap();
            w.next().await.unwrap().unwrap();
            w
        });
        group.bench_function("postgres", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = tokio::time::Instant::now();
                    for _ in 0..iters {
                        writer.register(reg.clone().into()).await.unwrap();
                        watch.next().await.unwrap().unwrap();
                    }
                    start.elapsed()
                })
            })
        });
        // Raw: the same upsert and a NOTIFY in one transaction, received by a PgListener.
        let pool = rt.block_on(sqlx::PgPool::connect(&url)).unwrap();
        let mut listener = rt.block_on(async {
            let mut l = sqlx::postgres::PgListener::connect(&url).await.unwrap();
            l.listen("bench_raw").await.unwrap();
            l
        });
        let upsert = "INSERT INTO mesh_instances (service, instance_id, host, port, scheme, version, weight, zone, metadata, health, ttl_ms, expires_at_ms, lease_expired, revision) \
                      VALUES ($1, $2, '127.0.0.1', 8001, 'http', '0.0.0', 100, NULL, '{}', 'passing', NULL, NULL, 0, 1) \
                      ON CONFLICT (service, instance_id) DO UPDATE SET port = excluded.port, revision = excluded.revision";
        group.bench_function("postgres-raw-upsert-notify", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = tokio::time::Instant::now();
                    for _ in 0..iters {
                        let mut tx = pool.begin().await.unwrap();
                        sqlx::query(upsert)
                            .bind("raw")
                            .bind("r-1")
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                        tx.execute("NOTIFY bench_raw").await.unwrap();
                        tx.commit().await.unwrap();
                        listener.recv().await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Register-to-event latency of a polling watcher in another registry (no local wake-up),
/// writes at random phases of the poll interval: p50 and p99 over the interval.
fn polling_latency(rt: &Runtime, backend: &str, url: &str, interval: Duration, samples: usize) {
    use rand::{Rng, SeedableRng};
    let (p50, p99) = rt.block_on(async {
        let writer = SqlRegistry::connect(url).await.unwrap();
        let watcher = SqlRegistry::builder(url)
            .poll_interval(interval)
            .connect()
            .await
            .unwrap();
        let service: ServiceName = "polled".parse().unwrap();
        let mut watch = watcher.watch(&service, writer.revision().await.unwrap());
        // The watcher runs in its own task, as a real consumer does, stamping each arrival.
        let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
        let consumer = tokio::spawn(async move {
            while let Some(Ok(_)) = watch.next().await {
                if arrived.send(tokio::time::Instant::now()).is_err() {
                    break;
                }
            }
        });
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut lat = Vec::with_capacity(samples);
        for n in 0..samples {
            tokio::time::sleep(interval.mul_f64(rng.random_range(0.0..1.0))).await;
            let i = Instance::builder("polled", "p-1")
                .port(1 + n as u32)
                .build()
                .unwrap();
            let start = tokio::time::Instant::now();
            writer.register(i.into()).await.unwrap();
            let at = arrivals.recv().await.unwrap();
            lat.push(at.duration_since(start));
        }
        consumer.abort();
        lat.sort();
        (lat[samples / 2], lat[(samples * 99).div_ceil(100) - 1])
    });
    println!(
        "ratio polling-{backend}: p50 {:.3} x interval (target <= 0.6), p99 {:.3} x interval (target <= 1.05)  [{samples} samples, interval {interval:?}]",
        p50.as_secs_f64() / interval.as_secs_f64(),
        p99.as_secs_f64() / interval.as_secs_f64()
    );
}

fn estimate(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!("{dir}/criterion/{group}/{id}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn report() {
    let ratio = |name: &str, ours: (&str, &str), base: (&str, &str), target: &str| {
        if let (Some(o), Some(b)) = (estimate(ours.0, ours.1), estimate(base.0, base.1)) {
            println!("ratio {name}: {:.3} (target {target})", o / b);
        }
    };
    ratio(
        "heartbeat throughput sqlite (raw time / ours)",
        ("heartbeat", "raw-sqlx/sqlite"),
        ("heartbeat", "tower-mesh/sqlite"),
        ">= 0.8",
    );
    ratio(
        "heartbeat throughput postgres (raw time / ours)",
        ("heartbeat", "raw-sqlx/postgres"),
        ("heartbeat", "tower-mesh/postgres"),
        ">= 0.8",
    );
    ratio(
        "batched registration speed-up (one-by-one / batched)",
        ("register-100", "one-by-one"),
        ("register-100", "batched"),
        ">= 10",
    );
    ratio(
        "memory watch latency, watcher woken in its own task (ours / broadcast wake)",
        ("register-to-event", "memory-wake"),
        ("register-to-event", "broadcast-wake-baseline"),
        "<= 3",
    );
    ratio(
        "memory watch latency, same task, no wake (ours / broadcast send+recv)",
        ("register-to-event", "memory"),
        ("register-to-event", "broadcast-baseline"),
        "informational",
    );
    ratio(
        "postgres watch latency (ours / raw upsert+notify)",
        ("register-to-event", "postgres"),
        ("register-to-event", "postgres-raw-upsert-notify"),
        "<= 1.3",
    );
}

criterion_group!(benches, heartbeat, batch, watch_latency);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench --no-run` never gets here; `cargo test --benches` passes `--test`: skip the
    // slow latency sampling there.
    if args.iter().any(|a| a == "--bench") {
        let rt = rt();
        let _enter = rt.enter();
        let interval = Duration::from_millis(100);
        polling_latency(&rt, "sqlite", &temp_sqlite("poll"), interval, 100);
        if let Ok(base) = std::env::var("TOWER_MESH_TEST_MYSQL") {
            let url = rt.block_on(async {
                let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
                let name = format!("tm_bench_{}", std::process::id());
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
            polling_latency(&rt, "mysql", &url, interval, 100);
        }
        report();
    }
}
