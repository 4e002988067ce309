//! Health reports: a service's instances by status, and per instance its status, the last
//! check's output and time, and whether outlier detection has ejected it (Consul's
//! `/v1/health/service/:name`, with Envoy's ejections alongside).
//!
//! [`service_health`] reads one snapshot from any [`Registry`] (a [`Cached`] one reads its
//! cache) and joins it with an [`Ejections`] lookup the caller passes: `()` for none, any
//! `Fn(&InstanceId) -> Option<String>` closure, or an outlier detector's own implementation.
//!
//! [`Cached`]: crate::registry::Cached
//!
//! ```
//! use tower::{BoxError, ServiceBuilder, ServiceExt};
//! use tower_mesh::health::report::service_health;
//! use tower_mesh::instance::{Health, Instance, LastCheck, ServiceName};
//! use tower_mesh::registry::{HealthUpdate, MemoryRegistry, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let registry = MemoryRegistry::new();
//! for (id, port) in [("orders-1", 8081), ("orders-2", 8082)] {
//!     registry.register(Instance::builder("orders", id).port(port).build()?.into()).await?;
//! }
//! let failed = LastCheck::new("HTTP 503 Service Unavailable", registry.clock().now_ms());
//! let update = HealthUpdate::new(Health::Critical).with_last_check(failed);
//! registry.set_health_with(&"orders".parse()?, &"orders-2".parse()?, update).await?;
//!
//! // A status endpoint as a tower service: service name in, report out.
//! let status = ServiceBuilder::new().concurrency_limit(16).service_fn(move |name: ServiceName| {
//!     let registry = registry.clone();
//!     async move { service_health(&registry, &name, ()).await }
//! });
//! let report = status.oneshot("orders".parse()?).await?;
//! assert_eq!((report.counts().passing, report.counts().critical), (1, 1));
//! let orders2 = &report.instances()[1];
//! assert_eq!(orders2.output(), Some("HTTP 503 Service Unavailable"));
//! assert!(!orders2.is_ejected());
//! # Ok(())
//! # }
//! ```

use serde::{Serialize, Serializer};

use crate::instance::{Health, Instance, InstanceId, LastCheck, ServiceName};
use crate::registry::{CorruptRecord, Error, Registry, Revision, Snapshot};

/// Where a report learns which instances outlier detection has ejected: the reason for an
/// ejected one, `None` for the others.
///
/// Implemented by `()` (nothing is ejected) and by any `Fn(&InstanceId) -> Option<String>`;
/// an outlier detector can implement it for itself. It is asked once per instance of the
/// service the report is about, while the report is built, so it should answer from memory.
///
/// ```
/// use tower_mesh::health::report::Ejections;
/// use tower_mesh::instance::InstanceId;
///
/// let id: InstanceId = "orders-2".parse()?;
/// let ejected = |i: &InstanceId| (i == "orders-2").then(|| "5 consecutive 5xx".to_owned());
/// assert_eq!(ejected.ejection(&id).as_deref(), Some("5 consecutive 5xx"));
/// assert_eq!(().ejection(&id), None);
/// # Ok::<(), tower_mesh::instance::InvalidInput>(())
/// ```
pub trait Ejections {
    /// Why `id` is ejected right now, or `None` if it is not.
    fn ejection(&self, id: &InstanceId) -> Option<String>;
}

impl Ejections for () {
    fn ejection(&self, _: &InstanceId) -> Option<String> {
        None
    }
}

impl<F> Ejections for F
where
    F: Fn(&InstanceId) -> Option<String>,
{
    fn ejection(&self, id: &InstanceId) -> Option<String> {
        self(id)
    }
}

/// The health of `service` as `registry` holds it now, with ejections from `ejections` (`()`
/// for none); see the [module docs](self). An unknown service has an empty report.
///
/// Statuses are the effective ones: an instance whose lease lapsed is `Critical`.
pub async fn service_health<R, E>(
    registry: &R,
    service: &ServiceName,
    ejections: E,
) -> Result<ServiceHealth, Error>
where
    R: Registry,
    E: Ejections,
{
    let snapshot = registry.snapshot(service).await?;
    Ok(ServiceHealth::from_snapshot(
        service.clone(),
        snapshot,
        &ejections,
    ))
}

/// A service's health: its instances by status, and each instance's status, last check and
/// ejection. Serializes (for an admin API) as
/// `{"service", "revision", "stale", "counts", "instances", "corrupt"}`, corrupt records as
/// their messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceHealth {
    service: ServiceName,
    #[serde(serialize_with = "revision_number")]
    revision: Revision,
    stale: bool,
    counts: HealthCounts,
    instances: Vec<InstanceHealth>,
    #[serde(serialize_with = "messages")]
    corrupt: Vec<CorruptRecord>,
}

impl ServiceHealth {
    /// The report for `service` from a snapshot of it already read, asking `ejections` about
    /// each instance.
    pub fn from_snapshot(
        service: ServiceName,
        snapshot: Snapshot,
        ejections: &impl Ejections,
    ) -> Self {
        let revision = snapshot.revision();
        let stale = snapshot.is_stale();
        let corrupt = snapshot.corrupt().to_vec();
        let mut counts = HealthCounts::default();
        let instances: Vec<_> = snapshot
            .into_instances()
            .into_iter()
            .map(|instance| {
                let health = InstanceHealth::new(instance, ejections);
                counts.add(&health);
                health
            })
            .collect();
        ServiceHealth {
            service,
            revision,
            stale,
            counts,
            instances,
            corrupt,
        }
    }

    /// The service.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The registry revision the report is consistent at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Whether the registry served possibly out-of-date data (a [`Cached`] registry whose
    /// database is unreachable).
    ///
    /// [`Cached`]: crate::registry::Cached
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// How many instances have each status, and how many are ejected.
    pub fn counts(&self) -> &HealthCounts {
        &self.counts
    }

    /// Every instance, ordered by id.
    pub fn instances(&self) -> &[InstanceHealth] {
        &self.instances
    }

    /// The instances with status `health`.
    pub fn with_health(&self, health: Health) -> impl Iterator<Item = &InstanceHealth> {
        self.instances.iter().filter(move |i| i.health == health)
    }

    /// Stored instances of the service that did not decode: reported, not counted.
    pub fn corrupt(&self) -> &[CorruptRecord] {
        &self.corrupt
    }
}

/// How many instances of a service have each status, and how many of them outlier detection
/// has ejected (an ejected instance is also counted under its status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthCounts {
    /// `Passing` instances.
    pub passing: usize,
    /// `Warning` instances.
    pub warning: usize,
    /// `Critical` instances.
    pub critical: usize,
    /// `Maintenance` instances.
    pub maintenance: usize,
    /// Ejected instances, whatever their status.
    pub ejected: usize,
}

impl HealthCounts {
    /// The instances with status `health`.
    pub fn get(&self, health: Health) -> usize {
        match health {
            Health::Passing => self.passing,
            Health::Warning => self.warning,
            Health::Critical => self.critical,
            Health::Maintenance => self.maintenance,
        }
    }

    /// All instances.
    pub fn total(&self) -> usize {
        self.passing + self.warning + self.critical + self.maintenance
    }

    fn add(&mut self, i: &InstanceHealth) {
        match i.health {
            Health::Passing => self.passing += 1,
            Health::Warning => self.warning += 1,
            Health::Critical => self.critical += 1,
            Health::Maintenance => self.maintenance += 1,
        }
        self.ejected += usize::from(i.ejection.is_some());
    }
}

/// One instance in a [`ServiceHealth`]: its status, its check, what the last check said and
/// when, and why it is ejected, if it is.
///
/// Serializes flat: `{"id", "authority", "health", "check", "output", "checked_at_ms",
/// "ejection"}`, `check` being the check's kind (`http`, `tcp`, `grpc`) and absent fields
/// left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceHealth {
    #[serde(skip)]
    instance: Instance,
    id: InstanceId,
    authority: String,
    health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    last_check: Option<LastCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ejection: Option<String>,
}

impl InstanceHealth {
    fn new(instance: Instance, ejections: &impl Ejections) -> Self {
        InstanceHealth {
            id: instance.id().clone(),
            authority: instance.authority(),
            health: instance.health(),
            check: instance.check().map(|c| c.kind().as_str()),
            last_check: instance.last_check().cloned(),
            ejection: ejections.ejection(instance.id()),
            instance,
        }
    }

    /// The instance, as the registry holds it.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The instance's id.
    pub fn id(&self) -> &InstanceId {
        &self.id
    }

    /// Its status (effective: `Critical` while its lease is lapsed).
    pub fn health(&self) -> Health {
        self.health
    }

    /// The output and time of the check that last set its status, if one did.
    pub fn last_check(&self) -> Option<&LastCheck> {
        self.last_check.as_ref()
    }

    /// The last check's output, if any.
    pub fn output(&self) -> Option<&str> {
        self.last_check.as_ref().map(LastCheck::output)
    }

    /// When the last check ran, in milliseconds since the Unix epoch, if one did.
    pub fn checked_at_ms(&self) -> Option<i64> {
        self.last_check.as_ref().map(LastCheck::checked_at_ms)
    }

    /// Why outlier detection ejected it, if it did.
    pub fn ejection(&self) -> Option<&str> {
        self.ejection.as_deref()
    }

    /// Whether outlier detection ejected it.
    pub fn is_ejected(&self) -> bool {
        self.ejection.is_some()
    }
}

fn revision_number<S: Serializer>(revision: &Revision, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(revision.get())
}

fn messages<S: Serializer>(records: &[CorruptRecord], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(records.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests;
