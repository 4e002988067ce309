//! Response futures for the circuit breaker services.
//!
//! ```
//! use tower::{service_fn, ServiceBuilder};
//! use tower_mesh::breaker::CircuitBreakerLayer;
//!
//! // `CircuitBreaker`'s future is a `ResponseFuture`; `EndpointBreaker`'s an `EndpointFuture`.
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::builder().build().unwrap())
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! # let _ = svc;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::classify::{Classify, Done};
use super::error::{Error, Open};
use super::permit::Permit;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
    ///
    /// Either the inner service's future, whose result is classified and recorded when it
    /// completes, or an immediate [`Error::Open`] rejection. Dropping it before it completes gives a
    /// half-open probe permit back.
    pub struct ResponseFuture<F, C> {
        // `None` for a rejection; kept apart from the rejection itself so that the inner
        // future is stored as it is (niche-optimised), not moved into an enum variant.
        #[pin]
        future: Option<F>,
        rejection: Option<Open>,
        permit: Permit,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline(always)]
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        ResponseFuture {
            future: Some(future),
            rejection: None,
            permit,
            classifier,
        }
    }

    #[inline]
    pub(crate) fn rejected(error: Open, classifier: C) -> Self {
        ResponseFuture {
            future: None,
            rejection: Some(error),
            permit: Permit::Done,
            classifier,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.future.is_some() {
            "called"
        } else {
            "rejected"
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .field("permit", &self.permit)
            .finish()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<C::Response, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.future.as_pin_mut() {
            Some(future) => {
                let result = ready!(future.poll(cx));
                let result = this.classifier.classify(result, Done::new(this.permit));
                Poll::Ready(result.map_err(|e| Error::Inner(e.into())))
            }
            None => {
                let open = this
                    .rejection
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Err(Error::Open(open)))
            }
        }
    }
}

pin_project! {
    /// Response future of [`EndpointBreaker`](super::EndpointBreaker): the inner service's
    /// future, whose result is classified and recorded when it completes and passed on (its
    /// error as it is). Dropping it before it completes gives a half-open probe permit back.
    pub struct EndpointFuture<F, C> {
        #[pin]
        future: F,
        permit: Permit,
        classifier: C,
    }
}

impl<F, C> EndpointFuture<F, C> {
    #[inline(always)]
    pub(crate) fn new(future: F, permit: Permit, classifier: C) -> Self {
        EndpointFuture {
            future,
            permit,
            classifier,
        }
    }
}

impl<F, C> fmt::Debug for EndpointFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointFuture")
            .field("permit", &self.permit)
            .finish()
    }
}

impl<F, C, T, E> Future for EndpointFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<C::Response, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        Poll::Ready(this.classifier.classify(result, Done::new(this.permit)))
    }
}
