//! (being written)

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
#[error("gateway")]
pub struct ServeError;

/// Runs the gateway.
pub async fn serve() -> Result<(), ServeError> {
    Ok(())
}
