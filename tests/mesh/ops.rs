//! The sketch's operations on every backend, leases held by the mesh, and bad input.

use std::time::Duration;

use tower_mesh::instance::{Health, Microservice};
use tower_mesh::mesh::policy::{MeshConfig, StrategyPolicy};
use tower_mesh::mesh::{BuildError, Mesh, ServiceFilter};
use tower_mesh::registry::{LeaseConfig, MemoryRegistry, Registry};

use crate::support::{fresh_database, server_url};

/// Registers, discovers, lists, searches, reports health, calls and unregisters.
async fn sketch(url: &str) {
    let mesh = Mesh::builder().registry_url(url).build().await.unwrap();
    let a = crate::server("a").await;
    let orders = Microservice::new("orders", "2.1.0")
        .endpoint(a.endpoint())
        .endpoint("http://10.0.0.2:8080")
        .metadata("team", "payments");
    let users = Microservice::new("users", "1.0.0").endpoint("http://10.0.0.3:8080");
    let ids = mesh.register_service(&orders).await.unwrap();
    assert_eq!(ids.len(), 2);
    mesh.register_service(&users).await.unwrap();

    let found = mesh.discover_service("orders").await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|i| i.version() == "2.1.0"));
    let services = mesh.list_services().await.unwrap();
    let names: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["orders", "users"]);

    let search = |f: ServiceFilter| {
        let mesh = mesh.clone();
        async move { mesh.search_services(&f).await.unwrap().len() }
    };
    assert_eq!(search(ServiceFilter::new()).await, 3);
    assert_eq!(search(ServiceFilter::new().name_prefix("ord")).await, 2);
    assert_eq!(search(ServiceFilter::new().version("1.0.0")).await, 1);
    assert_eq!(
        search(ServiceFilter::new().metadata("team", "payments")).await,
        2
    );
    assert_eq!(search(ServiceFilter::new().zone("eu-west-1a")).await, 0);

    let health = mesh.service_health("orders").await.unwrap();
    assert_eq!(health.counts().get(Health::Passing), 2);

    // Only the instance at `a` answers; 10.0.0.2 is not routable here, so drop it first.
    let unroutable = Microservice::new("orders", "2.1.0").endpoint("http://10.0.0.2:8080");
    assert_eq!(mesh.unregister_service(&unroutable).await.unwrap(), 1);
    let rsp = mesh
        .call_service(
            "orders",
            http::Request::post("/orders")
                .body(String::from("42"))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "a 42");

    assert_eq!(mesh.unregister_service(&orders).await.unwrap(), 1);
    assert!(mesh.discover_service("orders").await.unwrap().is_empty());
    assert_eq!(mesh.unregister_service(&users).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sketch_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tm-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.db");
    sketch(&format!("sqlite://{}?mode=rwc", path.display())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sketch_on_postgres() {
    let Some(base) = server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    sketch(&fresh_database(&base).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sketch_on_mysql() {
    let Some(base) = server_url("TOWER_MESH_TEST_MYSQL") else {
        return;
    };
    sketch(&fresh_database(&base).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sketch_in_memory_and_with_a_registry_value() {
    sketch("memory:").await;
    let registry = MemoryRegistry::new();
    let mesh = Mesh::builder()
        .registry(registry.clone())
        .build()
        .await
        .unwrap();
    mesh.register_service(&Microservice::new("users", "1").endpoint("http://10.0.0.3:80"))
        .await
        .unwrap();
    // The mesh writes through to the registry it was given.
    let snapshot = registry.snapshot(&"users".parse().unwrap()).await.unwrap();
    assert_eq!(snapshot.instances().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_ttl_registration_is_kept_alive_and_shutdown_removes_it() {
    let registry = MemoryRegistry::new();
    let mesh = Mesh::builder()
        .registry(registry.clone())
        .reaper(LeaseConfig::default())
        .build()
        .await
        .unwrap();
    let orders = Microservice::new("orders", "1").endpoint("http://10.0.0.1:8080");
    let held = mesh
        .register_service_with_ttl(&orders, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(held.instances().count(), 1);
    // Many leases later, heartbeats keep it passing.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let found = mesh.discover_service("orders").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].health(), Health::Passing);
    held.shutdown().await.unwrap();
    let snapshot = registry.snapshot(&"orders".parse().unwrap()).await.unwrap();
    assert!(snapshot.instances().is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_by_name() {
    // No registry.
    let err = Mesh::builder().build().await.unwrap_err();
    assert!(matches!(err, BuildError::NoRegistry), "{err}");
    assert!(err.to_string().contains("registry URL"));

    // A URL the registry cannot serve, its password hidden.
    let err = Mesh::builder()
        .registry_url("redis://mesh:hunter2@cache/0")
        .build()
        .await
        .unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(matches!(err, BuildError::Registry(_)), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    // A bad policy, named by its path, before anything connects.
    let config: MeshConfig = toml::from_str(
        r#"
        [services.orders]
        retry = { max_retries = 0 }
        "#,
    )
    .unwrap();
    let err = Mesh::builder()
        .registry_url("memory:")
        .config(config)
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("services.orders.retry.max_retries"),
        "{err}"
    );

    let mesh = Mesh::builder()
        .registry_url("memory:")
        .build()
        .await
        .unwrap();
    let err = mesh.client("Not A Name!").unwrap_err();
    let text = chain(&err);
    assert!(text.contains("service"), "{text}");
    assert!(text.contains("Not A Name!"), "{text}");

    let err = mesh
        .set_strategy(
            "orders",
            StrategyPolicy {
                name: "ring_hash".into(),
                hash_header: None,
            },
        )
        .unwrap_err();
    assert!(chain(&err).contains("strategy.hash_header"), "{err}");
    let err = mesh
        .set_strategy(
            "orders",
            StrategyPolicy {
                name: "fastest".into(),
                hash_header: None,
            },
        )
        .unwrap_err();
    assert!(chain(&err).contains("\"fastest\""), "{}", chain(&err));
    assert_eq!(
        mesh.policies("orders").unwrap().strategy.name,
        "p2c",
        "unchanged"
    );

    let err = mesh
        .register_service(&Microservice::new("orders", "1").endpoint("ftp://10.0.0.1:21"))
        .await
        .unwrap_err();
    assert!(chain(&err).contains("ftp://10.0.0.1:21"), "{}", chain(&err));

    let err = mesh
        .call_service("Not A Name!", http::Request::new(String::new()))
        .await
        .unwrap_err();
    assert!(err.is_request(), "{err:?}");
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
}

/// The error and its sources, one per line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push('\n');
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
