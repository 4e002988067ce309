//! The instance model: service names, instance ids and validated [`Instance`]s.
//!
//! Everything that enters the registry is checked here first, so a bad value is rejected at the
//! API with an [`InvalidInput`] naming the field, the value and the instance, never stored.
//!
//! ```
//! use tower_mesh::instance::{Health, Instance, Scheme};
//!
//! let instance = Instance::builder("orders", "orders-1")
//!     .host("10.0.0.7")
//!     .port(8080)
//!     .scheme(Scheme::Http)
//!     .version("1.4.2")
//!     .zone("eu-west-1a")
//!     .metadata("team", "payments")
//!     .build()?;
//! assert_eq!(instance.authority(), "10.0.0.7:8080");
//! assert_eq!(instance.health(), Health::Passing);
//! assert_eq!(instance.weight(), 100);
//!
//! let err = Instance::builder("orders", "orders-1").host("10.0.0.7").port(0).build().unwrap_err();
//! assert_eq!(err.to_string(), r#"invalid port 0 for instance "orders-1": must be in 1..=65535"#);
//! # Ok::<(), tower_mesh::instance::InvalidInput>(())
//! ```
//!
//! These types are what the registry stores and what discovery turns into endpoints; the layers
//! that consume them stack on a client with `ServiceBuilder`:
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::instance::Instance;
//!
//! let instance = Instance::builder("orders", "orders-1").host("127.0.0.1").port(8080).build()?;
//! // A client that calls this one instance, with a timeout in front.
//! let client = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(2))
//!     .service_fn(move |path: &'static str| {
//!         let url = format!("http://{}{}", instance.authority(), path);
//!         async move { Ok::<_, std::convert::Infallible>(url) }
//!     });
//! # drop(client);
//! # Ok::<(), tower_mesh::instance::InvalidInput>(())
//! ```

mod builder;
mod check;
mod error;
mod health;
mod microservice;
mod model;
mod name;
mod scheme;
pub(crate) mod validate;

pub use self::builder::InstanceBuilder;
pub use self::check::{
    Check, CheckBuilder, CheckKind, GrpcCheck, HttpCheck, LastCheck, StatusRange,
    CHECK_BODY_READ_LIMIT, MAX_CHECK_BODY_LEN, MAX_CHECK_INTERVAL, MAX_CHECK_OUTPUT,
    MAX_CHECK_PATH_LEN, MAX_CHECK_STATUS_RANGES, MAX_CHECK_THRESHOLD, MAX_GRPC_SERVICE_LEN,
};
pub use self::error::{Field, InvalidInput};
pub use self::health::Health;
pub use self::microservice::Microservice;
pub use self::model::Instance;
pub use self::name::{InstanceId, ServiceName};
pub use self::scheme::Scheme;

/// Most entries an instance's metadata may hold.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most bytes an instance's metadata may hold, keys and values together.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest instance id, version or zone, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;
/// Largest weight an instance may carry.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// The weight an instance gets when none is given.
pub const DEFAULT_WEIGHT: u32 = 100;

#[cfg(test)]
mod tests;
