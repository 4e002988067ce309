//! The mesh: the whole client stack in one place.
//!
//! This module holds the building blocks of the `Mesh` facade, which comes later: the
//! [`policy`] of each service as plain serde structs (loaded from TOML or any serde format,
//! with human durations), converted into the crate's parts with every value checked.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::mesh::policy::MeshConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: MeshConfig = toml::from_str(r#"
//!     [defaults]
//!     timeout = "2s"
//!     retry = { max_retries = 2, statuses = [502, 503] }
//!
//!     [services.orders]
//!     service_breaker = { consecutive_failures = 10, open_duration = "30s" }
//! "#)?;
//! let orders = config.policies("orders")?;
//! assert_eq!(orders.timeout()?, Duration::from_secs(2));
//!
//! // Stack the parts over any HTTP client service.
//! let client = ServiceBuilder::new()
//!     .timeout(orders.timeout()?)
//!     .layer(orders.retry.layer()?)
//!     .layer(orders.service_breaker.service_breaker("orders")?)
//!     .service(tower::service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, tower::BoxError>(http::Response::new(String::new()))
//!     }));
//! # drop(client);
//! # Ok(())
//! # }
//! ```

pub mod policy;
