//! A client-side service mesh made of tower middleware.
//!
//! Service discovery, load balancing and circuit breaking ship as tower 0.5 `Layer`/`Service`
//! implementations over a [`tower::discover::Discover`] stream fed by a service registry. The
//! registry keeps its data in SQLite (the embedded default), PostgreSQL or MySQL/MariaDB, or in
//! memory, optionally behind a cache. Everything stacks onto a hyper, axum or tonic client with
//! [`tower::ServiceBuilder`].
//!
//! | module | feature | what it owns |
//! | --- | --- | --- |
//! | [`instance`] | always | validated service names, instance ids and instances |
//! | [`registry`] | always; `registry-sqlite` (default), `registry-postgres`, `registry-mysql` | the `Registry` trait, revisions, watches, leases, memory/SQL/cached backends |
//! | `discover` | `discover`, `tonic` | the registry-fed `Discover` stream, HTTP and tonic endpoints |
//! | `balance` | `balance` | `Balance<D, P>` and its picking strategies |
//! | `breaker` | `breaker` | service-level and per-endpoint circuit breakers |
//! | `health` | `health` | active checks shared out across checkers, self-registration, outlier detection |
//! | `retry` | `retry` | budgeted retries on another endpoint than the one that failed |
//! | `gateway` | `gateway` | the `tower-mesh` binary's parts: API gateway, admin API and metrics, operator CLI, demo |
//! | `mesh` | `mesh` | `Mesh`: the registry, per-service policies and one whole client stack per service, for hyper, axum and tonic clients |
//!
//! ```
//! # #[cfg(all(feature = "discover", feature = "registry-sqlite"))]
//! # mod example {
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::discover::{p2c_peak_ewma, HttpEndpoints, RegistryDiscover};
//! use tower_mesh::registry::{sql::SqlRegistry, Cached};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One process, one watch on the registry database, however many services it calls.
//! let registry = Cached::new(SqlRegistry::connect("sqlite::memory:").await?).await?;
//! // The instances of "orders" become HTTP endpoints of a peak-EWMA balancer.
//! let orders = RegistryDiscover::new(registry, "orders", HttpEndpoints::new()).spawn();
//! let client = ServiceBuilder::new()
//!     .buffer(1024)
//!     .timeout(Duration::from_secs(2))
//!     .service(p2c_peak_ewma(orders, Duration::from_millis(20), Duration::from_secs(10)));
//! // client.oneshot(Request::get("/orders/42").body(Full::default())?).await?
//! # drop(client);
//! # Ok(())
//! # }
//! # }
//! # fn main() {
//! #     #[cfg(all(feature = "discover", feature = "registry-sqlite"))]
//! #     example::main().unwrap();
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod chain;
pub mod instance;
pub mod registry;
#[cfg(feature = "balance")]
mod setting;
mod sync;

pub use self::builder::ServiceBuilderExt;

#[cfg(feature = "discover")]
#[cfg_attr(docsrs, doc(cfg(feature = "discover")))]
pub mod discover;

#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub mod breaker;

#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub mod balance;

#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod gateway;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;

#[cfg(feature = "health")]
#[cfg_attr(docsrs, doc(cfg(feature = "health")))]
pub mod health;

#[cfg(feature = "mesh")]
#[cfg_attr(docsrs, doc(cfg(feature = "mesh")))]
pub mod mesh;
