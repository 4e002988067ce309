//! The gateway's admin API: a JSON API over the [`Mesh`] (services, instances, health,
//! breakers; register, deregister, heartbeat, set health, force breakers) and `/metrics`, for
//! its own listener (loopback by default).
//!
//! ```
//! use axum::body::Body;
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_mesh::gateway::admin::{self, AdminError};
//! use tower_mesh::gateway::metrics::Metrics;
//! use tower_mesh::mesh::Mesh;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A public admin address needs a token; loopback is open without one.
//! let public = "0.0.0.0:9090".parse()?;
//! assert!(matches!(admin::auth_for(public, None), Err(AdminError::PublicWithoutToken { .. })));
//! let auth = admin::auth_for("127.0.0.1:9090".parse()?, None)?;
//!
//! let mesh = Mesh::builder().registry_url("memory:").build().await?;
//! let app = admin::router(mesh, auth, Some(Metrics::install()?), 64 * 1024);
//!
//! // Serve it with `axum::serve(listener, app)`; here, one request through it as a service.
//! let rsp = app
//!     .oneshot(
//!         Request::post("/services/orders/instances")
//!             .header("content-type", "application/json")
//!             .body(Body::from(r#"{"id": "orders-1", "host": "10.0.0.7", "port": 8080, "ttl": "10s"}"#))?,
//!     )
//!     .await?;
//! assert_eq!(rsp.status(), StatusCode::CREATED);
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//!
//! Every body in and out is JSON (a request's `Content-Type` is not checked, so `curl -d`
//! works); unknown keys in a request body are refused. An error is `{"error": "...", "field": "...", "value":
//! "..."}` (`field` and `value` when a value is to blame).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /services` | `[{"service", "instances", "passing", "warning", "critical", "maintenance"}]` |
//! | `GET /services/{name}` (or `…/instances`) | the instances: `[{"service", "id", "host", "port", "scheme", "version", "weight", "zone", "metadata", "health", …}]`; 404 without any |
//! | `GET /services/{name}/instances/{id}` | that instance; 404 if the service does not have it |
//! | `GET /services/{name}/health` | the service's [`ServiceHealth`](crate::health::report::ServiceHealth) (counts, instances, last checks, ejections); 404 without any instance |
//! | `GET /breakers` | for each service whose client was built: `{"service", "state", "endpoints": [{"instance", "state", "ready", "healthy", "weight", "in_flight", "ejected"}]}` |
//! | `POST /services/{name}/instances` | registers `{"id", "host", "port", "scheme"?, "version"?, "weight"?, "zone"?, "metadata"?, "ttl"? ("10s")}`, replacing an instance of the same id; 201 `{"service", "id", "revision"}` |
//! | `DELETE /services/{name}/instances/{id}` | deregisters; `{"revision"}`, 404 if not registered |
//! | `POST /services/{name}/instances/{id}/heartbeat` | renews the lease; `{"revision"}` (`null` for a plain renewal), 404 if not registered, 409 if registered without a `ttl` |
//! | `PUT /services/{name}/instances/{id}/health` | `{"health": "passing"/"warning"/"critical"/"maintenance", "output"?}`; `{"revision"}` |
//! | `POST /services/{name}/breaker` | `{"state": "open"/"closed"/"disabled"}` forces the service breaker open, resets (closes) it, or disables it; `{"service", "state"}`, 404 if no client of the service was built |
//! | `POST /services/{name}/endpoints/{id}/breaker` | the same on one endpoint's breaker; 404 if the client does not hold that endpoint |
//! | `GET /metrics` | the Prometheus text format ([`Metrics::render`]); 404 when the router has no [`Metrics`] |
//!
//! A value the API refuses is a 400 naming the field and the value (an instance's fields
//! are checked as [`Instance::builder`](crate::instance::Instance::builder) checks them, the
//! path's service name and id too); a body over the limit is a 413; a registry that cannot be
//! reached is a 503 (its message never holds a password).
//!
//! # Authentication
//!
//! Reads (`GET`, `HEAD`, `OPTIONS`, and so `/metrics`) are open. Every other method needs
//! `Authorization: Bearer <token>` when the router has an [`AdminAuth::Token`]: without one
//! it is a 401 with `WWW-Authenticate: Bearer`, with a wrong one a 403. Tokens are compared in
//! constant time. [`auth_for`] picks the auth for a listener address, and refuses a
//! non-loopback address without a token.

mod auth;
mod reply;
mod routes;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;

use crate::gateway::metrics::Metrics;
use crate::mesh::Mesh;

/// Who may use the admin API's mutating routes.
#[derive(Clone)]
pub enum AdminAuth {
    /// Anyone who can reach the listener (only for a loopback listener; see [`auth_for`]).
    Open,
    /// Callers presenting this bearer token. `Debug` does not show it.
    Token(Arc<str>),
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAuth::Open => f.write_str("Open"),
            AdminAuth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// Why an admin listener cannot be started as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The admin address is not loopback and no token was given: anyone who can reach it
    /// could change the registry and the breakers.
    #[error(
        "admin address {addr} is not loopback: set a bearer token (admin.token_env) or listen on 127.0.0.1"
    )]
    PublicWithoutToken {
        /// The address.
        addr: SocketAddr,
    },
    /// The token given is empty.
    #[error("the admin bearer token is empty")]
    EmptyToken,
}

/// The auth of an admin listener on `addr`: with a `token`, [`AdminAuth::Token`] (required
/// on mutating routes, on loopback too); without one, [`AdminAuth::Open`] on a loopback
/// address (`127.0.0.0/8`, `::1`, and `::ffff:127.0.0.1`), and
/// [`AdminError::PublicWithoutToken`] on any other (`0.0.0.0` included).
pub fn auth_for(addr: SocketAddr, token: Option<String>) -> Result<AdminAuth, AdminError> {
    match token {
        Some(token) if token.is_empty() => Err(AdminError::EmptyToken),
        Some(token) => Ok(AdminAuth::Token(Arc::from(token))),
        None if addr.ip().to_canonical().is_loopback() => Ok(AdminAuth::Open),
        None => Err(AdminError::PublicWithoutToken { addr }),
    }
}

/// What the handlers share.
#[derive(Debug)]
struct Admin {
    mesh: Mesh,
    metrics: Option<Metrics>,
}

/// The admin API over `mesh` (see the [module documentation](self) for its routes): mutating
/// routes guarded by `auth`, `GET /metrics` rendered by `metrics` (absent without), and
/// request bodies of at most `max_body` bytes (413 above).
pub fn router(
    mesh: Mesh,
    auth: AdminAuth,
    metrics: Option<Metrics>,
    max_body: usize,
) -> axum::Router {
    let state = Arc::new(Admin { mesh, metrics });
    routes::routes()
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(auth, auth::authorize))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_without_a_token_is_open() {
        for addr in [
            "127.0.0.1:9090",
            "127.1.2.3:1",
            "[::1]:9090",
            "[::ffff:127.0.0.1]:9090",
        ] {
            let auth = auth_for(addr.parse().unwrap(), None).unwrap();
            assert!(matches!(auth, AdminAuth::Open), "{addr}");
        }
    }

    #[test]
    fn anything_else_without_a_token_is_refused() {
        for addr in [
            "0.0.0.0:9090",
            "10.0.0.7:9090",
            "[::]:9090",
            "[2001:db8::1]:9090",
        ] {
            let err = auth_for(addr.parse().unwrap(), None).unwrap_err();
            assert!(
                matches!(err, AdminError::PublicWithoutToken { addr: a } if a.to_string() == addr),
                "{addr}"
            );
            assert!(err.to_string().contains(addr), "{err}");
        }
    }

    #[test]
    fn a_token_is_required_wherever_given() {
        for addr in ["127.0.0.1:9090", "0.0.0.0:9090"] {
            let auth = auth_for(addr.parse().unwrap(), Some("s3cret".into())).unwrap();
            assert!(matches!(&auth, AdminAuth::Token(t) if &**t == "s3cret"));
            assert_eq!(format!("{auth:?}"), "Token(***)");
        }
        assert!(matches!(
            auth_for("0.0.0.0:1".parse().unwrap(), Some(String::new())),
            Err(AdminError::EmptyToken)
        ));
    }
}
