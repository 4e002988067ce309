//! The service registry: where instances are registered, kept alive by leases, and watched.
//!
//! A [`Registry`] stores [`Instance`]s per service. Every mutation gets a strictly increasing
//! [`Revision`], and [`Registry::watch`] yields every change after a revision, in order and with
//! no gaps (etcd's watch): deletions are visible, and a watcher that asks for a revision that was
//! compacted away first gets a full [`Event::Reset`] snapshot rather than silently missing
//! changes. Instances may hold a lease ([`Registration::with_ttl`]); a [`Reaper`] turns an
//! instance whose lease was missed `Critical`, then deregisters it after a grace period counted
//! from when it turned critical (Consul's TTL checks), and holds back while too many leases are
//! lapsed (Eureka's self-preservation, measured over a window; see [`LeaseConfig`]).
//!
//! Backends: [`MemoryRegistry`] (in process), [`SqlRegistry`][sql-registry] over SQLite,
//! PostgreSQL or MySQL/MariaDB, and [`Cached`] in front of any of them. All pass one conformance
//! suite. [`AnyRegistry`] is the one type for a backend chosen at run time from a URL
//! (`memory:`, `sqlite://`, `postgres://`, `mysql://`).
//!
//! Background tasks are spawned only where documented: [`Cached::new`] (the cache's watch),
//! [`Reaper::spawn`] (the sweeps), and a PostgreSQL registry's first polled watch (its
//! listener; see [`SqlRegistry`][sql-registry-task]).
//!
//! Settings are checked when they are built: [`LeaseConfigBuilder::build`],
//! [`Cached::with_options`], [`MemoryRegistry::with_options`] and
//! [`SqlRegistryBuilder::connect`][sql-connect] refuse a value that cannot
//! work with a [`ConfigError`] naming the setting and the value; nothing is clamped.
//!
//! ```
//! use std::time::Duration;
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_mesh::instance::Instance;
//! use tower_mesh::registry::{LeaseConfig, MemoryRegistry, Reaper, Registration, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let registry = MemoryRegistry::new();
//! let orders = Instance::builder("orders", "orders-1").host("127.0.0.1").port(8080).build()?;
//! registry.register(Registration::new(orders).with_ttl(Duration::from_secs(10))?).await?;
//! let _reaper = Reaper::new(registry.clone(), LeaseConfig::default()).spawn(); // expires leases
//!
//! // A tower service that answers with the address of a service's first instance.
//! let reg = registry.clone();
//! let mut lookup = ServiceBuilder::new()
//!     .concurrency_limit(64)
//!     .service_fn(move |service: &'static str| {
//!         let reg = reg.clone();
//!         async move {
//!             let snapshot = reg.snapshot(&service.parse()?).await?;
//!             Ok::<_, BoxError>(snapshot.instances()[0].authority())
//!         }
//!     });
//! let address = lookup.ready().await?.call("orders").await?;
//! assert_eq!(address, "127.0.0.1:8080");
//! # Ok(())
//! # }
//! ```
// Links into the SQL backend, which only the SQL features compile: to docs.rs without them.
#![cfg_attr(
    feature = "sql",
    doc = "[sql-registry]: sql::SqlRegistry\n[sql-registry-task]: sql::SqlRegistry#background-task\n[sql-connect]: sql::SqlRegistryBuilder::connect"
)]
#![cfg_attr(
    not(feature = "sql"),
    doc = "[sql-registry]: https://docs.rs/tower-mesh/latest/tower_mesh/registry/sql/struct.SqlRegistry.html\n[sql-registry-task]: https://docs.rs/tower-mesh/latest/tower_mesh/registry/sql/struct.SqlRegistry.html#background-task\n[sql-connect]: https://docs.rs/tower-mesh/latest/tower_mesh/registry/sql/struct.SqlRegistryBuilder.html#method.connect"
)]

mod any;
mod cached;
mod clock;
pub mod error;
mod lease;
mod memory;
mod reaper;
#[cfg(feature = "sql")]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "registry-sqlite",
        feature = "registry-postgres",
        feature = "registry-mysql"
    )))
)]
pub mod sql;
mod watch;

pub use self::any::{AnyRegistry, AnyRegistryBuilder};
pub use self::cached::{Cached, CachedOptions};
pub use self::clock::{Clock, ManualClock};
pub use self::error::{ConfigError, CorruptRecord, DatabaseError, DatabaseErrorKind, Error};
pub use self::lease::{LeaseConfig, LeaseConfigBuilder, ReapReport};
pub use self::memory::MemoryRegistry;
pub use self::reaper::{Reaper, ReaperHandle, ReaperStats};
pub use self::watch::Watch;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::instance::{Field, Health, Instance, InstanceId, InvalidInput, LastCheck, ServiceName};

/// The position of a change in the registry's history. Strictly increasing: every mutation
/// gets a larger one than all before it. `Revision::ZERO` is before the first change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(u64);

impl Revision {
    /// Before any change: watching from here replays the whole retained history.
    pub const ZERO: Revision = Revision(0);

    /// A revision from its number.
    pub const fn new(n: u64) -> Self {
        Revision(n)
    }

    /// The revision's number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest lease an instance may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// An instance to register, with an optional lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    instance: Instance,
    ttl: Option<Duration>,
}

impl Registration {
    /// A registration without a lease: the instance stays until deregistered.
    pub fn new(instance: Instance) -> Self {
        Registration {
            instance,
            ttl: None,
        }
    }

    /// Gives the registration a lease of `ttl` (1 ms ..= 24 h): the instance must send a
    /// heartbeat within each `ttl` or it turns `Critical`, and is deregistered after the
    /// reaper's grace period.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, InvalidInput> {
        if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
            return Err(InvalidInput::new(
                Field::Ttl,
                format_args!("{ttl:?}"),
                "must be between 1ms and 24h",
            )
            .for_instance(self.instance.id()));
        }
        self.ttl = Some(ttl);
        Ok(self)
    }

    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The lease's time-to-live, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The TTL in milliseconds: at most [`MAX_TTL`] (checked by `with_ttl`), so it fits.
    pub(crate) fn ttl_ms(&self) -> Option<i64> {
        self.ttl
            .map(|t| i64::try_from(t.as_millis()).expect("a ttl is at most 24 h"))
    }
}

impl From<Instance> for Registration {
    fn from(instance: Instance) -> Self {
        Registration::new(instance)
    }
}

/// A health write: the new health and, when a check set it, what the check said and when
/// ([`LastCheck`]); see [`Registry::set_health_with`].
///
/// ```
/// use tower_mesh::instance::{Health, LastCheck};
/// use tower_mesh::registry::HealthUpdate;
///
/// let update = HealthUpdate::new(Health::Critical)
///     .with_last_check(LastCheck::new("connect: connection refused", 1_800_000_000_000));
/// assert_eq!(update.health(), Health::Critical);
/// assert_eq!(update.last_check().unwrap().output(), "connect: connection refused");
/// assert_eq!(HealthUpdate::from(Health::Passing).last_check(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUpdate {
    health: Health,
    last_check: Option<LastCheck>,
}

impl HealthUpdate {
    /// A health write with no check output: it clears the instance's [`LastCheck`].
    pub fn new(health: Health) -> Self {
        HealthUpdate {
            health,
            last_check: None,
        }
    }

    /// Adds what the check said and when (a [`LastCheck`]); it replaces the instance's.
    pub fn with_last_check(mut self, last_check: LastCheck) -> Self {
        self.last_check = Some(last_check);
        self
    }

    /// The new health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The check's output and time, if any.
    pub fn last_check(&self) -> Option<&LastCheck> {
        self.last_check.as_ref()
    }

    /// Takes the check's output and time out.
    pub fn into_last_check(self) -> Option<LastCheck> {
        self.last_check
    }
}

impl From<Health> for HealthUpdate {
    fn from(health: Health) -> Self {
        HealthUpdate::new(health)
    }
}

/// The instances of one service (or of all, in an [`Event::Reset`] of
/// [`Registry::watch_all`]) as of one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub(crate) revision: Revision,
    pub(crate) instances: Vec<Instance>,
    pub(crate) corrupt: Vec<CorruptRecord>,
    pub(crate) stale: bool,
}

impl Snapshot {
    /// A snapshot of `instances` at `revision`, for [`Registry`] implementations of your own.
    pub fn new(revision: Revision, instances: Vec<Instance>) -> Self {
        Snapshot {
            revision,
            instances,
            corrupt: Vec::new(),
            stale: false,
        }
    }

    /// Marks the snapshot as possibly out of date (served while the source is unreachable).
    pub fn with_stale(mut self, stale: bool) -> Self {
        self.stale = stale;
        self
    }

    /// Adds records that did not decode.
    pub fn with_corrupt(mut self, corrupt: Vec<CorruptRecord>) -> Self {
        self.corrupt = corrupt;
        self
    }

    /// The revision the snapshot is consistent at: watching from it misses nothing.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The instances, ordered by service then id. Health is the effective health: `Critical`
    /// while a lease is missed.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Takes the instances out.
    pub fn into_instances(self) -> Vec<Instance> {
        self.instances
    }

    /// Stored instances that did not decode. They are reported here, never dropped silently
    /// and never defaulted; the other instances are served as usual.
    pub fn corrupt(&self) -> &[CorruptRecord] {
        &self.corrupt
    }

    /// Whether the data may be out of date: a [`Cached`] registry serving its last known data
    /// while the database is unreachable.
    pub fn is_stale(&self) -> bool {
        self.stale
    }
}

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An instance was registered, re-registered, or its health changed (its lease lapsed or
    /// was renewed after lapsing). Carries the instance as it now is.
    Put {
        /// The change's revision.
        revision: Revision,
        /// The instance after the change.
        instance: Instance,
    },
    /// An instance was deregistered (by a call or by the reaper).
    Delete {
        /// The change's revision.
        revision: Revision,
        /// Its service.
        service: ServiceName,
        /// The instance.
        id: InstanceId,
    },
    /// The history the watcher asked for was compacted, or is not this registry's (the
    /// database went back to an earlier revision): this is the whole current state of the
    /// watched scope, replacing everything the watcher knew. Changes after it follow.
    Reset(Snapshot),
    /// The watcher is caught up to this revision. Sent after the watch recovers from an error,
    /// so a consumer can clear its stale mark.
    Progress {
        /// The revision the watcher has seen everything up to.
        revision: Revision,
    },
}

impl Event {
    /// The revision this event brings the watcher to.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { revision, .. }
            | Event::Delete { revision, .. }
            | Event::Progress { revision } => *revision,
            Event::Reset(s) => s.revision,
        }
    }

    /// The service the event is about, if it is about one instance.
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            Event::Put { instance, .. } => Some(instance.service()),
            Event::Delete { service, .. } => Some(service),
            Event::Reset(_) | Event::Progress { .. } => None,
        }
    }
}

/// A service registry.
///
/// Mutations return the [`Revision`] they were given. Reads and watches see effective health:
/// an instance whose lease lapsed is `Critical` whatever health it was registered with, until a
/// heartbeat renews it.
///
/// Methods return `Send` futures, so a registry can be used from spawned tasks. Registries are
/// cheap to clone and share one store.
pub trait Registry: Clone + Send + Sync + 'static {
    /// Registers `registration`'s instance, replacing any instance with the same service and id
    /// (an upsert), and starts its lease if it has a TTL.
    fn register(
        &self,
        registration: Registration,
    ) -> impl Future<Output = Result<Revision, Error>> + Send;

    /// Registers many instances in one transaction; each gets its own revision, in order.
    /// Returns the last one. Much faster than one call per instance.
    fn register_all(
        &self,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Revision, Error>> + Send;

    /// Removes an instance. [`Error::NotFound`] if it is not registered.
    fn deregister(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> impl Future<Output = Result<Revision, Error>> + Send;

    /// Renews an instance's lease. Returns `Some(revision)` when the renewal brought back an
    /// instance whose lease had lapsed (a visible change), `None` for a plain renewal (no
    /// revision: heartbeats do not wake watchers). [`Error::NoLease`] for an instance registered
    /// without a TTL.
    fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> impl Future<Output = Result<Option<Revision>, Error>> + Send;

    /// Sets an instance's registered health, clearing its [`LastCheck`]: the same as
    /// [`set_health_with`](Registry::set_health_with) with [`HealthUpdate::new`].
    fn set_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        health: Health,
    ) -> impl Future<Output = Result<Revision, Error>> + Send;

    /// Sets an instance's registered health and its [`LastCheck`] (the output and time of the
    /// check that decided it, or none) in one write, which watchers see as one
    /// [`Event::Put`]. [`Error::NotFound`] if the instance is not registered.
    ///
    /// Every call is a write with its own revision, even when the health does not change, so a
    /// health checker should call it when the health changes, not after every check.
    ///
    /// Every registry of this crate stores the output. The provided implementation, for
    /// registries of your own, calls [`set_health`](Registry::set_health) and drops it.
    fn set_health_with(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        update: HealthUpdate,
    ) -> impl Future<Output = Result<Revision, Error>> + Send {
        self.set_health(service, id, update.health())
    }

    /// A service's instances and the revision they are consistent at. An unknown service has
    /// no instances.
    fn snapshot(
        &self,
        service: &ServiceName,
    ) -> impl Future<Output = Result<Snapshot, Error>> + Send;

    /// The services with at least one instance, in order.
    fn services(&self) -> impl Future<Output = Result<Vec<ServiceName>, Error>> + Send;

    /// The latest revision.
    fn revision(&self) -> impl Future<Output = Result<Revision, Error>> + Send;

    /// Every change to `service` after `since`, in order, with no gaps; see [`Watch`].
    fn watch(&self, service: &ServiceName, since: Revision) -> Watch;

    /// Every change to every service after `since`; what [`Cached`] uses to keep a whole
    /// process on one watch.
    fn watch_all(&self, since: Revision) -> Watch;

    /// Forgets the history up to and including `up_to`. A watcher that later asks for a revision
    /// before it gets an [`Event::Reset`] first.
    fn compact(&self, up_to: Revision) -> impl Future<Output = Result<(), Error>> + Send;

    /// One sweep of lease expiry; see [`Reaper`], which calls this periodically.
    fn reap(&self, config: &LeaseConfig) -> impl Future<Output = Result<ReapReport, Error>> + Send;

    /// The clock leases are measured with. A registry whose store is shared by many machines
    /// (PostgreSQL, MySQL) measures leases with the store's clock instead, moved forward only by
    /// a [`ManualClock`]'s advances; see [`Clock`].
    fn clock(&self) -> &Clock;
}
