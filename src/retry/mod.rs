//! Budgeted retries that go to another endpoint: a retry layer for HTTP and gRPC that
//! never sends a retry back to the endpoint that just failed while another is ready
//! (tower's `Retry` cannot: it knows nothing of endpoints).
//!
//! [`RetryLayer`] wraps a balanced, `Clone` service (tower-mesh's
//! [`Balance`](crate::balance::Balance) with an [`Avoiding`](crate::balance::Avoiding)
//! strategy, cloneable as it is, or any balancer behind tower's `Buffer`). Each retryable
//! request carries an [`Avoid`] set;
//! the balancer records the endpoint each attempt went to, and a failed attempt adds that
//! endpoint to the set, so the next attempt goes to another usable endpoint (or, when every
//! usable endpoint has failed it, to the balancer's pick).
//!
//! # What is retried
//!
//! * Idempotent methods (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`): on a
//!   connection error (hyper-util's client errors, refused or reset connections) and on
//!   the configured statuses ([`Builder::statuses`], default 502, 503, 504).
//! * gRPC requests (`content-type: application/grpc…`, with [`Builder::grpc`], the
//!   default): only when they got no response: the connection failed to open, or the
//!   answer is a trailers-only `UNAVAILABLE` (`grpc-status: 14`).
//! * Nothing else: `POST` and `PATCH` are never retried.
//!
//! Requests are retried by clone, so the body must be [`RetryBody`]: every `Clone` body is
//! (`Full<Bytes>`, `Empty<Bytes>`, `String`); streaming bodies (hyper's `Incoming`, tonic's
//! `tonic::body::Body`) are not, and must be buffered into a `Full<Bytes>` first, or carried
//! in a body type whose [`try_clone`](RetryBody::try_clone) says per request whether it can
//! be sent again (a request whose body cannot is sent once). Requests that may not be
//! retried (by method) are sent without keeping a clone. Retries happen at once (another endpoint is
//! tried, so there is no backoff), at most [`Builder::max_retries`] per request, and only
//! while the budget allows: every request deposits into a
//! [`TpsBudget`](tower::retry::budget::TpsBudget) (Finagle's) shared by every service the
//! layer builds, and every retry withdraws from it, so that under a total outage retries
//! add at most [`retry_ratio`](Builder::retry_ratio) of the traffic plus
//! [`min_per_sec`](Builder::min_per_sec). The inner service's error must be
//! convertible to tower's `BoxError` (as `Balance`'s, `Buffer`'s and the breakers' are).
//!
//! A retryable request keeps a copy of itself (taken before its avoid set is added) and a
//! reference to the layer's shared part until its response arrives; a request that cannot
//! be retried keeps neither. A retry is sent through a clone of the inner service taken
//! when the retry is made (so the inner service must be `Clone`, and `Sync` for the
//! response future to be `Send`). The [`Policy`] is also a `tower::retry::Policy`, for use with
//! tower's own `Retry` (retries then go wherever the balancer picks).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{discover::ServiceList, service_fn, ServiceBuilder, ServiceExt};
//! use tower_mesh::balance::{Avoiding, BalanceLayer, RoundRobin, WithWeight};
//! use tower_mesh::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! // Endpoint 0 is down (503); the others answer with their index.
//! let endpoints = (0..3).map(|i| {
//!     WithWeight::new(service_fn(move |_req: Request<String>| async move {
//!         let status = if i == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         Ok::<_, Infallible>(Response::builder().status(status).body(i).unwrap())
//!     }), 1)
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::builder().build()?)
//!     .layer(BalanceLayer::builder(Avoiding::new(RoundRobin::new())).build()?)
//!     .service(ServiceList::new(endpoints.collect::<Vec<_>>()));
//! for _ in 0..6 {
//!     let rsp = svc.clone().oneshot(Request::new(String::new())).await?;
//!     assert_eq!(rsp.status(), StatusCode::OK);
//! }
//! # Ok(())
//! # }
//! ```

mod layer;
mod policy;

pub mod error;

pub use self::layer::{Builder, RetryLayer};
pub use self::policy::Policy;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_service::Service;

use crate::balance::Avoid;

/// A request body that can be sent again: every `Clone` body can, and a body type that is
/// only sometimes replayable (a buffered body or a stream, as the mesh's `RequestBody`)
/// says so per request. A request whose body cannot be cloned is sent once.
pub trait RetryBody: Sized {
    /// A copy to send again, or `None` if this body cannot be replayed.
    fn try_clone(&self) -> Option<Self>;
}

impl<B: Clone> RetryBody for B {
    #[inline]
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

pub mod future;

/// Retries failed requests on another endpoint, within a budget; see the
/// [module documentation](self). Made by [`RetryLayer`].
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared<S>>,
}

/// What a [`Retry`] and its clones share, and what a retryable request keeps: the policy,
/// and a clone of the inner service kept as a template, which the few requests that are
/// retried clone (so that a request costs one reference count, not a clone of the stack).
pub(crate) struct Shared<S> {
    pub(crate) template: S,
    pub(crate) policy: Policy,
}

impl<S> Retry<S> {
    pub(crate) fn new(inner: S, policy: Policy) -> Self
    where
        S: Clone,
    {
        Self {
            shared: Arc::new(Shared {
                template: inner.clone(),
                policy,
            }),
            inner,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, B, ResB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: RetryBody,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = future::ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        policy.deposit();
        if !policy.is_retryable(&req) {
            return future::ResponseFuture::once(self.inner.call(req));
        }
        // The copy for a retry is taken before the avoid set goes in (so that it does not
        // copy the set's extension map); a body that cannot be sent again is sent once.
        let Some(copy) = policy::copy(&req) else {
            return future::ResponseFuture::once(self.inner.call(req));
        };
        let avoid = match req.extensions().get::<Avoid>() {
            // The caller's own set: every attempt carries it (and what it learns).
            Some(avoid) => avoid.clone(),
            None => {
                let avoid = Avoid::new();
                req.extensions_mut().insert(avoid.clone());
                avoid
            }
        };
        let fut = self.inner.call(req);
        future::ResponseFuture::retryable(fut, self.shared.clone(), copy, avoid)
    }
}
