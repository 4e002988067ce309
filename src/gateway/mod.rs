//! The `tower-mesh` binary's parts (feature `gateway`): an API gateway in front of the
//! mesh, its admin API with Prometheus metrics, the operator CLI, and the demo.
//!
//! The gateway routes each request by host and path prefix to a service and proxies it
//! through that service's [`Mesh`](crate::mesh::Mesh) client, streaming bodies both ways.
//! [`serve`] runs it from a [`Config`](config::Config); [`proxy::Gateway`] is the router
//! alone, a tower `Service` for axum or hyper.
//!
//! ```no_run
//! use tower::ServiceBuilder;
//! use tower_mesh::gateway::{config::Config, proxy::Gateway};
//! use tower_mesh::mesh::Mesh;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let config = Config::from_toml(r#"
//!     registry = { url = "sqlite://mesh.db?mode=rwc" }
//!     [[routes]]
//!     prefix = "/orders"
//!     service = "orders"
//! "#)?;
//! let mesh = Mesh::builder().registry_url(config.registry.resolved_url()?).build().await?;
//! let gateway = Gateway::new(mesh, &config)?;
//! let app = axum::Router::new().fallback_service(
//!     ServiceBuilder::new().concurrency_limit(10_000).service(gateway),
//! );
//! let listener = tokio::net::TcpListener::bind(config.listen.gateway).await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod proxy;
mod serve;

pub use self::serve::{serve, signal, Bound, ServeError};

/// `url` with any password (in the user part or as a query parameter such as `password=`)
/// replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    crate::registry::sql::redact_url(url)
}

/// An error and its sources on one line, `: `-separated, for logs.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
