//! Errors returned by the circuit breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::State;

/// The circuit breaker rejected a call without sending it to the inner service.
///
/// Returned by [`CircuitBreaker`](super::CircuitBreaker) (boxed in a
/// [`BoxError`](tower::BoxError)) while the breaker is open, forced open, or half-open with
/// all probe permits taken. Downcast a `BoxError` to `Open` to tell a rejection from a failure of
/// the inner service.
#[derive(Debug, Clone)]
pub struct Open {
    name: Arc<str>,
    state: State,
    retry_at: Option<Instant>,
}

impl Open {
    pub(crate) fn new(name: Arc<str>, state: State, retry_at: Option<Instant>) -> Self {
        Open {
            name,
            state,
            retry_at,
        }
    }

    /// The name of the breaker (and so of the service) that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state the breaker was in when it rejected the call.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the breaker may half-open and admit a probe.
    ///
    /// `None` when the breaker is forced open (only its [`Handle`](super::Handle) closes it) or
    /// half-open with all probe permits taken (it admits a call again as soon as a probe ends).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// How long until the breaker may half-open, measured from now; `None` as for
    /// [`retry_at`](Self::retry_at).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after()) {
            (State::HalfOpen, _) => write!(
                f,
                "circuit breaker for {:?} is half-open and all probe permits are taken",
                &*self.name
            ),
            (State::ForcedOpen, _) => {
                write!(f, "circuit breaker for {:?} is forced open", &*self.name)
            }
            (_, Some(after)) => write!(
                f,
                "circuit breaker for {:?} is open; it may half-open in {:?}",
                &*self.name, after
            ),
            (_, None) => write!(f, "circuit breaker for {:?} is open", &*self.name),
        }
    }
}

impl std::error::Error for Open {}

/// An invalid circuit breaker configuration, reported by
/// [`Builder::build`](super::Builder::build) with the offending value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// A threshold given as a count was zero.
    ZeroCount {
        /// The name of the builder setting.
        setting: &'static str,
    },
    /// A count exceeded what the breaker can track.
    CountTooLarge {
        /// The name of the builder setting.
        setting: &'static str,
        /// The value given.
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A rate was outside `(0.0, 1.0]` or not a number.
    InvalidRate {
        /// The name of the builder setting.
        setting: &'static str,
        /// The value given.
        value: f64,
    },
    /// A duration was zero where it must be positive.
    ZeroDuration {
        /// The name of the builder setting.
        setting: &'static str,
    },
    /// The maximum open duration was shorter than the base open duration.
    MaxBelowBase {
        /// The base open duration.
        base: Duration,
        /// The maximum open duration.
        max: Duration,
    },
    /// The backoff multiplier was below 1.0 or not finite.
    InvalidMultiplier {
        /// The value given.
        value: f64,
    },
    /// The jitter was outside `[0.0, 1.0]` or not a number.
    InvalidJitter {
        /// The value given.
        value: f64,
    },
    /// No trip condition was configured, so the breaker could never open by itself.
    NoTripCondition,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroCount { setting } => {
                write!(f, "invalid circuit breaker setting {setting}: 0 (must be at least 1)")
            }
            BuildError::CountTooLarge {
                setting,
                value,
                max,
            } => write!(
                f,
                "invalid circuit breaker setting {setting}: {value} (must be at most {max})"
            ),
            BuildError::InvalidRate { setting, value } => write!(
                f,
                "invalid circuit breaker setting {setting}: {value} (must be in (0.0, 1.0])"
            ),
            BuildError::ZeroDuration { setting } => {
                write!(f, "invalid circuit breaker setting {setting}: 0s (must be positive)")
            }
            BuildError::MaxBelowBase { base, max } => write!(
                f,
                "invalid circuit breaker open durations: max {max:?} is below base {base:?}"
            ),
            BuildError::InvalidMultiplier { value } => write!(
                f,
                "invalid circuit breaker backoff multiplier {value} (must be finite and at least 1.0)"
            ),
            BuildError::InvalidJitter { value } => write!(
                f,
                "invalid circuit breaker jitter {value} (must be in [0.0, 1.0])"
            ),
            BuildError::NoTripCondition => write!(
                f,
                "invalid circuit breaker: no trip condition (consecutive failures, failure rate or slow-call rate) is set"
            ),
        }
    }
}

impl std::error::Error for BuildError {}
