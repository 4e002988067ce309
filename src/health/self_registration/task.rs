//! The background task of a [`SelfRegistration`](super::SelfRegistration): register, heartbeat,
//! retry with backoff, register again when gone, deregister at the end.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};

use crate::instance::Instance;
use crate::registry::{self, Registration, Registry};

use super::{SelfRegistrationError, SelfRegistrationState, SelfRegistrationStatus};

/// Validated settings.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) ttl: Duration,
    pub(super) interval: Duration,
    /// Share of the interval by which a heartbeat may come early (`0.0..1.0`).
    pub(super) jitter: f64,
    pub(super) backoff_initial: Duration,
    pub(super) backoff_max: Duration,
    pub(super) call_timeout: Duration,
    pub(super) shutdown_timeout: Duration,
}

impl Settings {
    /// The pause before the next heartbeat: the interval, less a random share of it up to
    /// `jitter`.
    pub(super) fn next_heartbeat(&self) -> Duration {
        if self.jitter == 0.0 {
            return self.interval;
        }
        let early = rand::rng().random_range(0.0..self.jitter);
        self.interval.mul_f64(1.0 - early)
    }
}

pub(super) struct Task<R> {
    pub(super) registry: R,
    pub(super) instance: Instance,
    pub(super) settings: Settings,
    pub(super) status: watch::Sender<SelfRegistrationStatus>,
}

/// Exponential backoff, jittered down to half of each step.
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The next pause: between half of the current step and the step itself.
    pub(super) fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        let half = step / 2;
        let extra = rand::rng().random_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(extra)
    }

    pub(super) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Register,
    Heartbeat,
}

impl<R: Registry> Task<R> {
    /// Runs until `stop` fires or its sender is dropped, then deregisters.
    pub(super) async fn run(
        self,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), SelfRegistrationError> {
        let registration = Registration::new(self.instance.clone())
            .with_ttl(self.settings.ttl)
            .expect("the builder checked the ttl");
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        let mut step = Step::Register;
        let mut at = Instant::now();
        loop {
            tokio::select! {
                biased;
                // Sent by `shutdown`, or the guard was dropped: either way, leave.
                _ = &mut stop => break,
                _ = sleep_until(at) => {}
            }
            let outcome = match step {
                Step::Register => self
                    .call("register", self.registry.register(registration.clone()))
                    .await
                    .map(|_| None),
                Step::Heartbeat => {
                    self.call(
                        "heartbeat",
                        self.registry
                            .heartbeat(self.instance.service(), self.instance.id()),
                    )
                    .await
                }
            };
            match (step, outcome) {
                (Step::Register, Ok(_)) => {
                    self.succeeded(|s| s.registrations += 1);
                    tracing::info!(ttl = ?self.settings.ttl, "registered");
                    step = Step::Heartbeat;
                    backoff.reset();
                    at = Instant::now() + self.settings.next_heartbeat();
                }
                (Step::Heartbeat, Ok(revived)) => {
                    if let Some(revision) = revived {
                        tracing::info!(
                            %revision,
                            "the lease had lapsed; the heartbeat brought the instance back"
                        );
                    }
                    self.succeeded(|s| s.heartbeats += 1);
                    backoff.reset();
                    at = Instant::now() + self.settings.next_heartbeat();
                }
                (
                    Step::Heartbeat,
                    Err(
                        ref error @ SelfRegistrationError::Registry(
                            registry::Error::NotFound { .. } | registry::Error::NoLease { .. },
                        ),
                    ),
                ) => {
                    tracing::warn!(%error, "instance gone from the registry or without its lease: registering it again");
                    self.status
                        .send_modify(|s| s.state = SelfRegistrationState::Registering);
                    step = Step::Register;
                    at = Instant::now();
                }
                (_, Err(error)) => {
                    let pause = backoff.next();
                    self.failed(error, pause);
                    at = Instant::now() + pause;
                }
            }
        }
        self.status
            .send_modify(|s| s.state = SelfRegistrationState::Deregistering);
        let result = self.deregister(&mut backoff).await;
        self.status
            .send_modify(|s| s.state = SelfRegistrationState::Stopped);
        result
    }

    /// One registry call, bounded by the call timeout.
    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, registry::Error>>,
    ) -> Result<T, SelfRegistrationError> {
        self.bounded(operation, self.settings.call_timeout, call)
            .await
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        after: Duration,
        call: impl Future<Output = Result<T, registry::Error>>,
    ) -> Result<T, SelfRegistrationError> {
        match timeout(after, call).await {
            Ok(result) => result.map_err(SelfRegistrationError::from),
            Err(_) => Err(SelfRegistrationError::Timeout {
                operation,
                id: self.instance.id().clone(),
                after,
            }),
        }
    }

    fn succeeded(&self, count: impl FnOnce(&mut SelfRegistrationStatus)) {
        let mut failures = 0;
        self.status.send_modify(|s| {
            failures = s.consecutive_failures;
            s.state = SelfRegistrationState::Registered;
            s.consecutive_failures = 0;
            count(s);
        });
        if failures > 0 {
            tracing::info!(failures, "the registry answers again");
        }
    }

    /// Records a failure and logs it.
    fn failed(&self, error: SelfRegistrationError, retry_in: Duration) {
        let transient = error.is_transient();
        let error = Arc::new(error);
        let mut failures = 0;
        self.status.send_modify(|s| {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            failures = s.consecutive_failures;
            s.state = SelfRegistrationState::Retrying;
            s.last_error = Some(error.clone());
        });
        if transient {
            tracing::warn!(%error, failures, ?retry_in, "registry call failed; retrying");
        } else {
            tracing::error!(%error, failures, ?retry_in, "registry refused the call; retrying");
        }
    }

    /// Deregisters, retrying transient failures until the shutdown timeout is spent. An
    /// instance that is already gone counts as deregistered.
    async fn deregister(&self, backoff: &mut Backoff) -> Result<(), SelfRegistrationError> {
        backoff.reset();
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self
                .bounded(
                    "deregister",
                    self.settings.call_timeout.min(left),
                    self.registry
                        .deregister(self.instance.service(), self.instance.id()),
                )
                .await;
            let error = match result {
                Ok(_) => {
                    tracing::info!("deregistered");
                    return Ok(());
                }
                Err(SelfRegistrationError::Registry(registry::Error::NotFound { .. })) => {
                    tracing::info!("deregistered (it was already gone)");
                    return Ok(());
                }
                Err(error) => error,
            };
            let pause = backoff.next();
            if !error.is_transient() || Instant::now() + pause >= deadline {
                tracing::warn!(%error, "could not deregister; the lease will lapse instead");
                self.status.send_modify(|s| {
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                });
                return Err(error);
            }
            tracing::warn!(%error, ?pause, "deregistration failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }
}
