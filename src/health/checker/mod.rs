//! Active health checks, shared out across a fleet of checkers through the registry: see
//! [`HealthChecker`].

mod fleet;
#[cfg(feature = "tonic")]
mod grpc;
mod probe;
mod run;
mod task;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::health::{SelfRegistration, SelfRegistrationStatus};
use crate::instance::{Instance, InstanceId, InvalidInput, ServiceName};
use crate::registry::{ConfigError, LeaseConfig, Reaper, Registry, Revision};

use self::run::Run;
use self::task::Stats;

/// The reserved service under which checkers register themselves (with a lease) to share the
/// checks out. Instances of this service are never checked; do not register anything else
/// under it.
pub const CHECKERS_SERVICE: &str = "tower-mesh-checkers";

const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Runs the health checks that instances declare ([`Check`](crate::instance::Check)) and writes
/// their outcome back to the registry; several checkers share the work.
///
/// # What it does
///
/// - **One watch.** The checker holds one [`watch_all`](Registry::watch_all) on the registry
///   it is given, from the start of its history (or a reset with the whole state), and keeps
///   every instance that declares a check. It starts a check task for each instance it owns,
///   stops it when the instance leaves, goes into `Maintenance` or moves to another checker,
///   and restarts it when its check or address changes. It may be given a
///   [`Cached`](crate::registry::Cached) registry: its writes then wait until the cache has
///   seen them, and its watch is served from the cache's one watch, so the process holds one
///   watch on the registry however many services it also discovers through the cache.
/// - **Checks.** HTTP checks share one keep-alive hyper-util client (requests carry
///   `user-agent: tower-mesh-checker/<checker id>`), read at most
///   [`CHECK_BODY_READ_LIMIT`](crate::instance::CHECK_BODY_READ_LIMIT) bytes of the body when
///   looking for a substring, and accept the spec's status ranges; TCP checks connect; gRPC
///   checks (feature `tonic`) call `grpc.health.v1.Health/Check` with the spec's service name
///   over one lazily connecting channel per instance and pass on `SERVING`. Every probe is cut
///   at the spec's timeout. A refused connection, a DNS failure or a timeout is a failure
///   whose reason is the output. HTTP checks of `https` instances are not run (the checker has
///   no TLS): each such instance is a `warn` event.
/// - **Timing and thresholds.** The first probe comes after a random part of the jitter, then
///   one every interval (every `unhealthy_interval` while `Critical`) plus a random jitter.
///   `healthy_threshold` successes in a row turn the instance `Passing`, `unhealthy_threshold`
///   failures in a row `Critical`.
/// - **Writes only on transitions.** A check task starts from the instance's registered health
///   and writes with [`Registry::set_health_with`] (the health, the probe's output and the
///   registry clock's time, as a [`LastCheck`](crate::instance::LastCheck)) only when its
///   verdict changes, so writes count
///   transitions, not checks. A failed write is retried after the next check. Every
///   transition is an `info` tracing event (`health transition`, with `from`, `to` and the
///   output); with the `metrics` feature, `tower_mesh_health_checks_total{kind, result}` and
///   the histogram `tower_mesh_health_check_duration_seconds{kind}` count checks and their
///   latency.
///
/// # Sharing the checks out
///
/// Each checker registers itself under [`CHECKERS_SERVICE`] with a lease (a
/// [`SelfRegistration`], TTL [`lease_ttl`](HealthCheckerBuilder::lease_ttl)) and checks the
/// instances for which it is among the [`replicas`](HealthCheckerBuilder::replicas) live
/// checkers of highest rendezvous weight (`stable_hash(checker, service, instance)`). Every
/// checker computes the same answer from the same registry, so each instance is checked by
/// exactly `replicas` checkers once they have all seen the same membership.
///
/// - **A checker dies.** Its heartbeats stop; once its lease lapses the registry's reaper turns
///   it `Critical` (a [`Reaper`] must run against the registry somewhere; see
///   [`reap`](HealthCheckerBuilder::reap)), every other checker sees that through its watch
///   and its instances are taken over: within the TTL plus one reaper sweep of its death.
/// - **A checker joins or leaves.** Only the instances whose highest weights change move:
///   about 1/N of them with N checkers. A checker that shuts down deregisters first.
/// - **A checker cut off from the registry** keeps checking its share (it counts itself live
///   whatever its lease says) while the others take the same share over once its lease lapses;
///   its writes fail until the registry is back, and are retried after each check.
/// - **The new owner** starts from the registered health, so a takeover writes nothing until
///   its own results change the verdict.
///
/// [`shutdown`](HealthChecker::shutdown) stops the checks and leaves the fleet before it
/// returns; dropping the checker does the same in the background, best effort (if the runtime
/// stops first, the lease lapses instead).
///
/// ## `replicas > 1`: when checkers disagree
///
/// Each replica keeps its own verdict and writes **only its own transitions**; the registry
/// holds the last write. When two replicas disagree (a partition: one reaches the instance and
/// the other does not), the registry shows the verdict of the replica whose verdict changed
/// last, and stays there until a replica's verdict changes again: there is no write war (a
/// replica that agrees with what it already wrote never writes), and the number of writes is
/// at most the sum of the replicas' transitions. The flip side: a verdict that a replica
/// holds does not override a later write by someone else (another replica, an operator, an
/// instance that re-registers) until that replica's verdict next changes.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mesh::health::{HealthChecker, CHECKERS_SERVICE};
/// use tower_mesh::instance::{Check, Instance};
/// use tower_mesh::registry::{LeaseConfig, MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = MemoryRegistry::new();
/// let check = Check::tcp().interval(Duration::from_secs(5)).timeout(Duration::from_secs(1)).build()?;
/// let orders = Instance::builder("orders", "orders-1").host("127.0.0.1").port(1).check(check).build()?;
/// registry.register(orders.into()).await?;
///
/// // One checker per machine; each checks its share of the instances.
/// let checker = HealthChecker::builder("checker-a")
///     .replicas(1)
///     .reap(LeaseConfig::default()) // the fleet's leases need a reaper somewhere
///     .spawn(registry.clone())?;
/// checker.registered().await;
/// let mut assignment = checker.assignment();
/// assignment.wait_for(|a| a.len() == 1).await?;
/// assert_eq!(registry.snapshot(&CHECKERS_SERVICE.parse()?).await?.instances().len(), 1);
///
/// // The clients' stacks are unchanged: discovery skips the instances the checker marks critical.
/// let _stack = ServiceBuilder::new().concurrency_limit(64);
/// checker.shutdown().await; // stops the checks and leaves the fleet
/// assert!(registry.snapshot(&CHECKERS_SERVICE.parse()?).await?.instances().is_empty());
/// # Ok(())
/// # }
/// ```
pub struct HealthChecker {
    id: InstanceId,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    assignment: watch::Receiver<Assignment>,
    registration: Option<watch::Receiver<SelfRegistrationStatus>>,
    stats: Arc<Stats>,
}

impl HealthChecker {
    /// A builder for a checker known in the fleet as `id` (an instance id: unique per
    /// checker, stable across its restarts if possible).
    pub fn builder(id: impl Into<String>) -> HealthCheckerBuilder {
        HealthCheckerBuilder {
            id: id.into(),
            replicas: 1,
            fleet: true,
            lease_ttl: DEFAULT_LEASE_TTL,
            host: "127.0.0.1".to_owned(),
            port: 1,
            reap: None,
        }
    }

    /// The checker's id in the fleet.
    pub fn id(&self) -> &InstanceId {
        &self.id
    }

    /// A receiver of the checker's [`Assignment`] (the instances it checks and the checkers it
    /// shares them with), updated after every change.
    pub fn assignment(&self) -> watch::Receiver<Assignment> {
        self.assignment.clone()
    }

    /// Waits until this checker has registered itself under [`CHECKERS_SERVICE`] at least
    /// once (the other checkers then count it); returns at once for a
    /// [`standalone`](HealthCheckerBuilder::standalone) checker. Waits for as long as the
    /// registry is unreachable.
    pub async fn registered(&self) {
        if let Some(status) = &self.registration {
            let mut status = status.clone();
            // An error means the registration task ended: nothing more to wait for.
            let _ = status.wait_for(|s| s.registrations > 0).await;
        }
    }

    /// The status of this checker's own registration under [`CHECKERS_SERVICE`] (its lease and
    /// heartbeats), or `None` for a [`standalone`](HealthCheckerBuilder::standalone) checker.
    pub fn registration_status(&self) -> Option<SelfRegistrationStatus> {
        self.registration.as_ref().map(|s| s.borrow().clone())
    }

    /// Counters since the checker started.
    pub fn stats(&self) -> HealthCheckerStats {
        HealthCheckerStats {
            checks: self.stats.checks.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
            write_errors: self.stats.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Stops every check, then leaves the fleet (deregisters this checker, so the others take
    /// its instances over at once), and returns when done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("id", &self.id)
            .field("instances", &self.assignment.borrow().len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A checker's counters; see [`HealthChecker::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheckerStats {
    /// Probes run.
    pub checks: u64,
    /// Probes that failed.
    pub failures: u64,
    /// Health transitions written to the registry.
    pub writes: u64,
    /// Writes that failed (retried after the next check).
    pub write_errors: u64,
}

/// What one checker checks: the instances it owns and the live checkers it shares them with,
/// as of a registry revision; see [`HealthChecker::assignment`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    checkers: Vec<InstanceId>,
    instances: BTreeSet<(ServiceName, InstanceId)>,
    revision: Revision,
}

impl Assignment {
    /// The live checkers (this one included), sorted.
    pub fn checkers(&self) -> &[InstanceId] {
        &self.checkers
    }

    /// The instances this checker checks, as (service, instance id), sorted.
    pub fn instances(&self) -> &BTreeSet<(ServiceName, InstanceId)> {
        &self.instances
    }

    /// Whether this checker checks the instance.
    pub fn contains(&self, service: &ServiceName, id: &InstanceId) -> bool {
        self.instances.contains(&(service.clone(), id.clone()))
    }

    /// How many instances this checker checks.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether this checker checks nothing.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The registry revision the assignment was computed at.
    pub fn revision(&self) -> Revision {
        self.revision
    }
}

/// Configures a [`HealthChecker`]; see [`HealthChecker::builder`]. Settings are checked by
/// [`spawn`](HealthCheckerBuilder::spawn); nothing is clamped.
#[derive(Debug, Clone)]
pub struct HealthCheckerBuilder {
    id: String,
    replicas: usize,
    fleet: bool,
    lease_ttl: Duration,
    host: String,
    port: u32,
    reap: Option<LeaseConfig>,
}

impl HealthCheckerBuilder {
    /// How many checkers check each instance (default 1; at least 1). See
    /// [`HealthChecker`], "`replicas > 1`", for what happens when they disagree.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The TTL of the checker's lease under [`CHECKERS_SERVICE`] (default 10 s; heartbeats at a
    /// third of it): how long a dead checker's instances go unchecked, plus a reaper sweep.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The address the checker registers under [`CHECKERS_SERVICE`] (default `127.0.0.1:1`):
    /// informational only, checkers take no traffic; put an admin endpoint there if you have
    /// one.
    pub fn advertise(mut self, host: impl Into<String>, port: u32) -> Self {
        self.host = host.into();
        self.port = port;
        self
    }

    /// Checks every instance with a check, alone: no registration under
    /// [`CHECKERS_SERVICE`], no sharing (and `replicas` unused). For a single checker process.
    pub fn standalone(mut self) -> Self {
        self.fleet = false;
        self
    }

    /// Also runs a [`Reaper`] with `config` against the registry, for the fleet's leases (and
    /// every other instance's). Running one in each checker is fine: sweeps are idempotent.
    pub fn reap(mut self, config: LeaseConfig) -> Self {
        self.reap = Some(config);
        self
    }

    /// Checks the settings and spawns the checker on the current tokio runtime (it panics
    /// outside one): its watch loop, one task per instance it checks, its fleet registration
    /// (unless [`standalone`](HealthCheckerBuilder::standalone)) and the reaper if asked for.
    /// They run until [`HealthChecker::shutdown`] or until the checker is dropped.
    pub fn spawn<R: Registry>(self, registry: R) -> Result<HealthChecker, HealthCheckerError> {
        if self.replicas == 0 {
            return Err(HealthCheckerError::Replicas {
                value: self.replicas,
            });
        }
        let instance = Instance::builder(CHECKERS_SERVICE, self.id)
            .host(self.host)
            .port(self.port)
            .build()
            .map_err(HealthCheckerError::Id)?;
        let id = instance.id().clone();
        let registration = if self.fleet {
            Some(
                SelfRegistration::builder(instance)
                    .ttl(self.lease_ttl)
                    .spawn(registry.clone())
                    .map_err(HealthCheckerError::Lease)?,
            )
        } else {
            None
        };
        let registration_status = registration.as_ref().map(SelfRegistration::status_updates);
        let reaper = self
            .reap
            .map(|config| Reaper::new(registry.clone(), config).spawn());
        let stats = Arc::new(Stats::default());
        let (assignment_tx, assignment_rx) = watch::channel(Assignment::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let run = Run::new(
            registry,
            id.clone(),
            self.replicas,
            self.fleet,
            stats.clone(),
            assignment_tx,
            registration,
            reaper,
        );
        let span = tracing::info_span!("health_checker", checker = %id);
        let task = tokio::spawn(run.run(stop_rx).instrument(span));
        Ok(HealthChecker {
            id,
            stop: Some(stop_tx),
            task: Some(task),
            assignment: assignment_rx,
            registration: registration_status,
            stats,
        })
    }
}

/// A [`HealthCheckerBuilder`] setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthCheckerError {
    /// `replicas` was 0.
    #[error("invalid health checker replicas {value}: must be at least 1")]
    Replicas {
        /// The value given.
        value: usize,
    },
    /// The checker's id or advertised address is not a valid instance.
    #[error("invalid health checker identity")]
    Id(#[source] InvalidInput),
    /// The lease settings were refused.
    #[error("invalid health checker lease")]
    Lease(#[source] ConfigError),
}
