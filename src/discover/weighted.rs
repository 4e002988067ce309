//! Endpoints that carry their instance's weight and health.

use std::task::{Context, Poll};

use tower_service::Service;

use crate::instance::{Health, Instance};

use super::MakeEndpoint;

/// An endpoint with the weight and health of the instance it was made for, so weighted
/// balancers (and panic thresholds) can read them. Made by [`MakeEndpoint::weighted`].
#[derive(Debug, Clone)]
pub struct InstanceEndpoint<S> {
    inner: S,
    weight: u32,
    health: Health,
}

impl<S> InstanceEndpoint<S> {
    /// Wraps `inner` with `instance`'s weight and health.
    pub fn new(inner: S, instance: &Instance) -> Self {
        InstanceEndpoint {
            inner,
            weight: instance.weight(),
            health: instance.health(),
        }
    }

    /// The instance's weight when the endpoint was made.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The instance's health when the endpoint was made (`Passing` or `Warning`: discovery
    /// offers no other).
    pub fn health(&self) -> Health {
        self.health
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for InstanceEndpoint<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}

/// A factory whose endpoints carry their instance's weight and health; see
/// [`MakeEndpoint::weighted`].
#[derive(Debug, Clone)]
pub struct Weighted<F> {
    pub(super) inner: F,
}

impl<F: MakeEndpoint> MakeEndpoint for Weighted<F> {
    type Service = InstanceEndpoint<F::Service>;

    fn make_endpoint(&mut self, instance: &Instance) -> Self::Service {
        InstanceEndpoint::new(self.inner.make_endpoint(instance), instance)
    }
}
