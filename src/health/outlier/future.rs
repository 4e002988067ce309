//! The response future of [`OutlierEndpoint`](super::OutlierEndpoint).
//!
//! ```
//! use tower::discover::ServiceList;
//! use tower::service_fn;
//! use tower_mesh::health::outlier::OutlierLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // An endpoint's future is a `health::outlier::future::ResponseFuture`.
//! let layer = OutlierLayer::builder().build().unwrap();
//! let endpoints = layer.discover(ServiceList::new(vec![service_fn(|x: u32| async move {
//!     Ok::<_, std::io::Error>(x)
//! })]));
//! # drop(endpoints);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::breaker::{Classify, Done, External};

use super::endpoint::GATEWAY;
use super::gateway::ClassifyGateway;

pin_project! {
    /// Response future of [`OutlierEndpoint`](super::OutlierEndpoint): the inner service's
    /// future, whose result is classified and recorded for the endpoint when it completes
    /// (or, for a classifier that needs the end of the body, when the body ends), and passed
    /// on. Dropped before it completes, it records nothing.
    pub struct ResponseFuture<F, C, G> {
        #[pin]
        future: F,
        permit: External,
        classifier: C,
        gateway: G,
    }
}

impl<F, C, G> ResponseFuture<F, C, G> {
    #[inline]
    pub(crate) fn new(future: F, permit: External, classifier: C, gateway: G) -> Self {
        ResponseFuture {
            future,
            permit,
            classifier,
            gateway,
        }
    }
}

impl<F, C, G> fmt::Debug for ResponseFuture<F, C, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

impl<F, C, G, T, E> Future for ResponseFuture<F, C, G>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
    G: ClassifyGateway<T, E>,
{
    type Output = Result<C::Response, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        // The gateway verdict rides with the permit; it counts only if the classifier calls
        // the call a failure.
        if this.gateway.is_gateway_failure(&result) {
            this.permit.set_tag(GATEWAY);
        }
        Poll::Ready(
            this.classifier
                .classify(result, Done::external(this.permit)),
        )
    }
}
