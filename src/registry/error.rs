//! Registry errors.

use std::fmt;

use crate::instance::{InstanceId, InvalidInput, ServiceName};

use super::Revision;

/// What a registry operation can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A value was rejected before anything was stored.
    Invalid(InvalidInput),
    /// The instance is not registered.
    NotFound {
        /// The service asked for.
        service: ServiceName,
        /// The instance asked for.
        id: InstanceId,
    },
    /// A heartbeat for an instance registered without a lease (no TTL).
    NoLease {
        /// The service of the instance.
        service: ServiceName,
        /// The instance.
        id: InstanceId,
    },
    /// A stored row or event could not be decoded. The other instances are unaffected.
    Corrupt(CorruptRecord),
    /// The database failed; the message never holds the connection's password.
    Database(DatabaseError),
    /// The registry was configured with a bad value (an unsupported URL, say).
    Config(ConfigError),
}

impl Error {
    /// Whether retrying the same call later may succeed (a database or connection failure),
    /// as opposed to a problem with the call itself.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Database(e) if e.is_transient())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(e) => e.fmt(f),
            Error::NotFound { service, id } => {
                write!(f, "instance {id:?} of service {service:?} not found")
            }
            Error::NoLease { service, id } => write!(
                f,
                "instance {id:?} of service {service:?} has no lease to renew: it was registered without a ttl"
            ),
            Error::Corrupt(e) => e.fmt(f),
            Error::Database(e) => e.fmt(f),
            Error::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Invalid(e) => Some(e),
            Error::Corrupt(e) => Some(e),
            Error::Database(e) => Some(e),
            Error::Config(e) => Some(e),
            Error::NotFound { .. } | Error::NoLease { .. } => None,
        }
    }
}

impl From<InvalidInput> for Error {
    fn from(e: InvalidInput) -> Self {
        Error::Invalid(e)
    }
}

/// A stored instance or event that does not decode: which service, which instance, which
/// field, the stored value and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord(Box<CorruptInner>);

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

impl fmt::Display for CorruptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt stored instance {:?} of service {:?}",
            self.0.id, self.0.service
        )?;
        if let Some(rev) = self.0.revision {
            write!(f, " at revision {rev}")?;
        }
        write!(
            f,
            ": {} {:?} does not decode: {}",
            self.0.field, self.0.value, self.0.reason
        )
    }
}

impl std::error::Error for CorruptRecord {}

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
/// `***` before the text is kept.
#[derive(Clone)]
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

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database error during {}: {}",
            self.operation, self.message
        )
    }
}

impl std::error::Error for DatabaseError {}

/// A bad registry configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) field: &'static str,
    pub(crate) value: String,
    pub(crate) reason: &'static str,
}

impl ConfigError {
    // Made by the SQL backends only.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn new(field: &'static str, value: impl Into<String>, reason: &'static str) -> Self {
        ConfigError {
            field,
            value: value.into(),
            reason,
        }
    }

    /// The setting that was refused.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The refused value (with any password replaced by `***`).
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: {}",
            self.field, self.value, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}
