//! Configuring and connecting a [`SqlRegistry`]: the backend a URL names, the builder and
//! its validation, the pool, and the embedded migrations.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use super::redact::{driver_url, redact_url, secrets_of, Redactor};
use super::statements::Statements;
use super::{Shared, SqlRegistry};
use crate::registry::error::{ConfigError, DatabaseError, DatabaseErrorKind};
use crate::registry::{Clock, Error};

/// Which database a [`SqlRegistry`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite (a file or `:memory:`), in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl Backend {
    /// The backend a URL's scheme names, if it names one (compiled in or not).
    pub(crate) fn from_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "mysql" | "mariadb" => Some(Backend::MySql),
            _ => None,
        }
    }

    fn from_url(url: &str, redacted: &str) -> Result<Self, ConfigError> {
        let scheme = url.split(':').next().unwrap_or_default();
        let Some(backend) = Self::from_scheme(scheme) else {
            return Err(ConfigError::new(
                "database url",
                format_args!("{redacted:?}"),
                "must start with sqlite:, postgres://, postgresql://, mysql:// or mariadb://",
            ));
        };
        if !backend.is_compiled_in() {
            return Err(ConfigError::new(
                "database url",
                format_args!("{redacted:?}"),
                "this backend is not compiled in: enable the registry-sqlite, registry-postgres or registry-mysql feature",
            ));
        }
        Ok(backend)
    }

    fn is_compiled_in(self) -> bool {
        match self {
            Backend::Sqlite => cfg!(feature = "registry-sqlite"),
            Backend::Postgres => cfg!(feature = "registry-postgres"),
            Backend::MySql => cfg!(feature = "registry-mysql"),
        }
    }

    /// The backend's name: `sqlite`, `postgres`, `mysql`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }
}

/// Configures and connects a [`SqlRegistry`]; see [`SqlRegistry::builder`].
///
/// The setters take any value; [`connect`](SqlRegistryBuilder::connect) refuses a bad one
/// with [`Error::Config`] naming the setting and the value, before it connects.
#[derive(Clone)]
pub struct SqlRegistryBuilder {
    url: String,
    clock: Option<Clock>,
    poll_interval: Duration,
    fallback_poll: Duration,
    max_connections: u32,
    acquire_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    watch_batch: u32,
    migrate: bool,
}

impl fmt::Debug for SqlRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlRegistryBuilder")
            .field("url", &redact_url(&self.url))
            .field("poll_interval", &self.poll_interval)
            .field("fallback_poll", &self.fallback_poll)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl SqlRegistryBuilder {
    pub(super) fn new(url: String) -> Self {
        SqlRegistryBuilder {
            url,
            clock: None,
            poll_interval: Duration::from_millis(500),
            fallback_poll: Duration::from_secs(10),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            watch_batch: 512,
            migrate: true,
        }
    }

    /// The clock leases are measured with (default: [`Clock::system`]). On PostgreSQL and
    /// MySQL leases follow the database's clock, shared by every machine; a [`ManualClock`]'s
    /// advances move it forward for tests (see [`Clock`]).
    ///
    /// [`ManualClock`]: crate::registry::ManualClock
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How often SQLite and MySQL watchers poll for changes (default 500 ms; must not be
    /// zero).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How often PostgreSQL watchers poll even without a notification (default 10 s; must not
    /// be zero).
    pub fn fallback_poll(mut self, interval: Duration) -> Self {
        self.fallback_poll = interval;
        self
    }

    /// Most connections in the pool (default 10; at least 1). A `:memory:` SQLite database
    /// always uses exactly one, whatever is set here: the database lives only as long as its
    /// one connection.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long to wait for a pooled connection, including making one, before failing
    /// (default 10 s; must not be zero).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Backoff of a failing watch and of the PostgreSQL listener's reconnections: the first
    /// pause, and the cap it doubles up to (default 100 ms and 5 s). `initial` must not be
    /// zero, and `max` not shorter than `initial`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Whether to run the embedded migrations when connecting (default `true`).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Refuses the settings that cannot work, naming the first one.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::nonzero("poll_interval", self.poll_interval)?;
        ConfigError::nonzero("fallback_poll", self.fallback_poll)?;
        ConfigError::nonzero("acquire_timeout", self.acquire_timeout)?;
        ConfigError::nonzero("backoff initial", self.backoff_initial)?;
        if self.max_connections == 0 {
            return Err(ConfigError::new("max_connections", 0, "must be at least 1"));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(ConfigError::new(
                "backoff max",
                format_args!("{:?}", self.backoff_max),
                format!(
                    "must not be shorter than the initial backoff ({:?})",
                    self.backoff_initial
                ),
            ));
        }
        Ok(())
    }

    /// Checks the settings, connects, runs the migrations and returns the registry.
    ///
    /// Fails with [`Error::Config`] for an unsupported URL or a refused setting (before any
    /// connection is made), and with [`Error::Database`] if the database cannot be reached or
    /// migrated. A database that refuses connections is retried until the
    /// [acquire timeout](Self::acquire_timeout); then one more attempt (cut at that timeout,
    /// or at 5 s) names the cause in the error, such as `Connection refused`.
    ///
    /// Spawns nothing. On PostgreSQL the registry's first watch, when first polled, spawns
    /// the listener task on the runtime polling it; see the registry's
    /// [background task](super::SqlRegistry#background-task).
    pub async fn connect(self) -> Result<SqlRegistry, Error> {
        let redacted = redact_url(&self.url);
        let backend = Backend::from_url(&self.url, &redacted)?;
        self.validate()?;
        sqlx::any::install_default_drivers();
        let redactor = Redactor::new(secrets_of(&self.url));
        let memory = backend == Backend::Sqlite
            && (self.url.contains(":memory:") || self.url.contains("mode=memory"));
        let driver_url = driver_url(backend, &self.url);
        let url = if backend == Backend::Sqlite && !memory && !self.url.contains("mode=") {
            let sep = if self.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}mode=rwc", self.url)
        } else {
            driver_url.clone()
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(if memory { 1 } else { self.max_connections })
            .acquire_timeout(self.acquire_timeout);
        if memory {
            // The database lives only as long as its one connection.
            options = options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        }
        let pool = match options.connect(&url).await {
            Ok(pool) => pool,
            // sqlx retries a refused connection until the acquire timeout and then reports
            // only that it timed out; one more attempt, on its own, names the cause.
            Err(sqlx::Error::PoolTimedOut) => {
                return Err(connect_timed_out(&url, self.acquire_timeout, &redactor).await)
            }
            Err(e) => return Err(redactor.error("connect", e)),
        };
        if self.migrate {
            migrate(backend, &pool)
                .await
                .map_err(|e| redactor.error("migrate", e))?;
        }
        let (wake, _) = tokio::sync::watch::channel(0u64);
        Ok(SqlRegistry {
            shared: Arc::new(Shared {
                pool,
                backend,
                statements: Statements::new(backend),
                clock: self.clock.unwrap_or_default(),
                url: driver_url,
                redacted_url: redacted,
                redactor,
                wake,
                listener: Mutex::new(None),
                poll_interval: self.poll_interval,
                fallback_poll: self.fallback_poll,
                backoff_initial: self.backoff_initial,
                backoff_max: self.backoff_max,
                watch_batch: self.watch_batch,
            }),
        })
    }
}

// With the internal `sql` feature alone no backend is compiled in and every arm is gone.
#[cfg_attr(
    not(any(
        feature = "registry-sqlite",
        feature = "registry-postgres",
        feature = "registry-mysql"
    )),
    allow(unused_variables, unreachable_code)
)]
async fn migrate(backend: Backend, pool: &AnyPool) -> Result<(), sqlx::Error> {
    match backend {
        #[cfg(feature = "registry-sqlite")]
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        #[cfg(feature = "registry-postgres")]
        Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        #[cfg(feature = "registry-mysql")]
        Backend::MySql => sqlx::migrate!("./migrations/mysql").run(pool).await?,
        #[allow(unreachable_patterns)]
        _ => unreachable!("backend {backend:?} was checked to be compiled in"),
    }
    Ok(())
}

/// The error of a first connection that timed out: what one direct connection attempt
/// (itself cut at `timeout`, at most 5 s) fails with, or the timeout alone.
async fn connect_timed_out(url: &str, timeout: Duration, redactor: &Redactor) -> Error {
    use sqlx::Connection;
    let attempt = tokio::time::timeout(
        timeout.min(Duration::from_secs(5)),
        sqlx::AnyConnection::connect(url),
    )
    .await;
    let cause = match attempt {
        Ok(Err(e)) => format!(": {}", redactor.text(&e)),
        // It connected this time (the database has just come up), or timed out again.
        Ok(Ok(conn)) => {
            drop(conn);
            String::new()
        }
        Err(_) => String::new(),
    };
    Error::Database(DatabaseError::new(
        DatabaseErrorKind::Connection,
        "connect",
        format!("no connection within the acquire timeout ({timeout:?}){cause}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(builder: SqlRegistryBuilder) -> ConfigError {
        builder.validate().unwrap_err()
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let b = || SqlRegistryBuilder::new("sqlite::memory:".to_owned());
        assert!(b().validate().is_ok());
        let zero = Duration::ZERO;
        let cases = [
            (refused(b().poll_interval(zero)), "poll_interval", "0ns"),
            (refused(b().fallback_poll(zero)), "fallback_poll", "0ns"),
            (refused(b().acquire_timeout(zero)), "acquire_timeout", "0ns"),
            (refused(b().max_connections(0)), "max_connections", "0"),
            (
                refused(b().backoff(zero, Duration::from_secs(1))),
                "backoff initial",
                "0ns",
            ),
            (
                refused(b().backoff(Duration::from_secs(2), Duration::from_secs(1))),
                "backoff max",
                "1s",
            ),
        ];
        for (err, field, value) in cases {
            assert_eq!((err.field(), err.value()), (field, value), "{err}");
            assert!(err
                .to_string()
                .starts_with(&format!("invalid {field} {value}: ")));
        }
    }

    #[test]
    fn an_unknown_scheme_is_named_without_its_password() {
        let url = "redis://u:hunter2@h/0";
        let err = Backend::from_url(url, &redact_url(url)).unwrap_err();
        assert_eq!(err.field(), "database url");
        assert_eq!(err.value(), "\"redis://u:***@h/0\"");
        assert!(!err.to_string().contains("hunter2"));
    }
}
