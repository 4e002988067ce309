//! Lease expiry: the reaper that turns missed leases critical, then deregisters them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{Error, LeaseConfig, ReapReport, Registry, Revision};

/// Runs [`Registry::reap`] every [`sweep_interval`](LeaseConfig::sweep_interval) (default
/// 1 s) and compacts old history.
///
/// Several processes may reap one shared database: each expiry is re-checked inside its
/// transaction, so a lease is expired once.
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::registry::{LeaseConfig, MemoryRegistry, Reaper};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_mesh::registry::ConfigError> {
/// let registry = MemoryRegistry::new();
/// let config = LeaseConfig::builder()
///     .grace(Duration::from_secs(30))
///     .sweep_interval(Duration::from_millis(500))
///     .build()?;
/// let reaper = Reaper::new(registry.clone(), config).spawn(); // stops when dropped
/// assert!(reaper.is_running());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Reaper<R> {
    registry: R,
    config: LeaseConfig,
}

impl<R: Registry> Reaper<R> {
    /// A reaper for `registry`, sweeping as `config` says. Spawns nothing: see
    /// [`spawn`](Reaper::spawn) and [`run`](Reaper::run).
    pub fn new(registry: R, config: LeaseConfig) -> Self {
        Reaper { registry, config }
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
        if let Some(keep) = self.config.retain_revisions() {
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
    /// panics: each sweep runs in a task of its own, spawned with `tokio::spawn` on the runtime
    /// polling this future, so a panic ends only that task. Must therefore be polled within a
    /// tokio runtime (it panics otherwise); dropping the future stops it and aborts a sweep in
    /// flight.
    pub async fn run(self) {
        self.run_counted(Arc::default()).await
    }

    async fn run_counted(self, stats: Arc<Counters>) {
        let interval = self.config.sweep_interval();
        let reaper = Arc::new(self);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let this = reaper.clone();
            let mut sweep = AbortOnDrop(tokio::spawn(async move { this.sweep().await }));
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

    /// Spawns [`run`](Reaper::run) as a task on the current tokio runtime (`tokio::spawn`;
    /// it panics when called outside a runtime), and returns its handle.
    ///
    /// The task sweeps until the handle is dropped (which aborts it, and any sweep in flight)
    /// or until its runtime shuts down; [`ReaperHandle::is_running`] tells which. Each sweep is
    /// a task of its own, so that a panicking sweep ends only itself.
    pub fn spawn(self) -> ReaperHandle {
        let stats = Arc::<Counters>::default();
        ReaperHandle {
            task: tokio::spawn(self.run_counted(stats.clone())),
            stats,
        }
    }
}

/// Aborts the task when dropped, so that stopping the reaper (or the cache's supervisor)
/// stops the task it waits for too.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    pub(crate) async fn join(&mut self) -> Result<T, tokio::task::JoinError> {
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
