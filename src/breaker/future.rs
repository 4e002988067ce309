//! Response futures for the circuit breaker services.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::classify::Classify;
use super::error::Open;
use super::state::Permit;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker) and
    /// [`EndpointBreaker`](super::EndpointBreaker).
    ///
    /// Either the inner service's future, whose result is classified and recorded when it
    /// completes, or an immediate [`Open`] rejection. Dropping it before it completes gives a
    /// half-open probe permit back.
    pub struct ResponseFuture<F, C> {
        // `None` for a rejection; kept apart from the rejection itself so that the inner
        // future is stored as it is (niche-optimised), not moved into an enum variant.
        #[pin]
        future: Option<F>,
        rejection: Option<Box<Open>>,
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

    pub(crate) fn rejected(error: Open, classifier: C) -> Self {
        ResponseFuture {
            future: None,
            rejection: Some(Box::new(error)),
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
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.future.as_pin_mut() {
            Some(future) => {
                let result = ready!(future.poll(cx));
                this.permit.complete(this.classifier.classify(&result));
                Poll::Ready(result.map_err(Into::into))
            }
            None => {
                let error: Box<Open> = this
                    .rejection
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Err(error))
            }
        }
    }
}
