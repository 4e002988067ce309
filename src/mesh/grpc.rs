//! [`GrpcClient`]: one service's stack for generated tonic clients (feature `tonic`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Limited};
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};
use tower_service::Service;

use crate::breaker::HttpClassifier;

type GrpcClassifier = HttpClassifier<GrpcErrorsAsFailures>;
use crate::mesh::body::{Body, RequestBody};
use crate::mesh::client::{timed, Parts, ResponseFuture, Stack};
use crate::mesh::Error;

/// The gRPC classifier of the mesh's breakers and outlier detection: the statuses a server
/// answers for a request it could not serve (`UNKNOWN`, `DEADLINE_EXCEEDED`,
/// `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`) and transport errors are
/// failures; the caller's mistakes (`INVALID_ARGUMENT`, `NOT_FOUND`, …) are not.
pub(crate) fn classifier() -> GrpcClassifier {
    let mut inner = GrpcErrorsAsFailures::new();
    for code in [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Unauthenticated,
    ] {
        inner = inner.with_success(code);
    }
    HttpClassifier::new(inner)
}

/// The gRPC client of one service, for generated tonic clients:
/// `GreeterClient::new(mesh.grpc("greeter")?)`. Made by [`Mesh::grpc`](super::Mesh::grpc).
///
/// The same stack as [`Client`](super::Client) (timeout → retry → service breaker →
/// balance → outlier detection → endpoint breaker → load metric → hyper-util client), over
/// HTTP/2 without TLS (instances registered as `grpc://host:port`), with the breakers and
/// outlier detection judging gRPC statuses (from the trailers too): `UNKNOWN`,
/// `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS`
/// are failures, the caller's own mistakes are not. Retries go to another endpoint, only
/// for requests that got no response (see [`crate::retry`]).
///
/// The request body is read whole before the call (so that a retry can send it again), up
/// to [`MeshBuilder::grpc_max_request`](super::MeshBuilder::grpc_max_request): unary and
/// server-streaming calls work as usual, client-streaming calls are sent once the client
/// has finished streaming, and bidirectional calls that wait for the server before sending
/// more cannot work; use [`TonicEndpoints`](crate::discover::TonicEndpoints) for those.
/// Responses stream.
///
/// Failures reach the generated client as a `tonic::Status` whose source is the mesh's
/// [`Error`].
pub struct GrpcClient {
    inner: Stack<GrpcClassifier>,
    pub(crate) parts: Arc<Parts>,
    max_request: usize,
}

impl GrpcClient {
    pub(crate) fn new(inner: Stack<GrpcClassifier>, parts: Arc<Parts>, max_request: usize) -> Self {
        Self {
            inner,
            parts,
            max_request,
        }
    }

    /// The service this client calls.
    pub fn service(&self) -> &str {
        &self.parts.service
    }

    /// The balancer's endpoint set (discovered, ready, ejected), for introspection.
    pub fn balance(&self) -> &crate::balance::BalanceHandle<crate::instance::InstanceId> {
        &self.parts.balance
    }

    /// The service breaker's handle.
    pub fn breaker(&self) -> &crate::breaker::Handle {
        &self.parts.breaker
    }

    /// The outlier detector's handle (ejections by instance).
    pub fn outlier(&self) -> &crate::health::outlier::OutlierHandle<crate::instance::InstanceId> {
        &self.parts.outlier
    }

    /// The breaker of each endpoint the balancer holds, by instance id (sorted).
    pub fn endpoint_breakers(&self) -> Vec<(crate::instance::InstanceId, crate::breaker::Handle)> {
        self.parts.endpoint_breakers.live()
    }
}

impl Clone for GrpcClient {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            parts: self.parts.clone(),
            max_request: self.max_request,
        }
    }
}

impl fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClient")
            .field("service", &self.parts.service)
            .field("max_request", &self.max_request)
            .finish_non_exhaustive()
    }
}

impl Service<Request<tonic::body::Body>> for GrpcClient {
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture;

    /// Always ready: the stack's readiness is awaited in the response future, once the
    /// request body has been read.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> ResponseFuture {
        let fut = send(
            self.inner.clone(),
            self.parts.clone(),
            self.max_request,
            req,
        );
        ResponseFuture::new(Box::pin(fut), self.parts.clone())
    }
}

/// Reads the request body whole (up to `max` bytes), then calls the stack.
fn send(
    inner: Stack<GrpcClassifier>,
    parts: Arc<Parts>,
    max: usize,
    req: Request<tonic::body::Body>,
) -> Sending {
    let (head, body) = req.into_parts();
    Sending {
        state: State::Collect {
            collect: Limited::new(body, max).collect(),
            head: Some(head),
        },
        inner,
        parts,
    }
}

/// The future of [`send`]: a state machine rather than an `async` block, so that its
/// `Send`-ness is plain to the compiler wherever it is named.
struct Sending {
    state: State,
    inner: Stack<GrpcClassifier>,
    parts: Arc<Parts>,
}

enum State {
    Collect {
        collect: Collect<Limited<tonic::body::Body>>,
        head: Option<http::request::Parts>,
    },
    Ready(Option<Request<RequestBody>>),
    Call(Pin<Box<dyn Future<Output = Result<Response<Body>, tower::BoxError>> + Send>>),
}

impl Future for Sending {
    type Output = Result<Response<Body>, tower::BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Collect { collect, head } => {
                    let body = match ready!(Pin::new(collect).poll(cx)) {
                        Ok(body) => body.to_bytes(),
                        Err(source) => {
                            return Poll::Ready(Err(Box::new(Error::Request {
                                service: this.parts.service.clone(),
                                source,
                            })))
                        }
                    };
                    let head = head.take().expect("polled after completion");
                    this.state =
                        State::Ready(Some(Request::from_parts(head, RequestBody::whole(body))));
                }
                State::Ready(req) => {
                    ready!(this.inner.poll_ready(cx))?;
                    let req = req.take().expect("polled after completion");
                    this.state = State::Call(timed(this.inner.call(req), this.parts.timeout));
                }
                State::Call(fut) => return fut.as_mut().poll(cx),
            }
        }
    }
}
