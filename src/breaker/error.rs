//! Errors returned by the circuit breaker.
//!
//! Each error prints once in a chain: [`Error`] is transparent (its `Display` and `source`
//! are those of the rejection or of the inner error), [`Open`] and [`BuildError`] have a
//! message of their own and no source.
//!
//! ```
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_mesh::breaker::{error::Open, CircuitBreakerLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let (breaker, handle) = CircuitBreakerLayer::builder().name("orders").build_with_handle()?;
//! let mut svc = ServiceBuilder::new()
//!     .buffer(8)
//!     .layer(breaker)
//!     .service(service_fn(|_req: ()| async { Ok::<_, BoxError>(()) }));
//! handle.force_open();
//! // Behind `Buffer` the rejection arrives as a `BoxError`; `Open::find` still finds it.
//! let err: BoxError = svc.ready().await?.call(()).await.unwrap_err();
//! let open = Open::find(&*err).expect("rejected by the breaker");
//! assert_eq!(open.name(), "orders");
//! # Ok(())
//! # }
//! ```

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
///
/// Transparent: it displays as the rejection or the inner error, and its
/// [`source`](std::error::Error::source) is theirs, so a chain prints each message once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The breaker rejected the call without calling the inner service.
    #[error(transparent)]
    Open(Open),
    /// The inner service failed (its error, boxed).
    #[error(transparent)]
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
    /// The breaker's name, shared with the breaker (a rejection counts a reference).
    name: Arc<str>,
    state: State,
    /// The breaker's base instant and, if non-zero, the nanoseconds after it when the breaker
    /// may half-open (`retry_at` is computed when asked for, so a rejection only copies).
    base: Instant,
    until: u64,
}

impl Open {
    /// The rejection in `error` or anywhere in its [`source`](std::error::Error::source)
    /// chain, whether as an [`Error`] or as an `Open` on its own: through `BoxError`s, tower's
    /// `Buffer` (its `ServiceError` has the failed service's error as its source) and nested
    /// breakers (an [`Error::Inner`] is searched, although it is transparent).
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
            cur = match e.downcast_ref::<Error>() {
                Some(Error::Open(open)) => return Some(open),
                // Transparent: its `source` is the inner error's source, which would skip
                // the inner error itself.
                Some(Error::Inner(inner)) => Some(&**inner),
                None => e.source(),
            };
        }
        None
    }

    /// A rejection in `state`; `until` is when an open breaker may half-open, in nanoseconds
    /// since `base` (0 when it is not open).
    #[inline]
    pub(crate) fn new(name: Arc<str>, state: State, base: Instant, until: u64) -> Self {
        Open {
            name,
            state,
            base,
            until,
        }
    }

    /// The name of the breaker (and so of the service) that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared with the breaker.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn shared_name(&self) -> &Arc<str> {
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
        let name = &*self.name;
        match (self.state, self.retry_after()) {
            (State::HalfOpen, _) => write!(
                f,
                "circuit breaker for {name:?} is half-open and all probe permits are taken"
            ),
            (State::ForcedOpen, _) => write!(f, "circuit breaker for {name:?} is forced open"),
            (_, Some(after)) => write!(
                f,
                "circuit breaker for {name:?} is open; it may half-open in {after:?}"
            ),
            (_, None) => write!(f, "circuit breaker for {name:?} is open"),
        }
    }
}

impl std::error::Error for Open {}

/// An invalid circuit breaker configuration, reported by
/// [`Builder::build`](super::Builder::build) with the setting and the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A threshold given as a count was zero.
    #[error("invalid circuit breaker setting {setting}: 0 (must be at least 1)")]
    ZeroCount {
        /// The name of the builder setting.
        setting: &'static str,
    },
    /// A count exceeded what the breaker can track.
    #[error("invalid circuit breaker setting {setting}: {value} (must be at most {max})")]
    CountTooLarge {
        /// The name of the builder setting.
        setting: &'static str,
        /// The value given.
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A rate was outside `(0.0, 1.0]` or not a number.
    #[error("invalid circuit breaker setting {setting}: {value} (must be in (0.0, 1.0])")]
    InvalidRate {
        /// The name of the builder setting.
        setting: &'static str,
        /// The value given.
        value: f64,
    },
    /// A duration was zero where it must be positive.
    #[error("invalid circuit breaker setting {setting}: 0s (must be positive)")]
    ZeroDuration {
        /// The name of the builder setting.
        setting: &'static str,
    },
    /// The maximum open duration was shorter than the base open duration.
    #[error(
        "invalid circuit breaker setting max_open_duration: {max:?} (must be at least open_duration, {base:?})"
    )]
    MaxBelowBase {
        /// The base open duration.
        base: Duration,
        /// The maximum open duration.
        max: Duration,
    },
    /// An open duration, lengthened by the largest jitter, exceeded
    /// [`MAX_OPEN_DURATION`](super::MAX_OPEN_DURATION): the breaker could not say when it may
    /// half-open (use [`Handle::force_open`](super::Handle::force_open) to keep it open).
    #[error(
        "invalid circuit breaker setting {setting}: {value:?} (with jitter {jitter}, an opening must be at most {max:?})"
    )]
    OpenDurationTooLong {
        /// The name of the builder setting: `open_duration` or `max_open_duration`.
        setting: &'static str,
        /// The value given.
        value: Duration,
        /// The jitter, which lengthens an opening by up to this share.
        jitter: f64,
        /// The longest opening accepted, jitter included.
        max: Duration,
    },
    /// The backoff multiplier was below 1.0 or not finite.
    #[error(
        "invalid circuit breaker setting backoff_multiplier: {value} (must be finite and at least 1.0)"
    )]
    InvalidMultiplier {
        /// The value given.
        value: f64,
    },
    /// The jitter was outside `[0.0, 1.0]` or not a number.
    #[error("invalid circuit breaker setting jitter: {value} (must be in [0.0, 1.0])")]
    InvalidJitter {
        /// The value given.
        value: f64,
    },
    /// A rate is set over a count window of fewer calls than
    /// [`minimum_calls`](super::Builder::minimum_calls): the window can never hold enough
    /// calls for the rate to open the breaker.
    #[error(
        "invalid circuit breaker setting minimum_calls: {minimum_calls} (must be at most the count window's {window} calls, or no rate can ever open the breaker)"
    )]
    MinimumCallsAboveWindow {
        /// The minimum number of calls given.
        minimum_calls: u32,
        /// The count window's size, in calls.
        window: u32,
    },
    /// No trip condition was configured, so the breaker could never open by itself.
    #[error(
        "invalid circuit breaker: no trip condition (consecutive failures, failure rate or slow-call rate) is set"
    )]
    NoTripCondition,
}
