//! Event hooks: state transitions, rejected calls and slow calls.
//!
//! Each hook is `()` (do nothing), any closure taking the event, or a type implementing the
//! hook's trait. Hooks run synchronously on the task that caused the event, outside the
//! breaker's locks, so they may read the breaker through its [`Handle`](super::Handle); keep
//! them short.

use std::fmt;
use std::time::Duration;

use super::error::Open;
use super::State;

/// A state transition of a breaker.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// The breaker's name.
    pub name: &'a str,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// For a transition to [`State::Open`], how long the breaker stays open.
    pub open_for: Option<Duration>,
}

/// A call that took at least the configured slow-call duration.
#[derive(Debug, Clone, Copy)]
pub struct SlowCall<'a> {
    /// The breaker's name.
    pub name: &'a str,
    /// How long the call took.
    pub elapsed: Duration,
}

/// Called on every state transition.
pub trait OnStateChange: Send + Sync + 'static {
    /// Handles one transition.
    fn on_state_change(&self, transition: &Transition<'_>);
}

impl OnStateChange for () {
    fn on_state_change(&self, _: &Transition<'_>) {}
}

impl<F> OnStateChange for F
where
    F: Fn(&Transition<'_>) + Send + Sync + 'static,
{
    fn on_state_change(&self, transition: &Transition<'_>) {
        self(transition)
    }
}

/// Called for every call the breaker rejects (service level) or holds back (endpoint level).
pub trait OnRejected: Send + Sync + 'static {
    /// Handles one rejection.
    fn on_rejected(&self, rejection: &Open);
}

impl OnRejected for () {
    fn on_rejected(&self, _: &Open) {}
}

impl<F> OnRejected for F
where
    F: Fn(&Open) + Send + Sync + 'static,
{
    fn on_rejected(&self, rejection: &Open) {
        self(rejection)
    }
}

/// Called for every call at least as slow as the configured slow-call duration.
pub trait OnSlowCall: Send + Sync + 'static {
    /// Handles one slow call.
    fn on_slow_call(&self, call: &SlowCall<'_>);
}

impl OnSlowCall for () {
    fn on_slow_call(&self, _: &SlowCall<'_>) {}
}

impl<F> OnSlowCall for F
where
    F: Fn(&SlowCall<'_>) + Send + Sync + 'static,
{
    fn on_slow_call(&self, call: &SlowCall<'_>) {
        self(call)
    }
}

pub(crate) struct Hooks {
    pub(crate) on_state_change: Box<dyn OnStateChange>,
    /// `None` for `()`, so that a rejection without a hook builds no error for it.
    pub(crate) on_rejected: Option<Box<dyn OnRejected>>,
    pub(crate) on_slow_call: Box<dyn OnSlowCall>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            on_state_change: Box::new(()),
            on_rejected: None,
            on_slow_call: Box::new(()),
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}
