//! Health: active checks shared out across a fleet of checkers through the registry, the
//! self-registration guard for a service process, and passive outlier detection fed by real
//! traffic (feature `health`; the gRPC check also needs `tonic`).
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
//! // Passive: 5xx and gateway failures of real traffic eject an instance of "orders" from
//! // this process's balancer, and the ejection is published to the registry as `Warning`.
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
//! # Parts
//!
//! * [`outlier`]: passive outlier detection (Envoy's semantics): consecutive failures,
//!   consecutive gateway failures, success rate and failure percentage, with growing
//!   ejection times, a cap on the share ejected, dry runs, and optional publication of
//!   ejections to the registry.
//! * Active checks (HTTP, TCP, gRPC health) declared with the instance and run by checkers
//!   that share the instances out among themselves, and the self-registration guard, are
//!   added by their own modules here.

pub mod outlier;
