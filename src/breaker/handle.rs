//! A breaker's public face: its [`State`], its counters and the [`Handle`] that reads and
//! drives it.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::state::Shared;
use super::word;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass and their outcomes are recorded.
    Closed,
    /// Calls are rejected (service level) or held back (endpoint level) until the open
    /// duration has passed.
    Open,
    /// A limited number of probe calls pass; enough successes close the breaker, one failure
    /// opens it again.
    HalfOpen,
    /// Set through the [`Handle`]: every call passes and nothing is recorded.
    Disabled,
    /// Set through the [`Handle`]: every call is rejected until the handle resets the breaker.
    ForcedOpen,
}

impl State {
    pub(crate) fn from_code(code: u8) -> State {
        match code {
            word::CLOSED => State::Closed,
            word::OPEN => State::Open,
            word::HALF_OPEN => State::HalfOpen,
            word::DISABLED => State::Disabled,
            _ => State::ForcedOpen,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            State::Closed => word::CLOSED,
            State::Open => word::OPEN,
            State::HalfOpen => word::HALF_OPEN,
            State::Disabled => word::DISABLED,
            State::ForcedOpen => word::FORCED_OPEN,
        }
    }

    /// A short lowercase name (`"closed"`, `"open"`, `"half_open"`, `"disabled"`,
    /// `"forced_open"`), as used in tracing and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of a breaker's counters, read through [`Handle::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Calls classified as successes.
    pub successes: u64,
    /// Calls classified as failures.
    pub failures: u64,
    /// Calls classified as ignored.
    pub ignored: u64,
    /// Calls rejected (service level) or readiness polls held back (endpoint level).
    pub rejected: u64,
    /// Calls at least as slow as the slow-call duration.
    pub slow: u64,
    /// State transitions.
    pub transitions: u64,
    /// The current run of consecutive failures in the closed state.
    pub consecutive_failures: u32,
}

/// A handle on a breaker: read its state and counters, force it open, disable it, reset it.
///
/// Cheap to clone; made by [`Builder::build_with_handle`](super::Builder::build_with_handle)
/// for service-level breakers and [`EndpointBreaker::handle`](super::EndpointBreaker::handle)
/// for endpoint breakers.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", self.shared.name())
            .field("state", &self.state())
            .finish()
    }
}

/// A handle that does not keep its breaker alive.
#[derive(Clone)]
pub(crate) struct WeakHandle(std::sync::Weak<Shared>);

impl WeakHandle {
    pub(crate) fn upgrade(&self) -> Option<Handle> {
        self.0.upgrade().map(|shared| Handle { shared })
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.0.strong_count() == 0
    }
}

impl Handle {
    pub(crate) fn downgrade(&self) -> WeakHandle {
        WeakHandle(Arc::downgrade(&self.shared))
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The current state. An open breaker reports [`State::Open`] until a call (or, at the
    /// endpoint level, the readiness wake-up) finds the open duration over and half-opens it.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// When an open breaker may half-open; `None` in every other state.
    pub fn open_until(&self) -> Option<Instant> {
        self.shared.open_until()
    }

    /// The breaker's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters()
    }

    /// Forces the breaker open: every call is rejected until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.shared.force(State::ForcedOpen);
    }

    /// Disables the breaker: every call passes and nothing is recorded until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.shared.force(State::Disabled);
    }

    /// Closes the breaker and clears its failure counts, window and open-duration backoff.
    pub fn reset(&self) {
        self.shared.force(State::Closed);
    }
}
