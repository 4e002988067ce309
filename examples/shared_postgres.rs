//! Two meshes and a health checker sharing one PostgreSQL registry, as separate processes
//! (or machines) would.
//!
//! Mesh A registers `orders-1` with a lease (`register_service_with_ttl`, kept alive by
//! heartbeats); mesh B sees it through the registry and calls it. A second instance,
//! `orders-2`, declares an HTTP health check that fails (`/healthz` answers 503, though it
//! still serves calls): both meshes send it its share (round robin) until the health
//! checker, with its own connection to the registry, marks it critical; from then on neither
//! mesh sends it anything.
//!
//! Needs a PostgreSQL server: set `TOWER_MESH_TEST_POSTGRES` to a database URL
//! (`postgres://postgres@127.0.0.1:5432/test`); the example creates a fresh database next to
//! that one and drops it at the end. Without the variable it prints one line and exits 0.
//!
//! Run it with
//! `TOWER_MESH_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test cargo run --example shared_postgres --features mesh,registry-postgres`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use tower::BoxError;
use tower_mesh::health::HealthChecker;
use tower_mesh::instance::{Check, Health, Instance, Microservice};
use tower_mesh::mesh::policy::{PolicyOverrides, StrategyOverride};
use tower_mesh::mesh::Mesh;
use tower_mesh::registry::{AnyRegistry, Registration, Registry};

/// An HTTP server on loopback answering calls with `name`, and `/healthz` with `health`.
async fn server(name: &'static str, health: StatusCode) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/orders", axum::routing::get(move || async move { name }))
        .route(
            "/healthz",
            axum::routing::get(move || async move { health }),
        );
    tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener, app,
    )));
    Ok(addr)
}

/// `n` calls of `GET /orders` through `mesh`: answers by instance.
async fn calls(mesh: &Mesh, n: usize) -> Result<BTreeMap<String, usize>, BoxError> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let rsp = mesh
            .call_service(
                "orders",
                Request::get("/orders").body(Empty::<Bytes>::new())?,
            )
            .await?;
        let body = rsp.into_body().collect().await?.to_bytes();
        *seen.entry(String::from_utf8(body.to_vec())?).or_default() += 1;
    }
    Ok(seen)
}

/// Calls through `mesh` until its client's balancer holds exactly `want` (by instance id):
/// the balancer takes discovery's changes when it is next asked for an endpoint.
async fn wait_for_endpoints(mesh: &Mesh, want: &[&str]) -> Result<(), BoxError> {
    let client = mesh.client("orders")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut held: Vec<String> = client
            .balance()
            .discovered()
            .iter()
            .map(|id| id.to_string())
            .collect();
        held.sort();
        if held == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the balancer holds {held:?}, not {want:?}").into());
        }
        calls(mesh, 1).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn show(what: &str, seen: &BTreeMap<String, usize>) {
    let counts: Vec<String> = ["orders-1", "orders-2"]
        .iter()
        .map(|n| format!("{n}={:>2}", seen.get(*n).copied().unwrap_or(0)))
        .collect();
    println!("{what:<40} {}", counts.join(" "));
}

async fn mesh(url: &str) -> Result<Mesh, BoxError> {
    // Round robin, so that every instance in the rotation gets its share.
    let orders = PolicyOverrides {
        strategy: Some(StrategyOverride {
            name: Some("round_robin".to_owned()),
            hash_header: None,
        }),
        timeout: Some(Duration::from_secs(2)),
        ..PolicyOverrides::default()
    };
    Ok(Mesh::builder()
        .registry_url(url)
        .service("orders", orders)
        .build()
        .await?)
}

async fn run(url: String) -> Result<(), BoxError> {
    let healthy = server("orders-1", StatusCode::OK).await?;
    let failing = server("orders-2", StatusCode::SERVICE_UNAVAILABLE).await?;
    let mesh_a = mesh(&url).await?;
    let mesh_b = mesh(&url).await?;

    // Mesh A registers orders-1 with a lease; mesh B sees it and calls it.
    let orders_1 = Microservice::new("orders", "1.0.0").endpoint(format!("http://{healthy}"));
    let lease = mesh_a
        .register_service_with_ttl(&orders_1, Duration::from_secs(3))
        .await?;
    let orders_1_id = lease
        .instances()
        .next()
        .ok_or("one instance")?
        .id()
        .to_string();
    println!("mesh A registered orders-1 as {orders_1_id} with a 3 s lease");
    wait_for_endpoints(&mesh_b, &[orders_1_id.as_str()]).await?;
    let seen = mesh_b.discover_service("orders").await?;
    println!(
        "mesh B discovers {:?}",
        seen.iter()
            .map(|i| format!("{} ({})", i.id(), i.health()))
            .collect::<Vec<_>>()
    );
    let b_calls = calls(&mesh_b, 10).await?;
    show("mesh B calls orders x10", &b_calls);
    assert_eq!(b_calls.get("orders-1"), Some(&10));

    // orders-2 declares a health check that fails.
    let check = Check::http("/healthz")
        .interval(Duration::from_millis(200))
        .timeout(Duration::from_millis(100))
        .unhealthy_threshold(2)
        .build()?;
    let orders_2 = Instance::builder("orders", "orders-2")
        .port(u32::from(failing.port()))
        .version("1.0.0")
        .check(check)
        .build()?;
    mesh_a
        .registry()
        .register(Registration::from(orders_2))
        .await?;
    let both = {
        let mut ids = vec![orders_1_id.clone(), "orders-2".to_owned()];
        ids.sort();
        ids
    };
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    wait_for_endpoints(&mesh_a, &both).await?;
    wait_for_endpoints(&mesh_b, &both).await?;
    let a_before = calls(&mesh_a, 20).await?;
    let b_before = calls(&mesh_b, 20).await?;
    show("before the check: mesh A x20", &a_before);
    show("before the check: mesh B x20", &b_before);
    assert!(a_before.get("orders-2").copied().unwrap_or(0) >= 5);
    assert!(b_before.get("orders-2").copied().unwrap_or(0) >= 5);

    // The checker, with its own connection, marks orders-2 critical.
    let checker = HealthChecker::builder("checker-1")
        .standalone()
        .spawn(AnyRegistry::connect(&url).await?)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = mesh_b.service_health("orders").await?;
        if report.counts().critical == 1 {
            break report;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("orders-2 is not critical after 10 s: {report:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let marked = report
        .with_health(Health::Critical)
        .next()
        .ok_or("a critical instance")?;
    println!(
        "checker marked {} critical: {:?}",
        marked.id(),
        marked.output().unwrap_or("")
    );
    assert_eq!(marked.id().as_str(), "orders-2");

    // Discovery offers neither mesh the critical instance any more.
    wait_for_endpoints(&mesh_a, &[orders_1_id.as_str()]).await?;
    wait_for_endpoints(&mesh_b, &[orders_1_id.as_str()]).await?;
    let a_after = calls(&mesh_a, 20).await?;
    let b_after = calls(&mesh_b, 20).await?;
    show("after the check: mesh A x20", &a_after);
    show("after the check: mesh B x20", &b_after);
    assert_eq!(a_after.get("orders-2"), None);
    assert_eq!(b_after.get("orders-2"), None);

    checker.shutdown().await;
    lease.shutdown().await?;
    println!(
        "shared_postgres: both meshes saw the leased instance and stopped calling the critical one"
    );
    Ok(())
}

/// Creates a fresh database next to the one `base` names; returns its name and URL.
async fn create_database(base: &str) -> Result<(String, String), BoxError> {
    use sqlx::{Connection, Executor};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let name = format!("tm_example_{}_{nanos}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(base).await?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let mut url = url::Url::parse(base)?;
    url.set_path(&format!("/{name}"));
    Ok((name, url.to_string()))
}

async fn drop_database(base: &str, name: &str) -> Result<(), BoxError> {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(base).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let base = match std::env::var("TOWER_MESH_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!("shared_postgres: skipped, TOWER_MESH_TEST_POSTGRES is not set");
            return Ok(());
        }
    };
    let (name, url) = create_database(&base).await?;
    // Run in a task so that the database is dropped even if the run panics.
    let result = tokio::spawn(run(url)).await;
    if let Err(e) = drop_database(&base, &name).await {
        eprintln!("could not drop the database {name}: {e}");
    }
    match result {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
}
