//! A registry chosen at run time from a URL: one type over every backend.

use crate::instance::{Health, InstanceId, ServiceName};

use super::error::ConfigError;
#[cfg(feature = "sql")]
use super::sql::{SqlRegistry, SqlRegistryBuilder};
use super::{
    Clock, Error, HealthUpdate, LeaseConfig, MemoryRegistry, ReapReport, Registration, Registry,
    Revision, Snapshot, Watch,
};

/// A registry whose backend is chosen at run time from a URL, for programs that read it from
/// their configuration: `memory:`, `sqlite://mesh.db` (or `sqlite::memory:`),
/// `postgres://...` (or `postgresql://`), `mysql://...` (or `mariadb://`).
///
/// The [`Registry`] trait's methods return `impl Future`, so it cannot be a `dyn Registry`;
/// this enum is the one type to store instead. It implements [`Registry`] by forwarding to its
/// backend, so it goes wherever a registry does, behind [`Cached`](super::Cached) too. Build
/// one with [`connect`](AnyRegistry::connect) or [`builder`](AnyRegistry::builder), or convert
/// a registry you configured yourself with `From`.
///
/// ```
/// use tower_mesh::instance::Instance;
/// use tower_mesh::registry::{AnyRegistry, Cached, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "memory:"; // from the program's configuration: "postgres://mesh@db/mesh", ...
/// let registry = Cached::new(AnyRegistry::connect(url).await?).await?;
/// registry.register(Instance::builder("orders", "orders-1").port(8080).build()?.into()).await?;
/// assert_eq!(registry.snapshot(&"orders".parse()?).await?.instances().len(), 1);
///
/// // A URL the registry cannot serve is refused by name, its password hidden.
/// let err = AnyRegistry::connect("redis://user:secret@cache/0").await.unwrap_err();
/// assert!(err.to_string().starts_with("invalid registry url"));
/// assert!(!err.to_string().contains("secret"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyRegistry {
    /// This process's memory (`memory:`): a new, empty registry per connection.
    Memory(MemoryRegistry),
    /// SQLite, PostgreSQL or MySQL/MariaDB.
    #[cfg(feature = "sql")]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(
            feature = "registry-sqlite",
            feature = "registry-postgres",
            feature = "registry-mysql"
        )))
    )]
    Sql(SqlRegistry),
}

impl AnyRegistry {
    /// Connects to the registry `url` names, with default settings; see
    /// [`AnyRegistryBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// A builder for the registry `url` names.
    pub fn builder(url: impl Into<String>) -> AnyRegistryBuilder {
        let url = url.into();
        AnyRegistryBuilder {
            #[cfg(feature = "sql")]
            sql: SqlRegistry::builder(url.clone()),
            url,
            clock: None,
        }
    }

    /// The in-memory registry, if that is the backend.
    pub fn as_memory(&self) -> Option<&MemoryRegistry> {
        match self {
            AnyRegistry::Memory(r) => Some(r),
            #[cfg(feature = "sql")]
            AnyRegistry::Sql(_) => None,
        }
    }

    /// The SQL registry, if that is the backend.
    #[cfg(feature = "sql")]
    pub fn as_sql(&self) -> Option<&SqlRegistry> {
        match self {
            AnyRegistry::Sql(r) => Some(r),
            AnyRegistry::Memory(_) => None,
        }
    }
}

impl From<MemoryRegistry> for AnyRegistry {
    fn from(registry: MemoryRegistry) -> Self {
        AnyRegistry::Memory(registry)
    }
}

#[cfg(feature = "sql")]
impl From<SqlRegistry> for AnyRegistry {
    fn from(registry: SqlRegistry) -> Self {
        AnyRegistry::Sql(registry)
    }
}

/// Configures and connects an [`AnyRegistry`]; see [`AnyRegistry::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::registry::AnyRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_mesh::registry::Error> {
/// let registry = AnyRegistry::builder("sqlite::memory:")
///     .sql(|b| b.poll_interval(Duration::from_millis(100)))
///     .connect()
///     .await?;
/// assert!(registry.as_sql().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AnyRegistryBuilder {
    url: String,
    clock: Option<Clock>,
    #[cfg(feature = "sql")]
    sql: SqlRegistryBuilder,
}

impl AnyRegistryBuilder {
    /// The clock leases are measured with, whatever the backend (default: [`Clock::system`]);
    /// it replaces a clock given through `sql` (SQL features).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Settings of a SQL backend (pool, polling, backoff, migrations): `configure` is given
    /// the [`SqlRegistryBuilder`] for this URL and returns it changed. They are checked when
    /// connecting whatever the URL (a setting that cannot work is refused even for
    /// `memory:`, so that a configuration does not turn bad only when its URL changes), and
    /// have no effect on `memory:`.
    #[cfg(feature = "sql")]
    pub fn sql(mut self, configure: impl FnOnce(SqlRegistryBuilder) -> SqlRegistryBuilder) -> Self {
        self.sql = configure(self.sql);
        self
    }

    /// Connects to the registry the URL names.
    ///
    /// `memory:` (or `memory://`) makes a new, empty [`MemoryRegistry`]. A SQL URL connects
    /// as `SqlRegistryBuilder::connect` does, with the settings given to
    /// `sql` (SQL features) (migrations run; spawns nothing until a PostgreSQL
    /// watch is polled). Any other URL, or a backend whose feature is not compiled in, is
    /// refused with [`Error::Config`] naming the URL with its password replaced by `***`.
    pub async fn connect(self) -> Result<AnyRegistry, Error> {
        let scheme = self.url.split(':').next().unwrap_or_default();
        if scheme == "memory" {
            if !matches!(&self.url[scheme.len()..], ":" | "://") {
                return Err(refused(&self.url, "memory: takes no path or parameters").into());
            }
            #[cfg(feature = "sql")]
            self.sql.validate()?;
            return Ok(AnyRegistry::Memory(MemoryRegistry::with_clock(
                self.clock.unwrap_or_default(),
            )));
        }
        if !SQL_SCHEMES.contains(&scheme) {
            return Err(refused(
                &self.url,
                "must start with memory:, sqlite:, postgres://, postgresql://, mysql:// or mariadb://",
            )
            .into());
        }
        self.connect_sql().await
    }

    #[cfg(feature = "sql")]
    async fn connect_sql(self) -> Result<AnyRegistry, Error> {
        let sql = match self.clock {
            Some(clock) => self.sql.clock(clock),
            None => self.sql,
        };
        Ok(AnyRegistry::Sql(sql.connect().await?))
    }

    #[cfg(not(feature = "sql"))]
    async fn connect_sql(self) -> Result<AnyRegistry, Error> {
        Err(refused(
            &self.url,
            "this backend is not compiled in: enable the registry-sqlite, registry-postgres or registry-mysql feature",
        )
        .into())
    }
}

/// The schemes of the SQL backends, compiled in or not.
const SQL_SCHEMES: [&str; 5] = ["sqlite", "postgres", "postgresql", "mysql", "mariadb"];

/// A refused registry URL, shown without its secrets.
fn refused(url: &str, reason: &'static str) -> ConfigError {
    ConfigError::new("registry url", format_args!("{:?}", shown(url)), reason)
}

/// The URL as errors show it: its password and secret parameters replaced by `***`.
#[cfg(feature = "sql")]
fn shown(url: &str) -> String {
    super::sql::redact_url(url)
}

/// The URL as errors show it. Without the SQL backends there is no URL parser to find the
/// password with, so only the scheme is shown.
#[cfg(not(feature = "sql"))]
fn shown(url: &str) -> String {
    format!("{}:<not shown>", url.split(':').next().unwrap_or_default())
}

/// Forwards to the backend.
macro_rules! dispatch {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            AnyRegistry::Memory($r) => $e,
            #[cfg(feature = "sql")]
            AnyRegistry::Sql($r) => $e,
        }
    };
}

impl Registry for AnyRegistry {
    async fn register(&self, registration: Registration) -> Result<Revision, Error> {
        dispatch!(self, r => r.register(registration).await)
    }

    async fn register_all(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        dispatch!(self, r => r.register_all(registrations).await)
    }

    async fn deregister(&self, service: &ServiceName, id: &InstanceId) -> Result<Revision, Error> {
        dispatch!(self, r => r.deregister(service, id).await)
    }

    async fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Revision>, Error> {
        dispatch!(self, r => r.heartbeat(service, id).await)
    }

    async fn set_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        health: Health,
    ) -> Result<Revision, Error> {
        dispatch!(self, r => r.set_health(service, id, health).await)
    }

    async fn set_health_with(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        update: HealthUpdate,
    ) -> Result<Revision, Error> {
        dispatch!(self, r => r.set_health_with(service, id, update).await)
    }

    async fn snapshot(&self, service: &ServiceName) -> Result<Snapshot, Error> {
        dispatch!(self, r => r.snapshot(service).await)
    }

    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        dispatch!(self, r => r.services().await)
    }

    async fn revision(&self) -> Result<Revision, Error> {
        dispatch!(self, r => r.revision().await)
    }

    fn watch(&self, service: &ServiceName, since: Revision) -> Watch {
        dispatch!(self, r => r.watch(service, since))
    }

    fn watch_all(&self, since: Revision) -> Watch {
        dispatch!(self, r => r.watch_all(since))
    }

    async fn compact(&self, up_to: Revision) -> Result<(), Error> {
        dispatch!(self, r => r.compact(up_to).await)
    }

    async fn reap(&self, config: &LeaseConfig) -> Result<ReapReport, Error> {
        dispatch!(self, r => r.reap(config).await)
    }

    fn clock(&self) -> &Clock {
        dispatch!(self, r => r.clock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_choose_the_backend_or_are_refused_by_name() {
        for url in ["memory:", "memory://"] {
            let r = AnyRegistry::connect(url).await.unwrap();
            assert!(r.as_memory().is_some(), "{url}");
        }
        // Without the SQL backends only the scheme is shown.
        let sql = cfg!(feature = "sql");
        let cases = [
            (
                "memory:x",
                if sql {
                    "\"memory:x\""
                } else {
                    "\"memory:<not shown>\""
                },
            ),
            (
                "redis://u:pw@h/0",
                if sql {
                    "\"redis://u:***@h/0\""
                } else {
                    "\"redis:<not shown>\""
                },
            ),
        ];
        for (url, shown) in cases {
            match AnyRegistry::connect(url).await.unwrap_err() {
                Error::Config(e) => {
                    assert_eq!((e.field(), e.value()), ("registry url", shown), "{e}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
