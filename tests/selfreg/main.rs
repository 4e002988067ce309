//! The self-registration guard: registering and heartbeating, registering again after being
//! reaped, deregistering on shutdown and on drop (memory registry, tokio's paused clock); an
//! axum server's graceful shutdown; surviving a registry outage through a cut TCP proxy in
//! front of a real PostgreSQL.

mod lifecycle;
mod outage;
mod serve;
#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::time::Duration;

use tower_mesh::health::{SelfRegistration, SelfRegistrationBuilder, SelfRegistrationStatus};
use tower_mesh::instance::{Health, Instance, ServiceName};
use tower_mesh::registry::Registry;

fn svc() -> ServiceName {
    "orders".parse().unwrap()
}

fn instance(id: &str, port: u16) -> Instance {
    Instance::builder("orders", id)
        .host("127.0.0.1")
        .port(port.into())
        .build()
        .unwrap()
}

fn guard(id: &str, port: u16) -> SelfRegistrationBuilder {
    SelfRegistration::builder(instance(id, port))
}

/// Hang guard for real-time tests: fails the test if `fut` never completes, rather than
/// hanging CI. Not a timing assertion: nothing here depends on how long it takes.
async fn eventually<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("hung waiting for {what}"))
}

/// Waits until the guard's status satisfies `f`, and returns that status.
async fn status_where(
    g: &SelfRegistration,
    what: &str,
    f: impl FnMut(&SelfRegistrationStatus) -> bool,
) -> SelfRegistrationStatus {
    let mut updates = g.status_updates();
    eventually(what, async {
        updates
            .wait_for(f)
            .await
            .unwrap_or_else(|_| panic!("task ended waiting for {what}"))
            .clone()
    })
    .await
}

/// The health of instance `id` of "orders" in `registry`, or `None` if it is not registered.
async fn health_of<R: Registry>(registry: &R, id: &str) -> Option<Health> {
    registry
        .snapshot(&svc())
        .await
        .unwrap()
        .instances()
        .iter()
        .find(|i| i.id().as_str() == id)
        .map(Instance::health)
}
