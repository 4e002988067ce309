//! [`CliError`]: why a `tower-mesh registry` command failed.

use std::path::PathBuf;

use crate::gateway::config::ConfigError;
use crate::instance::{InstanceId, InvalidInput, ServiceName};
use crate::registry;

/// Why a `tower-mesh registry` command failed. Every message names the offending field or
/// value; a registry URL is shown with its password replaced by `***`, and a password never
/// appears in a message or in `Debug`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No registry was named: neither `--registry`, `TOWER_MESH_REGISTRY` nor `--config`.
    #[error(
        "no registry: give --registry URL, set TOWER_MESH_REGISTRY, or give --config FILE with a [registry] table"
    )]
    NoRegistry,
    /// A registry was named twice, by `--registry` (or `TOWER_MESH_REGISTRY`) and by
    /// `--config`: which one is meant is not guessed.
    #[error(
        "both --registry (or TOWER_MESH_REGISTRY) and --config {} name a registry: give one",
        config.display()
    )]
    TwoRegistries {
        /// The configuration file given with `--config`.
        config: PathBuf,
    },
    /// The configuration file given with `--config` was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry could not be opened (an unreachable database, a refused login). Its
    /// message names the URL; the cause is its `source`.
    #[error("cannot open registry {url}")]
    Connect {
        /// The URL, its password replaced by `***`.
        url: String,
        /// Why (itself free of secrets).
        #[source]
        source: registry::Error,
    },
    /// A registry operation failed.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// A value given on the command line was refused: which field, the value, and why.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field, as the command line names it (`port`, `ttl`, `metadata`, ...).
        field: &'static str,
        /// The value given (truncated past 120 bytes).
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The service has no instances in the registry.
    #[error("service {0:?} not found: it has no instances in the registry")]
    UnknownService(ServiceName),
    /// The instance is not registered.
    #[error("instance {id:?} of service {service:?} not found")]
    UnknownInstance {
        /// The service.
        service: ServiceName,
        /// The instance.
        id: InstanceId,
    },
    /// Writing the output failed.
    #[error("cannot write the output")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// A refused command-line value.
    pub(crate) fn invalid(
        field: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        CliError::Invalid {
            field,
            value: bounded(value.into()),
            reason: reason.into(),
        }
    }
}

impl From<InvalidInput> for CliError {
    fn from(e: InvalidInput) -> Self {
        CliError::invalid(e.field().as_str(), e.value(), e.reason())
    }
}

/// A registry error, with the validation and not-found cases made the CLI's own.
pub(crate) fn from_registry(e: registry::Error) -> CliError {
    match e {
        registry::Error::Invalid(e) => e.into(),
        registry::Error::NotFound { service, id } => CliError::UnknownInstance { service, id },
        e => CliError::Registry(e),
    }
}

/// `value`, cut to at most 120 bytes (at a character boundary) with `...` after.
fn bounded(mut value: String) -> String {
    if value.len() > 123 {
        let mut cut = 120;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        value.push_str("...");
    }
    value
}
