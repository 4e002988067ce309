//! [`OutlierEndpoint`]: one endpoint under outlier detection.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{sleep_until, Sleep};
use tower_service::Service;

use crate::breaker::{Classify, DefaultClassifier, External};

use super::endpoint::Membership;
use super::future::ResponseFuture;
use super::gateway::{ClassifyGateway, ErrorsAsGateway};
use super::report::Ejection;

/// An endpoint watched by outlier detection: its calls' outcomes feed the detector, and while
/// it is ejected it is simply not ready, so a balancer routes around it.
///
/// While ejected, `poll_ready` returns `Pending` and wakes at the end of the ejection (or
/// when the endpoint is returned early through the handle); it never fails because of an
/// ejection, which `Buffer` and balancers would take as fatal. An endpoint ejected while a
/// balancer holds it as ready wakes the task that polled it last, so the balancer looks
/// again. Errors and responses pass through unchanged (responses as the classifier hands
/// them on).
///
/// Made by [`OutlierLayer`](super::OutlierLayer) (through
/// [`layer_keyed`](super::OutlierLayer::layer_keyed), a wrapped discovery stream or an
/// endpoint factory); clones share the endpoint's state. It carries the inner service's
/// [`Weight`](crate::balance::Weight) and tower's [`Load`](tower::load::Load).
///
/// # Panics
///
/// The wake-up at the end of an ejection is a tokio timer: polled for readiness while
/// ejected, the endpoint needs a tokio runtime with the time driver.
pub struct OutlierEndpoint<S, K, C = DefaultClassifier, G = ErrorsAsGateway>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    inner: S,
    member: Arc<Membership<K>>,
    classifier: C,
    gateway: G,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, K, C, G> OutlierEndpoint<S, K, C, G>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    pub(crate) fn from_parts(
        inner: S,
        member: Arc<Membership<K>>,
        classifier: C,
        gateway: G,
    ) -> Self {
        OutlierEndpoint {
            inner,
            member,
            classifier,
            gateway,
            sleep: None,
        }
    }

    /// The endpoint's key.
    pub fn key(&self) -> &K {
        &self.member.endpoint.key
    }

    /// The endpoint's ejection, if it is ejected.
    pub fn ejection(&self) -> Option<Ejection<K>> {
        self.member.detector.ejection(self.key())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the endpoint, returning the inner service (the endpoint leaves the detector
    /// when no other clone holds it).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// `poll_ready` while ejected: return if the ejection is over, else sleep until it is.
    #[cold]
    #[inline(never)]
    fn poll_ejected<Req>(&mut self, cx: &mut Context<'_>, until: u64) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        let detector = &self.member.detector;
        let endpoint = &self.member.endpoint;
        let mut until = until;
        loop {
            if until == 0 {
                return self.inner.poll_ready(cx);
            }
            if detector.now() >= until {
                detector.return_if_due(endpoint);
                if endpoint.ejected_until.load(Ordering::Acquire) == until {
                    // Not returned (it cannot happen while this service holds the endpoint's
                    // place); its time is over, so it takes the call rather than spin.
                    return self.inner.poll_ready(cx);
                }
            } else {
                let at = detector.instant(until);
                let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            until = endpoint.ejected_until.load(Ordering::Acquire);
        }
    }
}

impl<S: Clone, K, C: Clone, G: Clone> Clone for OutlierEndpoint<S, K, C, G>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    fn clone(&self) -> Self {
        OutlierEndpoint {
            inner: self.inner.clone(),
            member: self.member.clone(),
            classifier: self.classifier.clone(),
            gateway: self.gateway.clone(),
            sleep: None,
        }
    }
}

impl<S: fmt::Debug, K, C, G> fmt::Debug for OutlierEndpoint<S, K, C, G>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierEndpoint")
            .field("inner", &self.inner)
            .field("endpoint", &self.member.endpoint)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, G, Req> Service<Req> for OutlierEndpoint<S, K, C, G>
where
    S: Service<Req>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    C: Classify<S::Response, S::Error> + Clone,
    G: ClassifyGateway<S::Response, S::Error> + Clone,
{
    type Response = C::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, G>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let endpoint = &self.member.endpoint;
        // Registered before the state is read, so an ejection or a return in between is
        // not missed.
        endpoint.waker.register(cx.waker());
        let until = endpoint.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return self.inner.poll_ready(cx);
        }
        self.poll_ejected(cx, until)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let permit = External::new(self.member.endpoint.clone());
        ResponseFuture::new(
            self.inner.call(req),
            permit,
            self.classifier.clone(),
            self.gateway.clone(),
        )
    }
}

impl<S, K, C, G> crate::balance::Weight for OutlierEndpoint<S, K, C, G>
where
    S: crate::balance::Weight,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    fn weight(&self) -> u32 {
        self.inner.weight()
    }

    fn is_healthy(&self) -> bool {
        self.inner.is_healthy()
    }
}

impl<S, K, C, G> tower::load::Load for OutlierEndpoint<S, K, C, G>
where
    S: tower::load::Load,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    type Metric = S::Metric;

    fn load(&self) -> Self::Metric {
        self.inner.load()
    }
}
