//! Errors returned by the circuit breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::BoxError;

use super::State;

/// The error of a service-level [`CircuitBreaker`](super::CircuitBreaker): the breaker
/// rejected the call, or the inner service failed.
///
/// A concrete type rather than a [`BoxError`], so that a rejection costs no allocation; it
/// converts into a `BoxError` (it implements [`std::error::Error`]) where a stack needs one.
/// [`Open::find`] finds the rejection in either form.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The breaker rejected the call without calling the inner service.
    Open(Open),
    /// The inner service failed (its error, boxed).
    Inner(BoxError),
}

impl Error {
    /// Whether the breaker rejected the call.
    pub fn is_open(&self) -> bool {
        matches!(self, Error::Open(_))
    }

    /// The rejection, if the breaker rejected the call.
    pub fn as_open(&self) -> Option<&Open> {
        match self {
            Error::Open(open) => Some(open),
            Error::Inner(_) => None,
        }
    }

    /// The inner service's error, if it failed.
    pub fn into_inner(self) -> Option<BoxError> {
        match self {
            Error::Open(_) => None,
            Error::Inner(e) => Some(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open(open) => open.fmt(f),
            Error::Inner(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open(_) => None,
            Error::Inner(e) => Some(&**e),
        }
    }
}

impl From<Open> for Error {
    fn from(open: Open) -> Self {
        Error::Open(open)
    }
}

/// The circuit breaker rejected a call without sending it to the inner service.
///
/// Returned by [`CircuitBreaker`](super::CircuitBreaker) as [`Error::Open`] while the breaker
/// is open, forced open, or half-open with all probe permits taken. Once the error has been
/// boxed further up a stack, [`Open::find`] still finds it.
#[derive(Debug, Clone)]
pub struct Open {
    name: Name,
    state: State,
    /// The breaker's base instant and, if non-zero, the nanoseconds after it when the breaker
    /// may half-open (`retry_at` is computed when asked for, so a rejection only copies).
    base: Instant,
    until: u64,
}

impl Open {
    /// The rejection in `error` or anywhere in its [`source`](std::error::Error::source)
    /// chain, whether as an [`Error`] or as an `Open` on its own.
    ///
    /// ```
    /// use tower::BoxError;
    /// use tower_mesh::breaker::error::{Error, Open};
    ///
    /// fn rejected(e: &BoxError) -> bool {
    ///     Open::find(&**e).is_some()
    /// }
    /// # let _ = rejected;
    /// ```
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Open> {
        let mut cur = Some(error);
        while let Some(e) = cur {
            if let Some(open) = e.downcast_ref::<Open>() {
                return Some(open);
            }
            if let Some(Error::Open(open)) = e.downcast_ref::<Error>() {
                return Some(open);
            }
            cur = e.source();
        }
        None
    }

    /// A rejection in `state`; `until` is when an open breaker may half-open, in nanoseconds
    /// since `base` (0 when it is not open).
    #[inline]
    pub(crate) fn new(name: Name, state: State, base: Instant, until: u64) -> Self {
        Open {
            name,
            state,
            base,
            until,
        }
    }

    /// The name of the breaker (and so of the service) that rejected the call.
    pub fn name(&self) -> &str {
        self.name.as_str()
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
        (self.until != 0).then(|| self.base + Duration::from_nanos(self.until))
    }

    /// How long until the breaker may half-open, measured from now; `None` as for
    /// [`retry_at`](Self::retry_at).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after()) {
            (State::HalfOpen, _) => write!(
                f,
                "circuit breaker for {:?} is half-open and all probe permits are taken",
                self.name.as_str()
            ),
            (State::ForcedOpen, _) => {
                write!(
                    f,
                    "circuit breaker for {:?} is forced open",
                    self.name.as_str()
                )
            }
            (_, Some(after)) => write!(
                f,
                "circuit breaker for {:?} is open; it may half-open in {:?}",
                self.name.as_str(),
                after
            ),
            (_, None) => write!(f, "circuit breaker for {:?} is open", self.name.as_str()),
        }
    }
}

impl std::error::Error for Open {}

/// A breaker's name as an [`Open`] error carries it: interned for service-level breakers (so
/// that a rejection copies a pointer instead of counting a reference), shared otherwise.
#[derive(Debug, Clone)]
pub(crate) enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    fn as_str(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Shared(s) => s,
        }
    }

    /// `name`, interned: every distinct name is stored once for the life of the process.
    pub(crate) fn interned(name: &str) -> &'static str {
        use std::collections::HashSet;
        use std::sync::{Mutex, OnceLock};
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names = crate::sync::lock(NAMES.get_or_init(Default::default));
        if let Some(&s) = names.get(name) {
            return s;
        }
        let s: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(s);
        s
    }
}

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
