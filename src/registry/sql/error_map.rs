//! How sqlx's errors become registry errors: their kind (transient or not) and their text,
//! with the connection's secrets taken out.

use super::redact::Redactor;
use super::SqlRegistry;
use crate::registry::error::{DatabaseError, DatabaseErrorKind};
use crate::registry::Error;

impl Redactor {
    /// `e` as a registry error of `operation`, its text redacted.
    pub(super) fn error(&self, operation: &'static str, e: sqlx::Error) -> Error {
        Error::Database(DatabaseError {
            kind: classify(&e),
            operation,
            message: self.text(&e),
        })
    }
}

impl SqlRegistry {
    /// Maps a failure of `operation` to a registry error (for `map_err`).
    pub(super) fn err(&self, operation: &'static str) -> impl Fn(sqlx::Error) -> Error + '_ {
        move |e| self.shared.redactor.error(operation, e)
    }
}

/// Connection, timeout and lock-contention failures are transient (retrying may succeed);
/// a statement the database refuses is not.
fn classify(e: &sqlx::Error) -> DatabaseErrorKind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DatabaseErrorKind::Connection,
        sqlx::Error::PoolTimedOut => DatabaseErrorKind::Timeout,
        sqlx::Error::Migrate(_) => DatabaseErrorKind::Migration,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // Connection exceptions, operator intervention, resources, serialization
            // (PostgreSQL classes 08, 57, 53, 40); MySQL shutdown, gone away, lock waits,
            // deadlocks, too many connections; SQLite busy and locked.
            let transient = ["08", "57", "53", "40"].iter().any(|c| code.starts_with(c))
                || [
                    "1040", "1053", "1205", "1213", "2006", "2013", "5", "6", "261", "517",
                ]
                .contains(&code.as_ref());
            if transient {
                DatabaseErrorKind::Connection
            } else {
                DatabaseErrorKind::Rejected
            }
        }
        _ => DatabaseErrorKind::Other,
    }
}
