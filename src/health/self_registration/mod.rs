//! The self-registration guard: a service process registers itself in the registry with a
//! lease, keeps the lease alive through registry outages, and deregisters itself before it
//! drains. See [`SelfRegistration`].

mod task;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::instance::{Instance, InstanceId};
use crate::registry::{self, ConfigError, Registry, MAX_TTL};

use self::task::{Settings, Task};

/// A guard that keeps this process's own instance registered, Consul agent style: it
/// registers the instance with a lease (a TTL), renews the lease with heartbeats at a fraction
/// of the TTL, and deregisters the instance on [`shutdown`](SelfRegistration::shutdown).
///
/// Each heartbeat comes up to a tenth of the interval early, at random
/// ([`heartbeat_jitter`](SelfRegistrationBuilder::heartbeat_jitter)), so that a fleet started
/// together (a deployment, a restarted cluster) spreads its heartbeats over the interval
/// instead of writing to the registry all at once; never late, so the lease keeps its margin.
///
/// Made with [`SelfRegistration::builder`] and
/// [`SelfRegistrationBuilder::spawn`], which spawns the background task that does the work
/// (see there).
///
/// - **Outages.** A failed call (the registry is unreachable, or a call takes longer than its
///   [`call_timeout`](SelfRegistrationBuilder::call_timeout)) is retried with jittered
///   exponential backoff, capped at the heartbeat interval by default, for as long as it takes:
///   the guard never gives up. Every failure is a `warn` tracing event and shows in
///   [`status`](SelfRegistration::status) ([`SelfRegistrationState::Retrying`] with the last
///   error). While the registry is unreachable the lease may lapse: the instance then turns
///   `Critical` and, after the reaper's grace period, is removed; the first heartbeat that gets
///   through brings a lapsed instance back to its registered health.
/// - **Reaped meanwhile.** When a heartbeat finds the instance gone ([`registry::Error::NotFound`]:
///   it was reaped after a long outage, or deregistered by an operator), or registered without
///   a lease by someone else ([`registry::Error::NoLease`]), the guard registers it again at
///   once.
/// - **Shutdown.** [`shutdown`](SelfRegistration::shutdown) deregisters the instance and only
///   then returns, so a server can stop advertising itself first and drain afterwards, while
///   callers' discovery already routes elsewhere (the example below). A deregistration that
///   fails is retried for up to [`shutdown_timeout`](SelfRegistrationBuilder::shutdown_timeout)
///   (default 5 s); if it still fails, the lease expires on its own.
/// - **Drop.** Dropping the guard without `shutdown` is best effort: it tells the background
///   task to deregister the instance and stop, and returns at once. The deregistration happens
///   only if that task's runtime keeps running long enough; when the runtime shuts down (say,
///   `main` returns), the task is cancelled and the instance stays registered until its lease
///   lapses and the reaper removes it. Prefer `shutdown().await`.
///
/// The instance is registered as given (its health included) each time it is registered.
///
/// # Example: an axum server's graceful shutdown
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower::ServiceBuilder;
/// use tower_mesh::health::SelfRegistration;
/// use tower_mesh::instance::Instance;
/// use tower_mesh::registry::{MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // In production: the registry the callers discover from, e.g. `AnyRegistry` from a URL.
/// let registry = MemoryRegistry::new();
/// let app = Router::new()
///     .route("/orders/{id}", get(|| async { "an order" }))
///     .layer(ServiceBuilder::new().concurrency_limit(1024));
///
/// // Listen first, then register: a caller that finds the address can connect.
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let port = listener.local_addr()?.port();
/// let instance = Instance::builder("orders", "orders-1")
///     .host("127.0.0.1")
///     .port(port.into())
///     .build()?;
/// // Spawns the task that registers, heartbeats every 10 s / 3 and retries through outages.
/// let registration = SelfRegistration::builder(instance)
///     .ttl(Duration::from_secs(10))
///     .spawn(registry.clone())?;
/// # registration.registered().await;
///
/// let signal = async move {
///     // tokio::signal::ctrl_c().await.ok(); or SIGTERM from the orchestrator
///     // Deregister first: callers stop routing here...
///     if let Err(error) = registration.shutdown().await {
///         tracing::warn!(%error, "could not deregister; the lease will expire instead");
///     }
///     // ...give their discovery time to see it (their watch's poll interval)...
///     tokio::time::sleep(Duration::from_millis(100)).await;
///     // ...then axum stops accepting and drains the requests in flight.
/// };
/// axum::serve(listener, app).with_graceful_shutdown(signal).await?;
/// assert!(registry.snapshot(&"orders".parse()?).await?.instances().is_empty());
/// # Ok(())
/// # }
/// ```
pub struct SelfRegistration {
    instance: Instance,
    /// Dropping it (with the guard) tells the task to deregister and stop.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), SelfRegistrationError>>>,
    status: watch::Receiver<SelfRegistrationStatus>,
}

impl SelfRegistration {
    /// A builder for a guard that keeps `instance` registered.
    pub fn builder(instance: Instance) -> SelfRegistrationBuilder {
        SelfRegistrationBuilder {
            instance,
            ttl: DEFAULT_TTL,
            heartbeat_fraction: DEFAULT_HEARTBEAT_FRACTION,
            heartbeat_jitter: DEFAULT_HEARTBEAT_JITTER,
            backoff: None,
            call_timeout: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// The instance this guard keeps registered.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Where the guard stands now: a copy of its latest status (cheap: a few counters and a
    /// shared error).
    pub fn status(&self) -> SelfRegistrationStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change, for waiting on one
    /// (`watch::Receiver::wait_for`) or for exporting it.
    pub fn status_updates(&self) -> watch::Receiver<SelfRegistrationStatus> {
        self.status.clone()
    }

    /// Waits until the instance has been registered at least once. Waits for as long as the
    /// registry is unreachable: put a timeout around it if the caller must not wait. Returns
    /// at once if the task has ended.
    pub async fn registered(&self) {
        let mut updates = self.status.clone();
        // An error means the task ended: nothing more to wait for.
        let _ = updates.wait_for(|s| s.registrations > 0).await;
    }

    /// Deregisters the instance, then stops the background task, and returns once both are
    /// done: when it returns `Ok`, the instance is no longer in the registry (or never got
    /// there), and callers' discovery will see it leave.
    ///
    /// A registry call in flight when `shutdown` is called is let finish first (it takes at
    /// most [`call_timeout`](SelfRegistrationBuilder::call_timeout)). A deregistration that
    /// fails is retried with backoff for up to
    /// [`shutdown_timeout`](SelfRegistrationBuilder::shutdown_timeout); its last error is
    /// returned, and the instance is then left to its lease. An instance already gone (reaped,
    /// or deregistered by someone else) counts as deregistered.
    pub async fn shutdown(mut self) -> Result<(), SelfRegistrationError> {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already; its handle tells how.
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|_| {
                Err(SelfRegistrationError::TaskEnded {
                    id: self.instance.id().clone(),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for SelfRegistration {
    /// Best effort: tells the background task to deregister the instance and stop, without
    /// waiting for it (see [`SelfRegistration`], "Drop").
    fn drop(&mut self) {
        // Dropping `stop` (if `shutdown` did not take it) is the signal.
        if self.stop.is_some() {
            tracing::debug!(
                service = %self.instance.service(),
                instance = %self.instance.id(),
                "self-registration dropped without shutdown: deregistering in the background"
            );
        }
    }
}

impl fmt::Debug for SelfRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfRegistration")
            .field("service", self.instance.service())
            .field("instance", self.instance.id())
            .field("status", &*self.status.borrow())
            .finish()
    }
}

const DEFAULT_TTL: Duration = Duration::from_secs(10);
const DEFAULT_HEARTBEAT_FRACTION: f64 = 1.0 / 3.0;
const DEFAULT_HEARTBEAT_JITTER: f64 = 0.1;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// Configures a [`SelfRegistration`]; see [`SelfRegistration::builder`]. The setters take any
/// value; [`spawn`](SelfRegistrationBuilder::spawn) refuses one that cannot work with a
/// [`ConfigError`] naming the setting and the value. Nothing is clamped.
#[derive(Debug, Clone)]
pub struct SelfRegistrationBuilder {
    instance: Instance,
    ttl: Duration,
    heartbeat_fraction: f64,
    heartbeat_jitter: f64,
    backoff: Option<(Duration, Duration)>,
    call_timeout: Option<Duration>,
    shutdown_timeout: Duration,
}

impl SelfRegistrationBuilder {
    /// The lease's time-to-live (default 10 s; 1 ms ..= 24 h, as
    /// [`Registration::with_ttl`](registry::Registration::with_ttl)). An instance whose
    /// heartbeats stop for this long turns `Critical`, and is removed after the reaper's grace
    /// period.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The heartbeat interval as a fraction of the TTL (default 1/3, so two heartbeats may be
    /// lost before the lease lapses): a number strictly between 0 and 1.
    pub fn heartbeat_fraction(mut self, fraction: f64) -> Self {
        self.heartbeat_fraction = fraction;
        self
    }

    /// How much earlier than the interval each heartbeat may come, as a share of the
    /// interval: each pause is drawn uniformly between `interval × (1 - jitter)` and the
    /// interval (default 0.1; 0 for heartbeats exactly one interval apart): a number from 0
    /// up to, not including, 1.
    pub fn heartbeat_jitter(mut self, jitter: f64) -> Self {
        self.heartbeat_jitter = jitter;
        self
    }

    /// Backoff between failed attempts: the first pause, and the cap it doubles up to; each
    /// pause is jittered down to half its length, so that a fleet does not come back in step
    /// after an outage. Default: 100 ms (or the heartbeat interval, if shorter) up to the
    /// heartbeat interval. `initial` must not be zero, and `max` not shorter than `initial`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Some((initial, max));
        self
    }

    /// How long one registry call may take before it counts as failed and is retried
    /// (default: the heartbeat interval; must not be zero). A timed-out call is abandoned,
    /// not cancelled on the server: on a database it may still complete.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// How long [`shutdown`](SelfRegistration::shutdown) retries a failing deregistration
    /// (default 5 s; must not be zero).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The heartbeat interval these settings give (`ttl × heartbeat_fraction`), or the first
    /// setting that cannot work.
    pub fn heartbeat_interval(&self) -> Result<Duration, ConfigError> {
        Ok(self.settings()?.interval)
    }

    /// Checks the settings and spawns the background task that registers the instance in
    /// `registry`, heartbeats, retries and finally deregisters it; returns the guard that
    /// controls it.
    ///
    /// # Background task
    ///
    /// One task is spawned with `tokio::spawn` on the current runtime (so this panics when
    /// called outside a tokio runtime). It makes the first registration attempt at once, then
    /// sleeps between calls; it runs until [`SelfRegistration::shutdown`] or until the guard
    /// is dropped (then it deregisters the instance and ends), or until its runtime shuts down
    /// (then it is cancelled and the lease lapses on its own). It holds a clone of `registry`.
    pub fn spawn<R: Registry>(self, registry: R) -> Result<SelfRegistration, ConfigError> {
        let settings = self.settings()?;
        let instance = self.instance;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (status_tx, status_rx) = watch::channel(SelfRegistrationStatus::new());
        let span = tracing::info_span!(
            "self_registration",
            service = %instance.service(),
            instance = %instance.id(),
        );
        let task = Task {
            registry,
            instance: instance.clone(),
            settings,
            status: status_tx,
        };
        let handle = tokio::spawn(task.run(stop_rx).instrument(span));
        Ok(SelfRegistration {
            instance,
            stop: Some(stop_tx),
            task: Some(handle),
            status: status_rx,
        })
    }

    /// The settings, validated, with the defaults that depend on the interval filled in.
    fn settings(&self) -> Result<Settings, ConfigError> {
        if self.ttl < Duration::from_millis(1) || self.ttl > MAX_TTL {
            return Err(ConfigError::new(
                "ttl",
                format_args!("{:?}", self.ttl),
                "must be between 1ms and 24h",
            ));
        }
        let fraction = self.heartbeat_fraction;
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(ConfigError::new(
                "heartbeat_fraction",
                fraction,
                "must be a number strictly between 0 and 1",
            ));
        }
        let interval = self.ttl.mul_f64(fraction);
        if interval.is_zero() {
            return Err(ConfigError::new(
                "heartbeat_fraction",
                fraction,
                format!(
                    "gives a zero heartbeat interval with a ttl of {:?}",
                    self.ttl
                ),
            ));
        }
        let jitter = self.heartbeat_jitter;
        if !(0.0..1.0).contains(&jitter) {
            return Err(ConfigError::new(
                "heartbeat_jitter",
                jitter,
                "must be a number from 0 up to, not including, 1",
            ));
        }
        let (backoff_initial, backoff_max) = match self.backoff {
            Some((initial, max)) => {
                ConfigError::nonzero("backoff initial", initial)?;
                if max < initial {
                    return Err(ConfigError::new(
                        "backoff max",
                        format_args!("{max:?}"),
                        format!("must not be shorter than the initial backoff ({initial:?})"),
                    ));
                }
                (initial, max)
            }
            None => (DEFAULT_BACKOFF_INITIAL.min(interval), interval),
        };
        let call_timeout = match self.call_timeout {
            Some(t) => ConfigError::nonzero("call_timeout", t)?,
            None => interval,
        };
        let shutdown_timeout = ConfigError::nonzero("shutdown_timeout", self.shutdown_timeout)?;
        Ok(Settings {
            ttl: self.ttl,
            interval,
            jitter,
            backoff_initial,
            backoff_max,
            call_timeout,
            shutdown_timeout,
        })
    }
}

/// What a [`SelfRegistration`] is doing; see [`SelfRegistrationStatus::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SelfRegistrationState {
    /// Registering the instance: at start, and again after it was found gone.
    Registering,
    /// The last call (a registration or a heartbeat) succeeded: the lease is current.
    Registered,
    /// The last call failed; it is retried after a backoff. Whether the instance is still in
    /// the registry depends on how long this lasts (see [`SelfRegistration`], "Outages").
    Retrying,
    /// Shutting down: deregistering the instance.
    Deregistering,
    /// The task has ended, after a shutdown or a drop (whether the deregistration succeeded
    /// or not). A task that panicked or was cancelled with its runtime stays at its last
    /// state; [`SelfRegistration::shutdown`] then returns
    /// [`SelfRegistrationError::TaskEnded`].
    Stopped,
}

/// A snapshot of a [`SelfRegistration`]'s progress, from
/// [`SelfRegistration::status`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SelfRegistrationStatus {
    /// What it is doing now.
    pub state: SelfRegistrationState,
    /// The most recent failure, kept after a later success (then `consecutive_failures` is 0).
    pub last_error: Option<Arc<SelfRegistrationError>>,
    /// Failed calls since the last success.
    pub consecutive_failures: u32,
    /// How many times the instance was registered: 1 after start, one more each time it was
    /// found gone and registered again.
    pub registrations: u64,
    /// Heartbeats that renewed the lease.
    pub heartbeats: u64,
}

impl SelfRegistrationStatus {
    fn new() -> Self {
        SelfRegistrationStatus {
            state: SelfRegistrationState::Registering,
            last_error: None,
            consecutive_failures: 0,
            registrations: 0,
            heartbeats: 0,
        }
    }
}

/// What a [`SelfRegistration`]'s registry calls, or its shutdown, can fail with.
///
/// Each prints once in a chain: [`Registry`](SelfRegistrationError::Registry) is transparent
/// over the registry's error, the others are leaves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelfRegistrationError {
    /// The registry refused or failed the call.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// The call took longer than the call timeout (or, for the last deregistration attempt,
    /// than what was left of the shutdown timeout).
    #[error("registry {operation} of instance {id:?} timed out after {after:?}")]
    Timeout {
        /// `register`, `heartbeat` or `deregister`.
        operation: &'static str,
        /// The instance.
        id: InstanceId,
        /// How long the call was given.
        after: Duration,
    },
    /// The background task ended before it could deregister: it panicked, or its runtime shut
    /// down.
    #[error("the self-registration task of instance {id:?} ended before it could deregister (it panicked, or its runtime shut down)")]
    TaskEnded {
        /// The instance.
        id: InstanceId,
    },
}

impl SelfRegistrationError {
    /// Whether the call may succeed if tried again (the registry was unreachable or slow).
    pub fn is_transient(&self) -> bool {
        match self {
            SelfRegistrationError::Registry(e) => e.is_transient(),
            SelfRegistrationError::Timeout { .. } => true,
            SelfRegistrationError::TaskEnded { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests;
