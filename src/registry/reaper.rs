//! Lease expiry: the reaper that turns missed leases critical, then deregisters them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::instance::{InstanceId, ServiceName};

use super::{Error, Registry, Revision};

/// How leases expire (Consul's TTL checks, with Eureka's self-preservation).
///
/// A sweep that finds a lease lapsed turns the instance `Critical` and stores when it did; the
/// instance is deregistered once the grace period has passed since then (default 60 s), unless
/// a heartbeat brought it back first.
///
/// Self-preservation looks at a window, not at one sweep: when an outage cuts the registry off
/// from its instances, their leases lapse spread over one TTL (a tenth of them per sweep with a
/// 10 s TTL and 1 s sweeps), so a per-sweep share would never trip. Instead each sweep counts
/// every leased instance whose lease is lapsed right now, against all leased instances. In
/// steady state a lapsed instance is gone within the grace period of turning critical, so that
/// count is the lapses of the last TTL + grace; lapses older than that are still there only
/// because self-preservation held them, and they keep counting, so an outage longer than the
/// window cannot empty the registry either. While more than the share (default 50 %) of at
/// least `min_leases` (default 4) leases are lapsed, the sweep turns none critical and
/// deregisters none, and warns; it resumes when heartbeats bring the share back under the
/// limit.
///
/// The last 100,000 revisions of history are kept for watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    pub(crate) grace: Duration,
    pub(crate) max_expiry_share: Option<f64>,
    pub(crate) min_leases_for_guard: usize,
    pub(crate) retain_revisions: Option<u64>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            grace: Duration::from_secs(60),
            max_expiry_share: Some(0.5),
            min_leases_for_guard: 4,
            retain_revisions: Some(100_000),
        }
    }
}

impl LeaseConfig {
    /// How long an instance stays registered (as `Critical`) after it turned critical, that is
    /// after the sweep that found its lease lapsed.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Self-preservation: while more than `max_share` (0.0..=1.0) of the leased instances have
    /// lapsed leases (see the window above), and there are at least `min_leases` leased
    /// instances, turn none critical, deregister none, and warn. Out-of-range shares are
    /// clamped into 0.0..=1.0.
    pub fn self_preservation(mut self, max_share: f64, min_leases: usize) -> Self {
        let share = if max_share.is_nan() {
            0.5
        } else {
            max_share.clamp(0.0, 1.0)
        };
        self.max_expiry_share = Some(share);
        self.min_leases_for_guard = min_leases;
        self
    }

    /// Turns self-preservation off: every lapsed lease expires.
    pub fn without_self_preservation(mut self) -> Self {
        self.max_expiry_share = None;
        self
    }

    /// Keep the last `n` revisions of history for watchers and compact older ones; `None`
    /// keeps everything.
    pub fn retain_revisions(mut self, n: Option<u64>) -> Self {
        self.retain_revisions = n;
        self
    }

    pub(crate) fn grace_ms(&self) -> i64 {
        self.grace.as_millis() as i64
    }

    /// Whether a sweep that finds `lapsed` of `leased` leases lapsed right now (the window's
    /// count) should hold back.
    pub(crate) fn hold_back(&self, lapsed: usize, leased: usize) -> bool {
        match self.max_expiry_share {
            Some(share) => {
                lapsed > 0
                    && leased >= self.min_leases_for_guard
                    && lapsed as f64 > share * leased as f64
            }
            None => false,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Instances whose lease lapsed in this sweep: now `Critical`.
    pub expired: Vec<(ServiceName, InstanceId)>,
    /// Instances deregistered because the grace period since they turned critical ran out.
    pub deregistered: Vec<(ServiceName, InstanceId)>,
    /// Instances this sweep would have turned critical or deregistered, left alone because
    /// self-preservation held it back.
    pub held_back: usize,
}

/// Runs [`Registry::reap`] every `interval` (default 1 s) and compacts old history.
///
/// Several processes may reap one shared database: each expiry is re-checked inside its
/// transaction, so a lease is expired once.
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::registry::{LeaseConfig, MemoryRegistry, Reaper};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = MemoryRegistry::new();
/// let reaper = Reaper::new(registry.clone(), LeaseConfig::default().grace(Duration::from_secs(30)))
///     .interval(Duration::from_millis(500))
///     .spawn(); // stops when dropped
/// # drop(reaper);
/// # }
/// ```
#[derive(Debug)]
pub struct Reaper<R> {
    registry: R,
    config: LeaseConfig,
    interval: Duration,
}

impl<R: Registry> Reaper<R> {
    /// A reaper for `registry`.
    pub fn new(registry: R, config: LeaseConfig) -> Self {
        Reaper {
            registry,
            config,
            interval: Duration::from_secs(1),
        }
    }

    /// How often to sweep (at least 1 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// One sweep, then compaction; what the loop does each interval.
    pub async fn sweep(&self) -> Result<ReapReport, Error> {
        let report = self.registry.reap(&self.config).await?;
        for (service, id) in &report.expired {
            tracing::info!(%service, instance = %id, "lease lapsed: instance is now critical");
        }
        for (service, id) in &report.deregistered {
            tracing::info!(%service, instance = %id, "grace period over: instance deregistered");
        }
        if report.held_back > 0 {
            tracing::warn!(
                held_back = report.held_back,
                "self-preservation: too many leases are lapsed; none expired in this sweep"
            );
        }
        if let Some(keep) = self.config.retain_revisions {
            let current = self.registry.revision().await?;
            if current.get() > keep {
                self.registry
                    .compact(Revision::new(current.get() - keep))
                    .await?;
            }
        }
        Ok(report)
    }

    /// Sweeps forever. Errors are logged and the next sweep goes on; so does a sweep that
    /// panics (each sweep runs in a task of its own on the current tokio runtime, and a panic
    /// ends only that task).
    pub async fn run(self) {
        self.run_counted(Arc::default()).await
    }

    async fn run_counted(self, stats: Arc<Counters>) {
        let interval = self.interval;
        let reaper = Arc::new(self);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let this = reaper.clone();
            let sweep = AbortOnDrop(tokio::spawn(async move { this.sweep().await }));
            match sweep.join().await {
                Ok(Ok(_)) => {
                    stats.sweeps.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "lease sweep failed; retrying at the next interval");
                }
                Err(e) if e.is_panic() => {
                    stats.panicked.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("lease sweep panicked; sweeping again at the next interval");
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
        }
    }

    /// Spawns [`run`](Reaper::run) on the current tokio runtime. Dropping the handle stops it;
    /// the handle tells whether it still runs and what it has done.
    pub fn spawn(self) -> ReaperHandle {
        let stats = Arc::<Counters>::default();
        ReaperHandle {
            task: tokio::spawn(self.run_counted(stats.clone())),
            stats,
        }
    }
}

/// Aborts the task when dropped, so that stopping the reaper stops a sweep in flight too.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Default)]
struct Counters {
    sweeps: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
}

/// What a spawned [`Reaper`] has done so far; see [`ReaperHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaperStats {
    /// Sweeps that completed.
    pub sweeps: u64,
    /// Sweeps that failed with an error (logged; the next sweep runs as usual).
    pub failed: u64,
    /// Sweeps that panicked (logged; the next sweep runs as usual).
    pub panicked: u64,
}

/// Stops the spawned reaper when dropped, and reports on it.
#[derive(Debug)]
pub struct ReaperHandle {
    task: JoinHandle<()>,
    stats: Arc<Counters>,
}

impl ReaperHandle {
    /// Whether the reaper still runs. It stops only when this handle is dropped or when the
    /// runtime it was spawned on shuts down; then nothing expires leases any more.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Counts of completed, failed and panicked sweeps.
    pub fn stats(&self) -> ReaperStats {
        ReaperStats {
            sweeps: self.stats.sweeps.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            panicked: self.stats.panicked.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ReaperHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
