//! (being written: the admin API)

use std::net::SocketAddr;
use std::sync::Arc;

use crate::mesh::Mesh;

/// How the admin API's mutating routes are guarded.
#[derive(Clone)]
pub enum AdminAuth {
    /// No token (loopback only).
    Open,
    /// A bearer token.
    Token(Arc<str>),
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAuth")
    }
}

/// Admin settings that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A public admin address without a token.
    #[error("admin address {addr} is not loopback and no token is set")]
    PublicWithoutToken {
        /// The address.
        addr: SocketAddr,
    },
}

/// The auth of an admin listener on `addr`.
pub fn auth_for(addr: SocketAddr, token: Option<String>) -> Result<AdminAuth, AdminError> {
    match token {
        Some(t) => Ok(AdminAuth::Token(Arc::from(t))),
        None if addr.ip().is_loopback() => Ok(AdminAuth::Open),
        None => Err(AdminError::PublicWithoutToken { addr }),
    }
}

/// The admin router.
pub fn router(
    mesh: Mesh,
    auth: AdminAuth,
    metrics: Option<crate::gateway::metrics::Metrics>,
    max_body: usize,
) -> axum::Router {
    let _ = (mesh, auth, metrics, max_body);
    axum::Router::new()
}
