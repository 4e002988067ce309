//! The service-level [`CircuitBreaker`] and the per-endpoint [`EndpointBreaker`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::futures::OwnedNotified;
use tokio::time::{sleep_until, Sleep};
use tower::{BoxError, Service};

use super::admission::Admission;
use super::classify::{Classify, DefaultClassifier};
use super::error::Error;
use super::future::{EndpointFuture, ResponseFuture};
use super::handle::{Handle, State};
use super::layer::CircuitBreakerLayer;
use super::state::Shared;

/// A service-level circuit breaker: while open, calls fail at once with [`Error::Open`] without
/// reaching the inner service.
///
/// `poll_ready` never fails because of the breaker: a rejected call is ready at once and its
/// future resolves to [`Error::Open`], so `Buffer` and balancers in front of it keep working.
/// Clones share the breaker. Made by [`CircuitBreakerLayer`].
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    /// Leave for the next call, taken by `poll_ready`.
    admission: Admission,
    /// Set by `poll_ready` when it refused the call: the state that refused it. The call then
    /// fails with [`Error::Open`] (a plain field, so a rejection moves no more than a byte).
    rejected: Option<State>,
}

impl<S, C: Clone> CircuitBreaker<S, C> {
    /// Wraps `inner` in the breaker that `layer` holds (the same as `layer.layer(inner)`).
    pub fn new(inner: S, layer: &CircuitBreakerLayer<C>) -> Self {
        CircuitBreaker {
            inner,
            shared: layer.shared.clone(),
            classifier: layer.classifier.clone(),
            admission: Admission::default(),
            rejected: None,
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// A handle on the breaker.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            admission: Admission::default(),
            rejected: None,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = C::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Err(rejection) = self.admission.poll(&self.shared) {
            // Ready at once: the call fails with the rejection, without the inner service.
            self.rejected = Some(rejection.state);
            return Poll::Ready(Ok(()));
        }
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::Inner(e.into()))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(generation) = self.admission.take_closed() {
            let future = self.inner.call(req);
            let permit = self.shared.closed_permit(generation);
            return ResponseFuture::called(future, permit, self.classifier.clone());
        }
        if let Some(permit) = self.admission.take_permit() {
            return ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone());
        }
        let state = self
            .rejected
            .take()
            .expect("CircuitBreaker::call without poll_ready returning Ready first");
        ResponseFuture::rejected(self.shared.open_error(state), self.classifier.clone())
    }
}

/// A per-endpoint circuit breaker: while open it is simply not ready, so a balancer routes
/// around the endpoint; it never fails `poll_ready` because of the breaker.
///
/// While open, `poll_ready` returns `Pending` and arranges a wake-up for when the breaker may
/// half-open; while half-open with every probe permit taken, it wakes when a probe ends. This is
/// linkerd's gate (`linkerd/stack/src/gate.rs`) driven by a failure-accrual policy (Finagle's
/// `FailureAccrualFactory`). Made by [`EndpointBreakerLayer`](super::EndpointBreakerLayer), one
/// breaker per endpoint.
///
/// # Panics
///
/// The wake-up at the end of the open duration is a tokio timer: polled for readiness while
/// open, the endpoint breaker needs a tokio runtime with the time driver, and panics as
/// `tokio::time::sleep` does without one. (The service-level [`CircuitBreaker`] needs no
/// timer.)
pub struct EndpointBreaker<S, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    /// Leave for the next call, taken by `poll_ready`.
    admission: Admission,
    sleep: Option<Pin<Box<Sleep>>>,
    notified: Option<Pin<Box<OwnedNotified>>>,
}

impl<S, C> EndpointBreaker<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        EndpointBreaker {
            inner,
            shared,
            classifier,
            admission: Admission::default(),
            sleep: None,
            notified: None,
        }
    }

    /// A handle on this endpoint's breaker.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, C> fmt::Debug for EndpointBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for EndpointBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = C::Response;
    type Error = S::Error;
    type Future = EndpointFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            let rejection = match self.admission.poll(&self.shared) {
                Ok(()) => {
                    if self.notified.is_some() {
                        self.notified = None;
                    }
                    return self.inner.poll_ready(cx);
                }
                Err(rejection) => rejection,
            };
            // Register for state changes first, then look again, so that a change between
            // the refusal and the registration is not missed.
            if self.notified.is_none() {
                let notified = self.shared.notify.clone().notified_owned();
                self.notified = Some(Box::pin(notified));
                continue;
            }
            if let Some(at) = self.shared.retry_at(rejection) {
                let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            let notified = self.notified.as_mut().expect("registered above");
            if notified.as_mut().poll(cx).is_ready() {
                self.notified = None;
                continue;
            }
            return Poll::Pending;
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(generation) = self.admission.take_closed() {
            let future = self.inner.call(req);
            let permit = self.shared.closed_permit(generation);
            return EndpointFuture::new(future, permit, self.classifier.clone());
        }
        let permit = self
            .admission
            .take_permit()
            .expect("EndpointBreaker::call without poll_ready returning Ready first");
        EndpointFuture::new(self.inner.call(req), permit, self.classifier.clone())
    }
}

impl<S: tower::load::Load, C> tower::load::Load for EndpointBreaker<S, C> {
    type Metric = S::Metric;

    /// The inner service's load: a balancer such as tower's p2c sees through the breaker.
    fn load(&self) -> Self::Metric {
        self.inner.load()
    }
}

/// The inner service's weight and health: a weighted balancer sees through the breaker, so
/// the breaker may wrap an endpoint that carries its weight (discovery's `InstanceEndpoint`,
/// [`WithWeight`](crate::balance::WithWeight)) or be wrapped by it.
#[cfg(feature = "balance")]
impl<S: crate::balance::Weight, C> crate::balance::Weight for EndpointBreaker<S, C> {
    fn weight(&self) -> u32 {
        self.inner.weight()
    }

    fn is_healthy(&self) -> bool {
        self.inner.is_healthy()
    }
}
