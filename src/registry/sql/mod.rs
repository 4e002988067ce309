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
//! # Background task
//!
//! A PostgreSQL registry's watchers share one listening connection, held by a task that the
//! first watch spawns (`tokio::spawn`) on the runtime that first polls it; see
//! [`SqlRegistry`]'s notes. Connecting spawns nothing, and SQLite and MySQL spawn nothing.
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

mod config;
mod decode;
mod error_map;
mod reap;
mod redact;
mod statements;
mod watch;
mod write;

pub use self::config::{Backend, SqlRegistryBuilder};
pub(crate) use self::redact::redact_url;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::AnyPool;
use tokio::task::JoinHandle;

use crate::instance::{Health, InstanceId, ServiceName};

use self::redact::Redactor;
use self::statements::Statements;
use super::{
    Clock, Error, HealthUpdate, LeaseConfig, ReapReport, Registration, Registry, Revision,
    Snapshot, Watch,
};

/// A registry in SQLite, PostgreSQL or MySQL/MariaDB; see the [module docs](self).
///
/// Cheap to clone: clones share one connection pool.
///
/// # Background task
///
/// On PostgreSQL, the first [`watch`](Registry::watch) or [`watch_all`](Registry::watch_all)
/// to be polled spawns the listener task with `tokio::spawn` on the runtime polling it (so
/// watches must be polled within a tokio runtime; `tokio::spawn` panics otherwise). The task
/// holds one `LISTEN` connection for all of the registry's watchers, reconnecting with the
/// [`backoff`](SqlRegistryBuilder::backoff), and is aborted when the last clone of the
/// registry is dropped. If it ends otherwise (its runtime shut down, or it panicked), the next
/// watcher to wait starts it again on its own runtime. Connecting spawns nothing, and SQLite
/// and MySQL registries spawn nothing at all.
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

impl SqlRegistry {
    /// Connects to `url` with default settings and runs the migrations; see
    /// [`SqlRegistryBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// A builder for a registry at `url`.
    pub fn builder(url: impl Into<String>) -> SqlRegistryBuilder {
        SqlRegistryBuilder::new(url.into())
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

    /// Wakes this registry's watchers (after a local write).
    fn woke(&self) {
        self.shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts the PostgreSQL listener if it is not running: the first time a watcher needs
    /// it, and again whenever it has ended. The one `tokio::spawn` of this module, on the
    /// runtime polling the watch; see the type's notes on the
    /// [background task](SqlRegistry#background-task).
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
        let secrets = self.shared.redactor.share();
        let (initial, max) = (self.shared.backoff_initial, self.shared.backoff_max);
        *slot = Some(tokio::spawn(watch::listen(
            url, wake, secrets, initial, max,
        )));
    }

    #[cfg(not(feature = "registry-postgres"))]
    fn ensure_listener(&self) {}
}

impl Registry for SqlRegistry {
    async fn register(&self, registration: Registration) -> Result<Revision, Error> {
        self.upsert(vec![registration]).await
    }

    async fn register_all(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        self.upsert(registrations).await
    }

    async fn deregister(&self, service: &ServiceName, id: &InstanceId) -> Result<Revision, Error> {
        self.deregister_instance(service, id).await
    }

    async fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Revision>, Error> {
        self.renew(service, id).await
    }

    async fn set_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        health: Health,
    ) -> Result<Revision, Error> {
        self.set_instance_health(service, id, HealthUpdate::new(health))
            .await
    }

    async fn set_health_with(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        update: HealthUpdate,
    ) -> Result<Revision, Error> {
        self.set_instance_health(service, id, update).await
    }

    async fn snapshot(&self, service: &ServiceName) -> Result<Snapshot, Error> {
        self.read_snapshot(Some(service), "snapshot").await
    }

    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.read_services().await
    }

    async fn revision(&self) -> Result<Revision, Error> {
        self.read_revision().await
    }

    /// See the type's notes on the [background task](SqlRegistry#background-task).
    fn watch(&self, service: &ServiceName, since: Revision) -> Watch {
        watch::watch(self.clone(), Some(service.clone()), since)
    }

    /// See the type's notes on the [background task](SqlRegistry#background-task).
    fn watch_all(&self, since: Revision) -> Watch {
        watch::watch(self.clone(), None, since)
    }

    async fn compact(&self, up_to: Revision) -> Result<(), Error> {
        self.compact_history(up_to).await
    }

    async fn reap(&self, config: &LeaseConfig) -> Result<ReapReport, Error> {
        self.sweep(config).await
    }

    fn clock(&self) -> &Clock {
        &self.shared.clock
    }
}
