//! Registry errors.
//!
//! Every error prints once in a chain: [`Error`] is transparent over the errors it carries
//! ([`InvalidInput`], [`CorruptRecord`], [`DatabaseError`], [`ConfigError`]: its `Display` and
//! `source` are theirs), and those are leaves with no `source` of their own (a database
//! driver's error is kept as redacted text, since its own `Display` may hold a password).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::instance::{InstanceId, InvalidInput, ServiceName};

use super::Revision;

/// What a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value was rejected before anything was stored.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The instance is not registered.
    #[error("instance {id:?} of service {service:?} not found")]
    NotFound {
        /// The service asked for.
        service: ServiceName,
        /// The instance asked for.
        id: InstanceId,
    },
    /// A heartbeat for an instance registered without a lease (no TTL).
    #[error(
        "instance {id:?} of service {service:?} has no lease to renew: it was registered without a ttl"
    )]
    NoLease {
        /// The service of the instance.
        service: ServiceName,
        /// The instance.
        id: InstanceId,
    },
    /// A stored row or event could not be decoded. The other instances are unaffected.
    #[error(transparent)]
    Corrupt(CorruptRecord),
    /// The database failed; the message never holds the connection's password.
    #[error(transparent)]
    Database(DatabaseError),
    /// The registry was configured with a bad value (an unsupported URL, a zero interval).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// Whether retrying the same call later may succeed (a database or connection failure),
    /// as opposed to a problem with the call itself.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Database(e) if e.is_transient())
    }
}

/// A stored instance or event that does not decode: which service, which instance, which
/// field, the stored value and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "corrupt stored instance {:?} of service {:?}{}: {} {:?} does not decode: {}",
    .0.id, .0.service, AtRevision(.0.revision), .0.field, .0.value, .0.reason
)]
pub struct CorruptRecord(Box<CorruptInner>);

/// ` at revision N`, or nothing when the revision is unknown.
struct AtRevision(Option<Revision>);

impl fmt::Display for AtRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(rev) => write!(f, " at revision {rev}"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CorruptInner {
    service: String,
    id: String,
    revision: Option<Revision>,
    field: &'static str,
    value: String,
    reason: String,
}

impl CorruptRecord {
    // Made by the SQL backends only.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn new(
        service: String,
        id: String,
        revision: Option<Revision>,
        field: &'static str,
        value: String,
        reason: String,
    ) -> Self {
        CorruptRecord(Box::new(CorruptInner {
            service,
            id,
            revision,
            field,
            value,
            reason,
        }))
    }

    /// The service the record belongs to, as stored.
    pub fn service(&self) -> &str {
        &self.0.service
    }

    /// The instance id, as stored.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The revision of the record, when known.
    pub fn revision(&self) -> Option<Revision> {
        self.0.revision
    }

    /// The column that failed to decode.
    pub fn field(&self) -> &'static str {
        self.0.field
    }

    /// The stored value (truncated past 120 bytes).
    pub fn value(&self) -> &str {
        &self.0.value
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.0.reason
    }
}

/// What kind of database failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseErrorKind {
    /// Could not connect, or the connection broke.
    Connection,
    /// The pool or a query timed out.
    Timeout,
    /// The database refused the statement (a constraint, a syntax or schema problem).
    Rejected,
    /// Running the embedded migrations failed.
    Migration,
    /// Anything else.
    Other,
}

/// A database failure, with the cause's text; any password of the connection is replaced by
/// `***` before the text is kept. A leaf: the driver's error is kept as that text, not as a
/// `source`.
#[derive(Clone, thiserror::Error)]
#[error("database error during {operation}: {message}")]
pub struct DatabaseError {
    pub(crate) kind: DatabaseErrorKind,
    pub(crate) operation: &'static str,
    pub(crate) message: String,
}

impl DatabaseError {
    /// A database error, for [`Registry`](super::Registry) implementations of your own. Keep
    /// secrets out of `message`.
    pub fn new(
        kind: DatabaseErrorKind,
        operation: &'static str,
        message: impl Into<String>,
    ) -> Self {
        DatabaseError {
            kind,
            operation,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> DatabaseErrorKind {
        self.kind
    }

    /// The registry operation that failed (`register`, `watch`, ...).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The cause, as the database driver described it (redacted).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            DatabaseErrorKind::Connection | DatabaseErrorKind::Timeout | DatabaseErrorKind::Other
        )
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseError")
            .field("kind", &self.kind)
            .field("operation", &self.operation)
            .field("message", &self.message)
            .finish()
    }
}

/// A bad registry configuration value, refused when the registry, cache, reaper or lease
/// configuration is built: the setting's name, the value given (a URL with its password
/// replaced by `***`) and what it must be. A leaf: it has no `source`.
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::registry::LeaseConfig;
///
/// let err = LeaseConfig::builder().sweep_interval(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "sweep_interval");
/// assert_eq!(err.to_string(), "invalid sweep_interval 0ns: must be greater than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value}: {reason}")]
pub struct ConfigError {
    field: &'static str,
    value: String,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// `value` is shown as given: quote strings with `{:?}` before passing them.
    pub(crate) fn new(
        field: &'static str,
        value: impl fmt::Display,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// A zero duration where a positive one is needed.
    pub(crate) fn zero(field: &'static str) -> Self {
        ConfigError::new(field, "0ns", "must be greater than zero")
    }

    /// Refuses a zero `value` of the setting `field`.
    pub(crate) fn nonzero(field: &'static str, value: Duration) -> Result<Duration, Self> {
        if value.is_zero() {
            Err(ConfigError::zero(field))
        } else {
            Ok(value)
        }
    }

    /// The setting that was refused (`poll_interval`, `grace`, `database url`, ...).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The refused value as shown in the message (a URL with any password replaced by
    /// `***`).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the value must be.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
