//! The response future of [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

use crate::balance::Avoid;
use crate::retry::{RetryBody, Shared};

/// What a retryable request keeps for another attempt.
struct Again<S, B> {
    /// The layer's policy and service template.
    shared: Arc<Shared<S>>,
    /// The service retries go through: cloned from the template at the first retry,
    /// polled ready before each.
    service: Option<S>,
    /// A copy of the request as the caller sent it (without the avoid set).
    request: Option<Request<B>>,
    /// The request's avoid set: learns where each attempt went.
    avoid: Avoid,
    /// This request's retries so far.
    retries: usize,
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
        shared: Arc<Shared<S>>,
        copy: Request<B>,
        avoid: Avoid,
    ) -> Self {
        Self {
            attempt: Some(fut),
            again: Some(Again {
                shared,
                service: None,
                request: Some(copy),
                avoid,
                retries: 0,
            }),
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
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
                let policy = &again.shared.policy;
                if !policy.should_retry(&mut again.retries, request, &result, &mut again.avoid) {
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
            let service = again
                .service
                .get_or_insert_with(|| again.shared.template.clone());
            ready!(service.poll_ready(cx)).map_err(Into::into)?;
            // Another copy only if another retry may follow; else the kept one goes.
            let another = again
                .request
                .as_ref()
                .filter(|_| again.shared.policy.has_retries_left(again.retries))
                .and_then(super::policy::copy);
            let mut request =
                another.unwrap_or_else(|| again.request.take().expect("a copy is kept"));
            request.extensions_mut().insert(again.avoid.clone());
            this.attempt.set(Some(service.call(request)));
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
