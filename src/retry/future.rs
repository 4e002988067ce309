//! The response future of [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

use crate::balance::Avoid;
use crate::retry::{Policy, RetryBody};

/// What a retryable request keeps for another attempt.
struct Again<S, B> {
    /// A clone of the retry layer's service, polled ready before each retry.
    service: S,
    /// A copy of the request as the caller sent it (without the avoid set).
    request: Option<Request<B>>,
    /// The request's avoid set: learns where each attempt went.
    avoid: Avoid,
    /// This request's retries so far, and the shared budget.
    policy: Policy,
}

pin_project! {
    /// The response future of [`Retry`](super::Retry): the first attempt's future, and for
    /// a retryable request what it takes to send it again elsewhere.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        attempt: Option<S::Future>,
        again: Option<Again<S, B>>,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    /// A request sent once.
    #[inline]
    pub(crate) fn once(fut: S::Future) -> Self {
        Self {
            attempt: Some(fut),
            again: None,
        }
    }

    /// A request that may be sent again: `copy` without the avoid set.
    #[inline]
    pub(crate) fn retryable(
        fut: S::Future,
        service: S,
        copy: Request<B>,
        avoid: Avoid,
        policy: Policy,
    ) -> Self {
        Self {
            attempt: Some(fut),
            again: Some(Again {
                service,
                request: Some(copy),
                avoid,
                policy,
            }),
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    B: RetryBody,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(attempt) = this.attempt.as_mut().as_pin_mut() {
                let result = ready!(attempt.poll(cx)).map_err(Into::into);
                let Some(again) = this.again.as_mut() else {
                    return Poll::Ready(result);
                };
                let Some(request) = again.request.as_ref() else {
                    return Poll::Ready(result);
                };
                if !again
                    .policy
                    .should_retry(request, &result, &mut again.avoid)
                {
                    return Poll::Ready(result);
                }
                // The failed attempt's response (and its connection) is let go before
                // the next attempt.
                drop(result);
                this.attempt.set(None);
            }
            let again = this
                .again
                .as_mut()
                .expect("only a retryable request gets here");
            ready!(again.service.poll_ready(cx)).map_err(Into::into)?;
            let mut request = if again.policy.has_retries_left() {
                match again.request.as_ref().and_then(super::policy::copy) {
                    Some(copy) => copy,
                    None => again.request.take().expect("a copy is kept"),
                }
            } else {
                again.request.take().expect("a copy is kept")
            };
            request.extensions_mut().insert(again.avoid.clone());
            this.attempt.set(Some(again.service.call(request)));
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retryable", &self.again.is_some())
            .finish_non_exhaustive()
    }
}
