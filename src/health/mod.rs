//! Health: active checks shared out across a fleet of checkers through the registry, the
//! self-registration guard for a service process, and passive outlier detection fed by real
//! traffic (feature `health`; the gRPC check also needs `tonic`).
//!
//! # Parts
//!
//! * [`outlier`]: passive outlier detection (Envoy's semantics): consecutive failures,
//!   consecutive gateway failures, success rate and failure percentage, with growing
//!   ejection times, a cap on the share ejected, dry runs, and optional publication of
//!   ejections to the registry.
//! * [`HealthChecker`] runs the declared active checks (HTTP, TCP, and the gRPC health
//!   protocol with `tonic`) and writes a result to the registry only when an instance's
//!   status changes. Checkers register under [`CHECKERS_SERVICE`] and share the instances
//!   out by rendezvous hashing, each instance checked by exactly `replicas` of them, so the
//!   fleet's check load does not grow with the number of client processes.
//! * [`SelfRegistration`] keeps a service process's own instance registered: a TTL lease,
//!   heartbeats, retries through registry outages, registration again after being reaped,
//!   and deregistration first on shutdown.
//! * An instance declares its check ([`Check`](crate::instance::Check)) when it registers;
//!   every process sees it, and [`service_health`] reports a service's instances by status
//!   with each one's last check output and time.
//!
//! Passive detection, in a client's stack:
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::balance::{BalanceLayer, P2c};
//! use tower_mesh::breaker::HttpClassifier;
//! use tower_mesh::discover::{HttpEndpoints, MakeEndpoint, RegistryDiscover};
//! use tower_mesh::health::outlier::{HttpGateway, OutlierLayer, PublishToRegistry};
//! use tower_mesh::instance::InstanceId;
//! use tower_mesh::registry::MemoryRegistry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = MemoryRegistry::new();
//! // 5xx and gateway failures of real traffic eject an instance of "orders" from this
//! // process's balancer, and the ejection is published to the registry as `Warning`.
//! let outlier = OutlierLayer::builder()
//!     .name("orders")
//!     .classifier(HttpClassifier::server_errors())
//!     .gateway(HttpGateway)
//!     .enforcing_consecutive_gateway_failure(100)
//!     .on_ejection(PublishToRegistry::new(registry.clone(), "orders".parse()?))
//!     .build::<InstanceId>()?;
//! let endpoints = outlier.endpoints(HttpEndpoints::new()).weighted();
//! let discover = RegistryDiscover::new(registry, "orders", endpoints).spawn();
//! let client = ServiceBuilder::new()
//!     .buffer(1024)
//!     .timeout(Duration::from_secs(2))
//!     .layer(BalanceLayer::new(P2c::pending_requests()))
//!     .service(discover);
//! # drop(client);
//! # Ok(())
//! # }
//! ```
//!
//! A service registering itself with a declared check, and the service's health report:
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::health::{service_health, SelfRegistration};
//! use tower_mesh::instance::{Check, Instance};
//! use tower_mesh::registry::MemoryRegistry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = MemoryRegistry::new();
//! let me = Instance::builder("orders", "orders-1")
//!     .host("127.0.0.1")
//!     .port(8080)
//!     .check(Check::http("/healthz").interval(Duration::from_secs(5)).build()?)
//!     .build()?;
//! let guard = SelfRegistration::builder(me)
//!     .ttl(Duration::from_secs(10))
//!     .spawn(registry.clone())?;
//! guard.registered().await;
//! let health = service_health(&registry, &"orders".parse()?, ()).await?;
//! println!("{health:?}");
//! // Callers reach the service through a tower stack as usual.
//! let stack = ServiceBuilder::new().buffer::<http::Request<String>>(64);
//! # drop(stack);
//! guard.shutdown().await?; // deregisters first
//! # Ok(())
//! # }
//! ```

mod checker;
pub mod outlier;
pub mod report;
mod self_registration;
pub use self::checker::{
    Assignment, HealthChecker, HealthCheckerBuilder, HealthCheckerError, HealthCheckerStats,
    CHECKERS_SERVICE,
};
pub use self::report::{service_health, ServiceHealth};
pub use self::self_registration::{
    SelfRegistration, SelfRegistrationBuilder, SelfRegistrationError, SelfRegistrationState,
    SelfRegistrationStatus,
};
