//! A registry in SQLite, PostgreSQL or MySQL/MariaDB, through sqlx.
//!
//! [`SqlRegistry::connect`] takes a database URL (`sqlite://mesh.db`, `sqlite::memory:`,
//! `postgres://...`, `mysql://...`), runs the embedded migrations (one folder per database,
//! `migrations/{sqlite,postgres,mysql}`) and is ready. Several processes on several machines
//! can share one PostgreSQL or MySQL registry: every write takes the revision counter's row
//! lock inside its transaction, so revisions are unique, commit in order, and no update is lost.
//!
//! Watching: PostgreSQL wakes watchers with `LISTEN`/`NOTIFY` (one listening connection per
//! registry; a notification is only a hint, the watcher then reads `revision > last`; since
//! notifications are lost while no connection listens, every watcher re-reads the same way
//! right after each new `LISTEN`), and also polls every
//! [`fallback_poll`](SqlRegistryBuilder::fallback_poll) in case one is lost.
//! SQLite and MySQL watchers poll the same query every
//! [`poll_interval`](SqlRegistryBuilder::poll_interval). Writes made through the same
//! `SqlRegistry` wake its watchers at once on every backend.
//!
//! Leases on PostgreSQL and MySQL are measured with the database server's clock (deadlines are
//! computed in the SQL), so machines whose clocks disagree still agree on every lease; SQLite,
//! which lives on one machine, uses the registry's [`Clock`].
//!
//! Errors, logs and `Debug` never show the URL's password, whether it is the user-info's
//! (`postgres://user:secret@host/db`) or a query parameter's (`?password=secret`, and any
//! parameter whose name holds a secret, such as `sslpassword`): it is replaced by `***`.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_mesh::instance::Instance;
//! use tower_mesh::registry::{sql::SqlRegistry, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = SqlRegistry::connect("sqlite::memory:").await?;
//! registry.register(Instance::builder("orders", "orders-1").port(8080).build()?.into()).await?;
//!
//! // Count instances per service behind a tower service.
//! let reg = registry.clone();
//! let svc = ServiceBuilder::new().service_fn(move |name: &'static str| {
//!     let reg = reg.clone();
//!     async move { Ok::<_, tower_mesh::registry::Error>(reg.snapshot(&name.parse()?).await?.instances().len()) }
//! });
//! use tower::ServiceExt;
//! assert_eq!(svc.oneshot("orders").await?, 1);
//! # Ok(())
//! # }
//! ```

mod statements;
mod watch;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tokio::task::JoinHandle;

use crate::instance::{Field, Health, Instance, InstanceId, Scheme, ServiceName};

use self::statements::Statements;
use super::error::{ConfigError, DatabaseError, DatabaseErrorKind};
use super::{
    Clock, CorruptRecord, Error, LeaseConfig, ReapReport, Registration, Registry, Revision,
    Snapshot, Watch,
};

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
    fn from_url(url: &str, redacted: &str) -> Result<Self, ConfigError> {
        let scheme = url.split(':').next().unwrap_or_default();
        let backend =
            match scheme {
                "sqlite" => Backend::Sqlite,
                "postgres" | "postgresql" => Backend::Postgres,
                "mysql" | "mariadb" => Backend::MySql,
                _ => return Err(ConfigError::new(
                    "database url",
                    redacted,
                    "must start with sqlite:, postgres://, postgresql://, mysql:// or mariadb://",
                )),
            };
        let compiled = match backend {
            Backend::Sqlite => cfg!(feature = "registry-sqlite"),
            Backend::Postgres => cfg!(feature = "registry-postgres"),
            Backend::MySql => cfg!(feature = "registry-mysql"),
        };
        if !compiled {
            return Err(ConfigError::new(
                "database url",
                redacted,
                "this backend is not compiled in: enable the registry-sqlite, registry-postgres or registry-mysql feature",
            ));
        }
        Ok(backend)
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
    /// The clock leases are measured with (default: [`Clock::system`]). On PostgreSQL and
    /// MySQL leases follow the database's clock, shared by every machine; a [`ManualClock`]'s
    /// advances move it forward for tests (see [`Clock`]).
    ///
    /// [`ManualClock`]: crate::registry::ManualClock
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How often SQLite and MySQL watchers poll for changes (default 500 ms, at least 1 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often PostgreSQL watchers poll even without a notification (default 10 s).
    pub fn fallback_poll(mut self, interval: Duration) -> Self {
        self.fallback_poll = interval.max(Duration::from_millis(1));
        self
    }

    /// Most connections in the pool (default 10; a `:memory:` SQLite database always uses 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long to wait for a pooled connection before failing (default 10 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Backoff of a failing watch: first pause, and the cap it doubles up to (default 100 ms
    /// and 5 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_initial);
        self
    }

    /// Whether to run the embedded migrations when connecting (default `true`).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Connects, runs the migrations and returns the registry.
    pub async fn connect(self) -> Result<SqlRegistry, Error> {
        sqlx::any::install_default_drivers();
        let redacted = redact_url(&self.url);
        let backend = Backend::from_url(&self.url, &redacted)?;
        let secrets = secrets_of(&self.url);
        let redactor = Redactor { secrets };
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
        let pool = options
            .connect(&url)
            .await
            .map_err(|e| redactor.error("connect", e))?;
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

/// A registry in SQLite, PostgreSQL or MySQL/MariaDB; see the [module docs](self).
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct SqlRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    pool: AnyPool,
    backend: Backend,
    statements: Statements,
    clock: Clock,
    #[cfg_attr(not(feature = "registry-postgres"), allow(dead_code))]
    url: String,
    redacted_url: String,
    redactor: Redactor,
    wake: tokio::sync::watch::Sender<u64>,
    listener: Mutex<Option<JoinHandle<()>>>,
    poll_interval: Duration,
    fallback_poll: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    watch_batch: u32,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl fmt::Debug for SqlRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlRegistry")
            .field("backend", &self.shared.backend)
            .field("url", &self.shared.redacted_url)
            .finish()
    }
}

/// Replaces the connection's secrets (see [`secrets_of`]) wherever they appear in a message.
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn text(&self, text: impl fmt::Display) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    fn error(&self, operation: &'static str, e: sqlx::Error) -> Error {
        Error::Database(DatabaseError {
            kind: classify(&e),
            operation,
            message: self.text(&e),
        })
    }
}

/// Whether a URL query parameter carries a secret: `password` in any case, and any other
/// whose name holds one (`sslpassword`, `passwd`, `passphrase`, `pwd`, `secret`, `token`).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|s| name.contains(s))
}

/// The raw `name=value` pairs of a URL's query, with each name decoded.
fn raw_parameters(query: &str) -> impl Iterator<Item = (String, &str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(name), name, value)
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent-decoding.
fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Every form in which the URL's secrets may show up in a message: the user-info password and
/// the values of secret query parameters, as written and decoded. Longest first, so that a
/// secret holding another is replaced whole.
fn secrets_of(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    let mut add = |raw: &str| {
        let percent = percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned();
        for form in [raw.to_owned(), percent, form_decode(raw)] {
            if !form.is_empty() && !secrets.contains(&form) {
                secrets.push(form);
            }
        }
    };
    if let Some(password) = parsed.password() {
        add(password);
    }
    for (name, _, value) in raw_parameters(parsed.query().unwrap_or_default()) {
        if is_secret_parameter(&name) {
            add(value);
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// The URL with its user-info password and the values of its secret query parameters
/// replaced by `***`.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if let Some(query) = parsed.query() {
                let redacted: Vec<String> = raw_parameters(query)
                    .map(|(name, raw_name, value)| {
                        if is_secret_parameter(&name) {
                            format!("{raw_name}=***")
                        } else {
                            format!("{raw_name}={value}")
                        }
                    })
                    .collect();
                let redacted = redacted.join("&");
                parsed.set_query(Some(&redacted));
            }
            parsed.to_string()
        }
        // Unparseable: it may still hold a password, so show only the scheme.
        Err(_) => format!(
            "{}:<unparseable>",
            url.split(':').next().unwrap_or_default()
        ),
    }
}

/// The URL handed to sqlx. sqlx's PostgreSQL driver logs every query parameter it does not
/// know with its value (and ignores it), so secret parameters other than `password` (which it
/// uses) are taken out here, with a warning that names them only.
fn driver_url(backend: Backend, url: &str) -> String {
    if backend != Backend::Postgres {
        return url.to_owned();
    }
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let mut kept = Vec::new();
    for (name, raw_name, value) in raw_parameters(query) {
        if is_secret_parameter(&name) && name != "password" {
            tracing::warn!(
                parameter = %name,
                "database url: ignoring a parameter the PostgreSQL driver does not support \
                 (its value is not shown)"
            );
        } else {
            kept.push(format!("{raw_name}={value}"));
        }
    }
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

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

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl SqlRegistry {
    /// Connects to `url` with default settings and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// A builder for a registry at `url`.
    pub fn builder(url: impl Into<String>) -> SqlRegistryBuilder {
        SqlRegistryBuilder {
            url: url.into(),
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

    /// The database this registry talks to.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// The connection pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &AnyPool {
        &self.shared.pool
    }

    /// Closes the connection pool; later calls fail with a connection error.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }

    /// The parameter of the SQL's lease time: the clock's reading on SQLite; on PostgreSQL and
    /// MySQL, where the database's clock is used, only a manual clock's advances (see
    /// [`Clock`]).
    fn lease_time(&self) -> i64 {
        match self.shared.backend {
            Backend::Sqlite => self.shared.clock.now_ms(),
            Backend::Postgres | Backend::MySql => self.shared.clock.advanced_ms(),
        }
    }

    fn err(&self, operation: &'static str) -> impl Fn(sqlx::Error) -> Error + '_ {
        move |e| self.shared.redactor.error(operation, e)
    }

    fn woke(&self) {
        self.shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reserves `n` revisions inside `tx` (holding the counter's row lock until commit) and
    /// returns the last.
    async fn bump(&self, tx: &mut Tx<'_>, n: i64, op: &'static str) -> Result<i64, Error> {
        let s = &self.shared.statements;
        if let Some(sql) = &s.bump_returning {
            let row = sqlx::query(sql)
                .bind(n)
                .fetch_one(&mut **tx)
                .await
                .map_err(self.err(op))?;
            row.try_get::<i64, _>(0).map_err(self.err(op))
        } else {
            let lock = s.lock_revision.as_deref().unwrap_or_default();
            let row = sqlx::query(lock)
                .fetch_one(&mut **tx)
                .await
                .map_err(self.err(op))?;
            let rev = row.try_get::<i64, _>(0).map_err(self.err(op))? + n;
            sqlx::query(s.set_revision.as_deref().unwrap_or_default())
                .bind(rev)
                .execute(&mut **tx)
                .await
                .map_err(self.err(op))?;
            Ok(rev)
        }
    }

    /// Copies the instances written at revisions `(from, to]` into the event log, notifies
    /// and commits.
    async fn finish(
        &self,
        mut tx: Tx<'_>,
        from: i64,
        to: i64,
        op: &'static str,
    ) -> Result<(), Error> {
        let s = &self.shared.statements;
        sqlx::query(&s.copy_events)
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        self.commit(tx, op).await
    }

    async fn commit(&self, mut tx: Tx<'_>, op: &'static str) -> Result<(), Error> {
        if let Some(notify) = self.shared.statements.notify {
            (&mut *tx).execute(notify).await.map_err(self.err(op))?;
        }
        tx.commit().await.map_err(self.err(op))?;
        self.woke();
        Ok(())
    }

    /// Gives `tx` back if the statement touched a row; otherwise rolls it back (returning its
    /// revision) and reports the instance as not found.
    async fn found<'a>(
        &self,
        tx: Tx<'a>,
        affected: u64,
        service: &ServiceName,
        id: &InstanceId,
        op: &'static str,
    ) -> Result<Tx<'a>, Error> {
        if affected > 0 {
            return Ok(tx);
        }
        tx.rollback().await.map_err(self.err(op))?;
        Err(Error::NotFound {
            service: service.clone(),
            id: id.clone(),
        })
    }

    /// Logs the deletion of an instance at `rev`.
    async fn log_delete(
        &self,
        tx: &mut Tx<'_>,
        rev: i64,
        service: &ServiceName,
        id: &InstanceId,
        op: &'static str,
    ) -> Result<(), Error> {
        sqlx::query(&self.shared.statements.delete_event)
            .bind(rev)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .execute(&mut **tx)
            .await
            .map_err(self.err(op))?;
        Ok(())
    }

    async fn begin(&self, op: &'static str) -> Result<Tx<'_>, Error> {
        self.shared.pool.begin().await.map_err(self.err(op))
    }

    async fn upsert(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        const CHUNK: usize = 256;
        if registrations.is_empty() {
            return self.revision().await;
        }
        let op = "register";
        let now = self.lease_time();
        if let (Some(sql), [reg]) = (&self.shared.statements.register_one, &registrations[..]) {
            // One round trip, one implicit transaction.
            let row = bind_instance(sqlx::query(sql), reg, now)
                .fetch_one(&self.shared.pool)
                .await
                .map_err(self.err(op))?;
            let rev: i64 = row.try_get(0).map_err(self.err(op))?;
            self.woke();
            return Ok(Revision::new(rev as u64));
        }
        let mut tx = self.begin(op).await?;
        let n = registrations.len() as i64;
        let last = self.bump(&mut tx, n, op).await?;
        let first = last - n + 1;
        let mut rev = first;
        for chunk in registrations.chunks(CHUNK) {
            let sql = self.shared.statements.upsert(chunk.len());
            let mut query = sqlx::query(&sql);
            for reg in chunk {
                query = bind_instance(query, reg, now).bind(rev);
                rev += 1;
            }
            query.execute(&mut *tx).await.map_err(self.err(op))?;
        }
        self.finish(tx, first - 1, last, op).await?;
        Ok(Revision::new(last as u64))
    }

    async fn read_snapshot(
        &self,
        service: Option<&ServiceName>,
        op: &'static str,
    ) -> Result<Snapshot, Error> {
        let s = &self.shared.statements;
        let mut tx = self.begin(op).await?;
        if let Some(iso) = s.snapshot_isolation {
            (&mut *tx).execute(iso).await.map_err(self.err(op))?;
        }
        let state = sqlx::query(&s.state)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.err(op))?;
        let revision: i64 = state.try_get(0).map_err(self.err(op))?;
        let mut snapshot = Snapshot {
            revision: Revision::new(revision as u64),
            ..Snapshot::default()
        };
        // Rows are decoded as they arrive, while the database produces the next ones.
        let query = match service {
            Some(name) => sqlx::query(&s.snapshot_service).bind(name.as_str().to_owned()),
            None => sqlx::query(&s.snapshot_all),
        };
        {
            let mut rows = query.fetch(&mut *tx);
            let mut columns = None;
            while let Some(row) = rows.try_next().await.map_err(self.err(op))? {
                let columns = match &columns {
                    Some(c) => c,
                    None => columns.insert(Columns::of(&row).map_err(self.err(op))?),
                };
                let rev = row.try_get::<i64, _>(columns.revision).ok();
                match decode_instance(&row, columns, service, rev) {
                    Ok(i) => snapshot.instances.push(i),
                    Err(c) => {
                        tracing::warn!(record = %c, "registry: corrupt stored instance");
                        snapshot.corrupt.push(c);
                    }
                }
            }
        }
        tx.rollback().await.map_err(self.err(op))?;
        Ok(snapshot)
    }

    /// Starts the PostgreSQL listener if it is not running: the first time a watcher needs
    /// it, and again whenever it has ended.
    #[cfg(feature = "registry-postgres")]
    fn ensure_listener(&self) {
        if self.shared.backend != Backend::Postgres {
            return;
        }
        let mut slot = crate::sync::lock(&self.shared.listener);
        match &*slot {
            Some(task) if !task.is_finished() => return,
            // It cannot return, so it panicked or its runtime shut down (the first watch was
            // polled on a runtime that is gone). Its end woke every watcher; the first one here
            // starts it again, on its own runtime.
            Some(_) => tracing::warn!(
                "registry listener task ended (panicked, or its runtime shut down); restarting it"
            ),
            None => {}
        }
        let url = self.shared.url.clone();
        let wake = self.shared.wake.clone();
        let secrets = Redactor {
            secrets: self.shared.redactor.secrets.clone(),
        };
        let (initial, max) = (self.shared.backoff_initial, self.shared.backoff_max);
        *slot = Some(tokio::spawn(watch::listen(
            url, wake, secrets, initial, max,
        )));
    }

    #[cfg(not(feature = "registry-postgres"))]
    fn ensure_listener(&self) {}
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the instance columns up to `expires_at_ms` (thirteen parameters: the lease deadline is
/// `ttl + lease time`, see [`SqlRegistry::lease_time`]).
fn bind_instance<'q>(query: AnyQuery<'q>, reg: &Registration, now: i64) -> AnyQuery<'q> {
    let i = &reg.instance;
    let metadata = serde_json::to_string(i.metadata()).unwrap_or_default();
    let ttl = reg.ttl_ms();
    query
        .bind(i.service().as_str().to_owned())
        .bind(i.id().as_str().to_owned())
        .bind(i.host().to_owned())
        .bind(i64::from(i.port()))
        .bind(i.scheme().as_str())
        .bind(i.version().to_owned())
        .bind(i64::from(i.weight()))
        .bind(i.zone().map(str::to_owned))
        .bind(metadata)
        .bind(i.health().as_str())
        .bind(ttl)
        .bind(ttl)
        .bind(now)
}

fn text_of(row: &AnyRow, column: &str) -> String {
    match row.try_get::<Option<String>, _>(column) {
        Ok(Some(s)) => s,
        Ok(None) => "NULL".to_owned(),
        Err(_) => match row.try_get::<i64, _>(column) {
            Ok(n) => n.to_string(),
            Err(_) => "<undecodable>".to_owned(),
        },
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Where an instance's columns are in a result set: found by name once per result set, then
/// read by position in every row.
pub(super) struct Columns {
    /// Absent when the query was for one service.
    service: Option<usize>,
    id: usize,
    host: usize,
    port: usize,
    scheme: usize,
    version: usize,
    weight: usize,
    zone: usize,
    metadata: usize,
    health: usize,
    pub(super) revision: usize,
}

impl Columns {
    pub(super) fn of(row: &AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Column;
        let at = |name: &str| row.try_column(name).map(|c| c.ordinal());
        Ok(Columns {
            service: at("service").ok(),
            id: at("instance_id")?,
            host: at("host")?,
            port: at("port")?,
            scheme: at("scheme")?,
            version: at("version")?,
            weight: at("weight")?,
            zone: at("zone")?,
            metadata: at("metadata")?,
            health: at("health")?,
            revision: at("revision")?,
        })
    }
}

/// Decodes an instance row (or an event row of kind `put`); any field that does not decode is
/// a [`CorruptRecord`] naming the service, the instance and the field.
fn decode_instance(
    row: &AnyRow,
    columns: &Columns,
    service: Option<&ServiceName>,
    revision: Option<i64>,
) -> Result<Instance, CorruptRecord> {
    let service_text = || match (service, columns.service) {
        (Some(s), _) => s.to_string(),
        (None, Some(index)) => text_at(row, index),
        (None, None) => "<unknown>".to_owned(),
    };
    let corrupt = |field: &'static str, value: String, reason: String| {
        CorruptRecord::new(
            service_text(),
            text_at(row, columns.id),
            revision.map(|r| Revision::new(r as u64)),
            field,
            truncate(value),
            reason,
        )
    };
    // Borrowed from the row: the builder makes the only copy.
    let text = |field: &'static str, index: usize| -> Result<&str, CorruptRecord> {
        row.try_get::<&str, _>(index)
            .map_err(|e| corrupt(field, text_at(row, index), e.to_string()))
    };
    let int = |field: &'static str, index: usize| -> Result<i64, CorruptRecord> {
        row.try_get::<i64, _>(index)
            .map_err(|e| corrupt(field, text_at(row, index), e.to_string()))
    };
    let service = match (service, columns.service) {
        (Some(s), _) => s.as_str(),
        (None, Some(index)) => text("service", index)?,
        (None, None) => return Err(corrupt("service", "NULL".to_owned(), "missing".to_owned())),
    };
    let id = text("instance_id", columns.id)?;
    let host = text("host", columns.host)?;
    let port = int("port", columns.port)?;
    let scheme = text("scheme", columns.scheme)?;
    let scheme = Scheme::from_str(scheme)
        .map_err(|e| corrupt("scheme", scheme.to_owned(), e.reason().to_owned()))?;
    let version = text("version", columns.version)?;
    let weight = int("weight", columns.weight)?;
    let zone = row
        .try_get::<Option<&str>, _>(columns.zone)
        .map_err(|e| corrupt("zone", text_at(row, columns.zone), e.to_string()))?;
    let metadata_text = text("metadata", columns.metadata)?;
    let metadata = serde_json::from_str(metadata_text)
        .map_err(|e| corrupt("metadata", metadata_text.to_owned(), e.to_string()))?;
    let health = text("health", columns.health)?;
    let health = Health::from_str(health)
        .map_err(|e| corrupt("health", health.to_owned(), e.reason().to_owned()))?;
    let port = u32::try_from(port)
        .map_err(|_| corrupt("port", port.to_string(), "must be in 1..=65535".to_owned()))?;
    let weight = u32::try_from(weight).map_err(|_| {
        corrupt(
            "weight",
            weight.to_string(),
            "must not be negative".to_owned(),
        )
    })?;
    let mut builder = Instance::builder(service, id)
        .host(host)
        .port(port)
        .scheme(scheme)
        .version(version)
        .weight(weight)
        .metadata_map(metadata)
        .health(health);
    if let Some(zone) = zone {
        builder = builder.zone(zone);
    }
    builder.build().map_err(|e| {
        let field = match e.field() {
            Field::Service => "service",
            Field::Id => "instance_id",
            Field::Host => "host",
            Field::Port => "port",
            Field::Version => "version",
            Field::Weight => "weight",
            Field::Zone => "zone",
            Field::Metadata => "metadata",
            _ => "instance",
        };
        corrupt(field, e.value().to_owned(), e.reason().to_owned())
    })
}

/// A column's value as text, for error reports.
fn text_at(row: &AnyRow, index: usize) -> String {
    match row.try_get::<Option<String>, _>(index) {
        Ok(Some(s)) => s,
        Ok(None) => "NULL".to_owned(),
        Err(_) => match row.try_get::<i64, _>(index) {
            Ok(n) => n.to_string(),
            Err(_) => "<undecodable>".to_owned(),
        },
    }
}

impl Registry for SqlRegistry {
    async fn register(&self, registration: Registration) -> Result<Revision, Error> {
        self.upsert(vec![registration]).await
    }

    async fn register_all(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        self.upsert(registrations).await
    }

    async fn deregister(&self, service: &ServiceName, id: &InstanceId) -> Result<Revision, Error> {
        let op = "deregister";
        let s = &self.shared.statements;
        let mut tx = self.begin(op).await?;
        let rev = self.bump(&mut tx, 1, op).await?;
        let deleted = sqlx::query(&s.delete_instance)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        let mut tx = self
            .found(tx, deleted.rows_affected(), service, id, op)
            .await?;
        self.log_delete(&mut tx, rev, service, id, op).await?;
        self.commit(tx, op).await?;
        Ok(Revision::new(rev as u64))
    }

    async fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Revision>, Error> {
        let op = "heartbeat";
        let s = &self.shared.statements;
        let now = self.lease_time();
        let renewed = sqlx::query(&s.heartbeat)
            .bind(now)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .execute(&self.shared.pool)
            .await
            .map_err(self.err(op))?;
        if renewed.rows_affected() > 0 {
            return Ok(None);
        }
        // Not renewed: unknown, leaseless, lapsed, or (MySQL) unchanged.
        let row = sqlx::query(&s.lease_state)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(self.err(op))?;
        let Some(row) = row else {
            return Err(Error::NotFound {
                service: service.clone(),
                id: id.clone(),
            });
        };
        let ttl: Option<i64> = row.try_get(0).map_err(self.err(op))?;
        let lapsed: i64 = row.try_get(1).map_err(self.err(op))?;
        if ttl.is_none() {
            return Err(Error::NoLease {
                service: service.clone(),
                id: id.clone(),
            });
        }
        if lapsed == 0 {
            return Ok(None);
        }
        let mut tx = self.begin(op).await?;
        let rev = self.bump(&mut tx, 1, op).await?;
        let revived = sqlx::query(&s.revive)
            .bind(now)
            .bind(rev)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        if revived.rows_affected() == 0 {
            // Someone else revived it meanwhile; renew as usual.
            tx.rollback().await.map_err(self.err(op))?;
            sqlx::query(&s.heartbeat)
                .bind(now)
                .bind(service.as_str().to_owned())
                .bind(id.as_str().to_owned())
                .execute(&self.shared.pool)
                .await
                .map_err(self.err(op))?;
            return Ok(None);
        }
        self.finish(tx, rev - 1, rev, op).await?;
        Ok(Some(Revision::new(rev as u64)))
    }

    async fn set_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        health: Health,
    ) -> Result<Revision, Error> {
        let op = "set_health";
        let mut tx = self.begin(op).await?;
        let rev = self.bump(&mut tx, 1, op).await?;
        let updated = sqlx::query(&self.shared.statements.set_health)
            .bind(health.as_str())
            .bind(rev)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        let tx = self
            .found(tx, updated.rows_affected(), service, id, op)
            .await?;
        self.finish(tx, rev - 1, rev, op).await?;
        Ok(Revision::new(rev as u64))
    }

    async fn snapshot(&self, service: &ServiceName) -> Result<Snapshot, Error> {
        self.read_snapshot(Some(service), "snapshot").await
    }

    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        let op = "services";
        let rows = sqlx::query(&self.shared.statements.services)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(self.err(op))?;
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(self.err(op))?;
            match ServiceName::new(&name) {
                Ok(n) => names.push(n),
                Err(e) => tracing::warn!(error = %e, "registry: corrupt stored service name"),
            }
        }
        Ok(names)
    }

    async fn revision(&self) -> Result<Revision, Error> {
        let row = sqlx::query(&self.shared.statements.state)
            .fetch_one(&self.shared.pool)
            .await
            .map_err(self.err("revision"))?;
        let rev: i64 = row.try_get(0).map_err(self.err("revision"))?;
        Ok(Revision::new(rev as u64))
    }

    fn watch(&self, service: &ServiceName, since: Revision) -> Watch {
        watch::watch(self.clone(), Some(service.clone()), since)
    }

    fn watch_all(&self, since: Revision) -> Watch {
        watch::watch(self.clone(), None, since)
    }

    async fn compact(&self, up_to: Revision) -> Result<(), Error> {
        let op = "compact";
        let s = &self.shared.statements;
        let up_to = up_to.get() as i64;
        let mut tx = self.begin(op).await?;
        let moved = sqlx::query(&s.compact_state)
            .bind(up_to)
            .bind(up_to)
            .bind(up_to)
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        if moved.rows_affected() > 0 {
            sqlx::query(&s.compact_events)
                .bind(up_to)
                .execute(&mut *tx)
                .await
                .map_err(self.err(op))?;
        }
        tx.commit().await.map_err(self.err(op))?;
        Ok(())
    }

    async fn reap(&self, config: &LeaseConfig) -> Result<ReapReport, Error> {
        let op = "reap";
        let s = &self.shared.statements;
        let now = self.lease_time();
        let pool = &self.shared.pool;
        let counts = sqlx::query(&s.lease_counts)
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(self.err(op))?;
        let leased: i64 = counts.try_get(0).map_err(self.err(op))?;
        let lapsed: i64 = counts.try_get(1).map_err(self.err(op))?;
        let names = |rows: Vec<AnyRow>| -> Vec<(ServiceName, InstanceId)> {
            rows.iter()
                .filter_map(|r| {
                    let service = r.try_get::<String, _>(0).ok()?;
                    let id = r.try_get::<String, _>(1).ok()?;
                    match (ServiceName::new(&service), InstanceId::new(&id)) {
                        (Ok(s), Ok(i)) => Some((s, i)),
                        _ => {
                            tracing::warn!(
                                service,
                                instance = id,
                                "reaper: corrupt stored instance key; left alone"
                            );
                            None
                        }
                    }
                })
                .collect()
        };
        let mut lapsing = names(
            sqlx::query(&s.lapsing)
                .bind(now)
                .fetch_all(pool)
                .await
                .map_err(self.err(op))?,
        );
        // Turned critical at least a grace period ago.
        let mut overdue = names(
            sqlx::query(&s.overdue)
                .bind(now)
                .bind(config.grace_ms())
                .fetch_all(pool)
                .await
                .map_err(self.err(op))?,
        );
        let mut report = ReapReport::default();
        if config.hold_back(lapsed.max(0) as usize, leased.max(0) as usize) {
            report.held_back = lapsing.len() + overdue.len();
            lapsing.clear();
            overdue.clear();
        }
        for (service, id) in lapsing {
            let mut tx = self.begin(op).await?;
            let rev = self.bump(&mut tx, 1, op).await?;
            let done = sqlx::query(&s.expire)
                .bind(now)
                .bind(rev)
                .bind(service.as_str().to_owned())
                .bind(id.as_str().to_owned())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(self.err(op))?;
            if done.rows_affected() == 0 {
                tx.rollback().await.map_err(self.err(op))?;
                continue;
            }
            self.finish(tx, rev - 1, rev, op).await?;
            report.expired.push((service, id));
        }
        for (service, id) in overdue {
            let mut tx = self.begin(op).await?;
            let rev = self.bump(&mut tx, 1, op).await?;
            let done = sqlx::query(&s.remove_overdue)
                .bind(service.as_str().to_owned())
                .bind(id.as_str().to_owned())
                .bind(now)
                .bind(config.grace_ms())
                .execute(&mut *tx)
                .await
                .map_err(self.err(op))?;
            if done.rows_affected() == 0 {
                tx.rollback().await.map_err(self.err(op))?;
                continue;
            }
            self.log_delete(&mut tx, rev, &service, &id, op).await?;
            self.commit(tx, op).await?;
            report.deregistered.push((service, id));
        }
        Ok(report)
    }

    fn clock(&self) -> &Clock {
        &self.shared.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_secrets() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=pw",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://u@h/db?sslmode=require&sslpassword=pw&application_name=a%20b",
                "postgres://u@h/db?sslmode=require&sslpassword=***&application_name=a%20b",
            ),
            (
                "mysql://u@h/db?PassWord=p%26w+x",
                "mysql://u@h/db?PassWord=***",
            ),
            ("sqlite://mesh.db?mode=rwc", "sqlite://mesh.db?mode=rwc"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn every_form_of_a_secret_is_redacted() {
        let secrets = secrets_of("postgres://u:a%40b@h/db?x=1&password=p%26w+x&sslpassword=s");
        for form in ["a%40b", "a@b", "p%26w+x", "p&w+x", "p&w x", "s"] {
            assert!(secrets.iter().any(|s| s == form), "{form}: {secrets:?}");
        }
        let redactor = Redactor { secrets };
        assert_eq!(
            redactor.text("auth p&w x failed for a@b"),
            "auth *** failed for ***"
        );
        assert!(secrets_of("postgres://u@h/db?password=").is_empty());
    }

    #[test]
    fn the_postgres_driver_gets_only_parameters_it_uses() {
        assert_eq!(
            driver_url(
                Backend::Postgres,
                "postgres://u@h/db?password=p&sslpassword=s&sslmode=require"
            ),
            "postgres://u@h/db?password=p&sslmode=require"
        );
        assert_eq!(
            driver_url(Backend::Postgres, "postgres://u@h/db?sslpassword=s"),
            "postgres://u@h/db"
        );
        let mysql = "mysql://u@h/db?sslpassword=s";
        assert_eq!(driver_url(Backend::MySql, mysql), mysql);
    }
}
