//! The mesh: the whole client stack in one place.
//!
//! This module holds the building blocks of the `Mesh` facade, which comes later: the
//! [`policy`] of each service as plain serde structs (loaded from TOML or any serde format,
//! with human durations), converted into the crate's parts with every value checked, and the
//! one [`Error`] a call through the mesh fails with, classified from whatever the stack
//! returned ([`Error::from_box`]) with an HTTP status for each kind.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//! use tower_mesh::mesh::{policy::MeshConfig, Error};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
//! // Stack the parts over any HTTP client service (here one that answers at once).
//! let client = ServiceBuilder::new()
//!     .timeout(orders.timeout()?)
//!     .layer(orders.retry.layer()?)
//!     .map_err(BoxError::from)
//!     .layer(orders.service_breaker.service_breaker("orders")?)
//!     .service(service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, BoxError>(http::Response::new(String::from("ok")))
//!     }));
//! let response = client
//!     .oneshot(http::Request::new(String::new()))
//!     .await
//!     .map_err(|e| Error::from_box("orders", e))?;
//! assert_eq!(response.body(), "ok");
//! # Ok(())
//! # }
//! ```

mod error;
pub mod policy;

pub use self::error::Error;
