//! The health checker against real servers on loopback (HTTP, TCP, gRPC health), with tokio's
//! paused clock for intervals and thresholds; fleets of checkers sharing a SQLite file and a
//! PostgreSQL registry.

mod counting;
mod fleet;
mod kinds;
mod one_watch;
mod servers;
#[path = "../support/mod.rs"]
mod support;
mod timing;

use std::future::Future;
use std::time::Duration;

use tower_mesh::instance::{Check, Health, Instance, InstanceId, ServiceName};
use tower_mesh::registry::Registry;

fn svc() -> ServiceName {
    "orders".parse().unwrap()
}

fn iid(id: &str) -> InstanceId {
    id.parse().unwrap()
}

fn instance(id: &str, port: u16, check: Check) -> Instance {
    Instance::builder("orders", id)
        .host("127.0.0.1")
        .port(port.into())
        .check(check)
        .build()
        .unwrap()
}

/// A check with no jitter, 1 s apart, 500 ms timeout, thresholds 2 and 2.
fn quick(check: tower_mesh::instance::CheckBuilder) -> Check {
    check
        .interval(Duration::from_secs(1))
        .unhealthy_interval(Duration::from_secs(1))
        .jitter(Duration::ZERO)
        .timeout(Duration::from_millis(500))
        .healthy_threshold(2)
        .unhealthy_threshold(2)
        .build()
        .unwrap()
}

/// The registered health of "orders" instance `id`, and its last check's output.
async fn health_of<R: Registry>(registry: &R, id: &str) -> (Health, Option<String>) {
    let snapshot = registry.snapshot(&svc()).await.unwrap();
    let instance = snapshot
        .instances()
        .iter()
        .find(|i| i.id().as_str() == id)
        .unwrap_or_else(|| panic!("{id} is not registered"));
    (
        instance.health(),
        instance.last_check().map(|l| l.output().to_owned()),
    )
}

/// Hang guard for real-time tests: fails the test if `fut` never completes. Not a timing
/// assertion.
async fn eventually<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("hung waiting for {what}"))
}

/// Polls `registry` until "orders" instance `id` has `health` (every 20 ms of the runtime's
/// clock, paused or not), under the hang guard.
async fn until_health<R: Registry>(registry: &R, id: &str, health: Health) -> Option<String> {
    eventually(&format!("{id} to turn {health}"), async {
        loop {
            let (now, output) = health_of(registry, id).await;
            if now == health {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
