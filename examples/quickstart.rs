//! Registers a service's instances in an embedded SQLite registry, watches them change, and
//! lets a lease lapse, all in one process.
//!
//! Run it with `cargo run --example quickstart`.

use std::time::Duration;

use futures_util::StreamExt;
use tower_mesh::instance::{Health, Instance, Microservice};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{Event, LeaseConfig, Reaper, Registration, Registry, Revision};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("tower-mesh-quickstart.db");
    let _ = std::fs::remove_file(&path);
    let registry = SqlRegistry::builder(format!("sqlite://{}", path.display()))
        .poll_interval(Duration::from_millis(50))
        .connect()
        .await?;
    println!("registry: {registry:?}");

    // The seed sketch's shape: a name, a version, endpoint URLs.
    let orders = Microservice::new("orders", "1.4.0")
        .endpoint("http://127.0.0.1:8081")
        .endpoint("http://127.0.0.1:8082")
        .metadata("team", "checkout")
        .into_instances()?;
    let rev = registry
        .register_all(orders.into_iter().map(Registration::from).collect())
        .await?;
    println!("registered 2 orders instances at revision {rev}");

    // A leased instance that will stop heartbeating.
    let flaky = Instance::builder("orders", "flaky-1")
        .host("127.0.0.1")
        .port(8083)
        .version("1.4.0")
        .build()?;
    registry
        .register(Registration::new(flaky).with_ttl(Duration::from_millis(300))?)
        .await?;
    let leases = LeaseConfig::builder()
        .grace(Duration::from_millis(300))
        .without_self_preservation()
        .sweep_interval(Duration::from_millis(100))
        .build()?;
    let _reaper = Reaper::new(registry.clone(), leases).spawn();

    let orders = "orders".parse()?;
    let mut watch = registry.watch(&orders, Revision::ZERO);
    registry
        .set_health(&orders, &"127.0.0.1:8082".parse()?, Health::Warning)
        .await?;

    // Three registrations, one health change, the lapse, the removal.
    for _ in 0..6 {
        match watch.next().await {
            Some(Ok(Event::Put { revision, instance })) => println!(
                "  r{revision}: put    {} {} ({})",
                instance.id(),
                instance.authority(),
                instance.health()
            ),
            Some(Ok(Event::Delete { revision, id, .. })) => println!("  r{revision}: delete {id}"),
            Some(Ok(other)) => println!("  {other:?}"),
            Some(Err(e)) => println!("  watch error: {e}"),
            None => break,
        }
    }
    let snapshot = registry.snapshot(&orders).await?;
    println!(
        "orders at revision {}: {:?}",
        snapshot.revision(),
        snapshot
            .instances()
            .iter()
            .map(|i| (i.id().to_string(), i.health().as_str()))
            .collect::<Vec<_>>()
    );
    let _ = std::fs::remove_file(&path);
    Ok(())
}
