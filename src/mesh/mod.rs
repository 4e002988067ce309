//! The mesh: the whole client stack in one place, for hyper, axum and tonic clients.
//!
//! A [`Mesh`] holds a registry (a URL: `sqlite://…`, `postgres://…`, `mysql://…`,
//! `memory:`; or any [`Registry`](crate::registry::Registry) value) behind one cache and one
//! watch, the [`policy`] of every service (defaults and per-service overrides, plain serde
//! structs with human durations), and one client stack per service it calls:
//!
//! ```text
//! timeout → retry → service breaker → balance → outlier detection → endpoint breaker → load metric → hyper-util client
//! ```
//!
//! * [`Mesh::client`] is that stack as a cloneable, `Send + Sync` tower `Service` taking
//!   `http::Request<`[`RequestBody`]`>` (a path only: the mesh picks the endpoint; a whole
//!   body, which a retry can send again, or a stream, sent once) and answering
//!   `http::Response<`[`Body`]`>` (streamed), or the mesh's one [`Error`].
//!   [`Mesh::grpc`][grpc] (feature `tonic`) is the same stack for generated tonic clients.
//! * The seed sketch's operations: [`register_service`](Mesh::register_service) (with a
//!   lease: [`register_service_with_ttl`](Mesh::register_service_with_ttl)),
//!   [`unregister_service`](Mesh::unregister_service),
//!   [`discover_service`](Mesh::discover_service), [`list_services`](Mesh::list_services),
//!   [`search_services`](Mesh::search_services), [`call_service`](Mesh::call_service),
//!   [`service_health`](Mesh::service_health), and
//!   [`set_strategy`](Mesh::set_strategy) at run time without dropping requests in flight.
//! * Retries go to another endpoint than the one that failed ([`crate::retry`]), within a
//!   budget; a client of a service nobody has registered yet waits for an instance up to
//!   its timeout, then fails with [`Error::NoEndpoints`]. Such a call says nothing of the
//!   service's health: the service breaker does not count it.
//!
//! ```
//! use http_body_util::BodyExt;
//! use tower::{BoxError, ServiceBuilder, ServiceExt};
//! use tower_mesh::instance::Microservice;
//! use tower_mesh::mesh::{policy::MeshConfig, Mesh, RequestBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let app = axum::Router::new().route("/orders/42", axum::routing::get(|| async { "order 42" }));
//! # tokio::spawn(std::future::IntoFuture::into_future(axum::serve(listener, app)));
//! let config: MeshConfig = toml::from_str(r#"
//!     [defaults]
//!     timeout = "2s"
//!     [services.orders]
//!     strategy = { name = "least_requests" }
//! "#)?;
//! let mesh = Mesh::builder().registry_url("memory:").config(config).build().await?;
//! mesh.register_service(&Microservice::new("orders", "1.0.0").endpoint(format!("http://{addr}")))
//!     .await?;
//!
//! // The client is a tower service: stack more layers on it as usual.
//! let orders = ServiceBuilder::new()
//!     .concurrency_limit(64)
//!     .service(mesh.client("orders")?);
//! let rsp = orders
//!     .oneshot(http::Request::get("/orders/42").body(RequestBody::empty())?)
//!     .await?;
//! assert_eq!(rsp.into_body().collect().await?.to_bytes(), "order 42");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(feature = "tonic", doc = "[grpc]: Mesh::grpc")]
#![cfg_attr(
    not(feature = "tonic"),
    doc = "[grpc]: https://docs.rs/tower-mesh/latest/tower_mesh/mesh/struct.Mesh.html#method.grpc"
)]

mod body;
mod builder;
mod client;
mod endpoints;
mod error;
#[cfg(feature = "tonic")]
mod grpc;
#[allow(clippy::module_inception)]
mod mesh;
pub mod policy;
mod search;

pub use self::body::{Body, RequestBody};
pub use self::builder::{BuildError, MeshBuilder, DEFAULT_GRPC_MAX_REQUEST};
pub use self::client::{Client, MeshRequest, ResponseFuture};
pub use self::error::Error;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use self::grpc::GrpcClient;
pub use self::mesh::{Mesh, ServiceRegistration};
pub use self::search::ServiceFilter;
