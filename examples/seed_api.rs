//! The original sketch's flow through the `Mesh` facade, step by step: `register_service`,
//! `list_services`, `discover_service`, `search_services` (with a `ServiceFilter`),
//! `call_service`, `service_health`, `unregister_service`, printing each step's result.
//!
//! Two `greeter` servers and one `grades` server run on loopback; the registry is an embedded
//! SQLite file in the temporary directory, removed at the end.
//!
//! Run it with `cargo run --example seed_api --features mesh`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tower::BoxError;
use tower_mesh::instance::Microservice;
use tower_mesh::mesh::policy::Policies;
use tower_mesh::mesh::{Mesh, ServiceFilter};

/// An HTTP server on loopback answering `GET /hello` with `hello from NAME`.
async fn server(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(move || async move { format!("hello from {name}") }),
    );
    tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener, app,
    )));
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let db = std::env::temp_dir().join(format!("tower-mesh-seed-api-{}.db", std::process::id()));
    // Removed when dropped, also when a check below fails and panics.
    let db = TempDb(db);
    run(&db.0).await
}

async fn run(db: &std::path::Path) -> Result<(), BoxError> {
    let greeter_1 = server("greeter-1").await?;
    let greeter_2 = server("greeter-2").await?;
    let grades_1 = server("grades-1").await?;

    // A short timeout, so that calling a service with no instance left fails quickly.
    let mesh = Mesh::builder()
        .registry_url(format!("sqlite://{}?mode=rwc", db.display()))
        .defaults(Policies {
            timeout: Duration::from_secs(1),
            ..Policies::default()
        })
        .build()
        .await?;

    // register_service: one instance per endpoint, id `host:port`.
    let greeter = Microservice::new("greeter", "1.0.0")
        .endpoint(format!("http://{greeter_1}"))
        .endpoint(format!("http://{greeter_2}"))
        .metadata("team", "web");
    let grades = Microservice::new("grades", "2.3.0")
        .endpoint(format!("http://{grades_1}"))
        .metadata("team", "school");
    let ids = mesh.register_service(&greeter).await?;
    println!("register_service(greeter) -> {} instances", ids.len());
    let ids = mesh.register_service(&grades).await?;
    println!("register_service(grades) -> {} instance", ids.len());

    // list_services
    let services = mesh.list_services().await?;
    let names: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
    println!("list_services() -> {names:?}");
    assert_eq!(names, ["grades", "greeter"]);

    // discover_service
    let instances = mesh.discover_service("greeter").await?;
    for i in &instances {
        println!(
            "discover_service(greeter) -> {} v{} {} ({})",
            i.id(),
            i.version(),
            i.authority(),
            i.health()
        );
    }
    assert_eq!(instances.len(), 2);

    // search_services: every condition must hold.
    let by_prefix = ServiceFilter::new().name_prefix("gr").version("2.3.0");
    let found = mesh.search_services(&by_prefix).await?;
    println!(
        "search_services(prefix \"gr\", version 2.3.0) -> {:?}",
        found
            .iter()
            .map(|i| format!("{}/{}", i.service(), i.id()))
            .collect::<Vec<_>>()
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].service().as_str(), "grades");
    let by_team = ServiceFilter::new().metadata("team", "web");
    let found = mesh.search_services(&by_team).await?;
    println!(
        "search_services(team = web) -> {} instances of {:?}",
        found.len(),
        found.first().map(|i| i.service().as_str())
    );
    assert_eq!(found.len(), 2);

    // call_service: the mesh picks the endpoint; the request carries a path only.
    let mut greeted = Vec::new();
    for _ in 0..4 {
        let rsp = mesh
            .call_service(
                "greeter",
                Request::get("/hello").body(Empty::<Bytes>::new())?,
            )
            .await?;
        assert_eq!(rsp.status(), StatusCode::OK);
        let body = rsp.into_body().collect().await?.to_bytes();
        greeted.push(String::from_utf8(body.to_vec())?);
    }
    println!("call_service(greeter, GET /hello) x4 -> {greeted:?}");
    assert!(greeted.iter().all(|g| g.starts_with("hello from greeter-")));

    // service_health
    let health = mesh.service_health("greeter").await?;
    let counts = health.counts();
    println!(
        "service_health(greeter) -> {} passing, {} critical, {} ejected",
        counts.passing, counts.critical, counts.ejected
    );
    assert_eq!((counts.passing, counts.critical), (2, 0));

    // unregister_service: the instances go; calls then find no endpoint.
    let removed = mesh.unregister_service(&greeter).await?;
    println!("unregister_service(greeter) -> {removed} removed");
    assert_eq!(removed, 2);
    let left = mesh.discover_service("greeter").await?;
    println!("discover_service(greeter) -> {} instances", left.len());
    assert!(left.is_empty());
    // The client learns of the removal through the registry's watch, a moment later: a
    // call made meanwhile may still reach an old instance.
    let mut late = 0;
    let err = loop {
        let req = Request::get("/hello").body(Empty::<Bytes>::new())?;
        match mesh.call_service("greeter", req).await {
            Ok(_) if late < 20 => {
                late += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => return Err("greeter still answers 1 s after unregister_service".into()),
            Err(err) => break err,
        }
    };
    println!(
        "call_service(greeter) -> error: {err} (HTTP {}; {late} calls served before the client saw the removal)",
        err.status()
    );
    assert!(err.is_no_endpoints(), "{err:?}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);

    let services = mesh.list_services().await?;
    println!(
        "list_services() -> {:?}",
        services.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );
    println!("seed_api: every step did what it says");
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
