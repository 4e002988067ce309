//! The readiness step both breaker services share: taking leave from the breaker for the
//! next call, in `poll_ready`, and handing it to the call.

use std::sync::Arc;

use super::permit::Permit;
use super::state::{Rejection, Shared};

/// What a breaker service holds between a `poll_ready` that returned ready and its `call`.
///
/// [`CircuitBreaker`](super::CircuitBreaker) turns a refusal into a rejected call;
/// [`EndpointBreaker`](super::EndpointBreaker) waits (not ready) until the breaker may admit
/// a call.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Set when the breaker was closed: the call takes its permit then (one reference count,
    /// not two).
    closed: Option<u32>,
    /// A permit taken in another state (a half-open probe, or a call while disabled).
    permit: Option<Permit>,
}

impl Admission {
    /// Takes leave for the next call; `Err` with the refusal if the breaker refuses it.
    ///
    /// A permit taken by an earlier poll is kept while the breaker stays in the generation it
    /// was taken in; a permit just taken is used as it is, whatever happened to the breaker
    /// since (its outcome only counts in its generation), so that a poll ends as soon as a
    /// permit is had. While closed, a half-open permit kept from an earlier poll is given
    /// back.
    #[inline]
    pub(crate) fn poll(&mut self, shared: &Arc<Shared>) -> Result<(), Rejection> {
        if let Some(generation) = shared.closed_generation() {
            if self.permit.is_some() {
                self.permit = None;
            }
            self.closed = Some(generation);
            return Ok(());
        }
        self.poll_slow(shared)
    }

    /// [`poll`](Self::poll) in every state but closed.
    fn poll_slow(&mut self, shared: &Arc<Shared>) -> Result<(), Rejection> {
        self.closed = None;
        if !matches!(&self.permit, Some(permit) if permit.is_current()) {
            self.permit = None;
            self.permit = Some(shared.try_acquire()?);
        }
        Ok(())
    }

    /// The generation, if the last [`poll`](Self::poll) found the breaker closed: the call
    /// then takes its permit with [`Shared::closed_permit`] (after calling the inner service,
    /// which keeps the permit's stores away from the loads that build the call's future).
    #[inline]
    pub(crate) fn take_closed(&mut self) -> Option<u32> {
        self.closed.take()
    }

    /// The permit the last [`poll`](Self::poll) took in another state than closed, its
    /// slow-call clock started; `None` if that poll refused the call (or there was none).
    #[inline]
    pub(crate) fn take_permit(&mut self) -> Option<Permit> {
        let mut permit = self.permit.take()?;
        permit.start();
        Some(permit)
    }
}
