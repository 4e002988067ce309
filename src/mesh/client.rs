//! [`Client`]: one service's whole stack, built once and shared by every clone.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::balance::error::{NoEndpoints, Panic};
use crate::balance::{
    AnyPick, Avoiding, Balance, BalanceHandle, BalanceLayer, StrategySwitch, Switchable,
};
use crate::breaker::{
    self, CircuitBreaker, Classify, Done, EndpointBreaker, HttpClassifier, Outcome,
};
use crate::discover::{HttpEndpoint, HttpEndpoints, InstanceEndpoint, MakeEndpoint, Spawned};
use crate::health::outlier::{HttpGateway, OutlierEndpoint, OutlierHandle};
use crate::instance::InstanceId;
use crate::mesh::body::{Body, RequestBody};
use crate::mesh::endpoints::{EndpointBreakers, Recorded};
use crate::mesh::policy::{Policies, PolicyError};
use crate::mesh::Error;
use crate::registry::Registry;
use crate::retry::{Retry, RetryLayer};
use tower_http::classify::ServerErrorsAsFailures;

/// The request a [`Client`] sends: a path (and query) only, the mesh fills in the scheme and
/// address of the endpoint it picks. A whole body can be retried on another endpoint; a
/// streamed one is sent once (see [`RequestBody`]).
pub type MeshRequest = Request<RequestBody>;

/// The hyper-util client the mesh's endpoints share (and with it one connection pool).
pub(crate) type HyperClient = hyper_util::client::legacy::Client<HttpConnector, RequestBody>;

/// One endpoint: hyper-util client ← endpoint breaker ← outlier detection, with the
/// instance's weight and live health for the balancer.
pub(crate) type Endpoint<C> = InstanceEndpoint<
    OutlierEndpoint<EndpointBreaker<HttpEndpoint<RequestBody>, C>, InstanceId, C, HttpGateway>,
>;

type Balanced<C> = Balance<Spawned<Endpoint<C>>, Avoiding<Switchable<MeshRequest>>>;
type Broken<C> = CircuitBreaker<Balanced<C>, ServiceClassifier<C>>;
/// The stack below the timeout, which the response future applies (see [`timed`]).
pub(crate) type Stack<C> = Retry<Broken<C>>;

/// The service breaker's classifier: `C`'s verdict on what the service's endpoints answer
/// (responses, and errors on the way to them), while the balancer's own failures (no
/// endpoint ready after the wait, panic mode failing fast) count neither way.
///
/// A call that reached no endpoint says nothing of the service's health: counting it would
/// open the breaker of a service that has no instance yet, report `CircuitOpen` instead of
/// `NoEndpoints`, and keep failing calls for the open duration after the first instance
/// registers.
#[derive(Debug, Clone)]
pub(crate) struct ServiceClassifier<C>(pub(crate) C);

impl<C, Res> Classify<Res, BoxError> for ServiceClassifier<C>
where
    C: Classify<Res, BoxError>,
{
    type Response = C::Response;

    #[inline]
    fn classify(
        &self,
        result: Result<Res, BoxError>,
        done: Done<'_>,
    ) -> Result<Self::Response, BoxError> {
        // Looked at by reference: the response goes on to `C` without another move.
        let from_balancer = result
            .as_ref()
            .err()
            .is_some_and(|e| NoEndpoints::find(&**e).is_some() || Panic::find(&**e).is_some());
        if !from_balancer {
            return self.0.classify(result, done);
        }
        done.complete(Outcome::Ignored);
        result.map(|_| unreachable!("the balancer's error"))
    }
}

/// What the stack of one service shares with its clients and the mesh.
pub(crate) struct Parts {
    pub(crate) service: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) balance: BalanceHandle<InstanceId>,
    pub(crate) outlier: OutlierHandle<InstanceId>,
    pub(crate) breaker: breaker::Handle,
    pub(crate) endpoint_breakers: Arc<EndpointBreakers>,
    pub(crate) switch: StrategySwitch<MeshRequest>,
}

/// The classifier of one protocol's stack (HTTP statuses, or gRPC statuses).
pub(crate) trait Protocol: Clone + Send + Sync + Unpin + 'static {}
impl<C: Clone + Send + Sync + Unpin + 'static> Protocol for C {}

/// Builds the stack of `service` with `policies` over `registry`, its endpoints through
/// `http` and judged by `classifier`.
pub(crate) fn build<R, C>(
    registry: R,
    service: &str,
    policies: &Policies,
    http: HyperClient,
    classifier: C,
) -> Result<(Stack<C>, Arc<Parts>), PolicyError>
where
    R: Registry,
    C: Protocol,
    Endpoint<C>: Service<MeshRequest> + Send,
    <Endpoint<C> as Service<MeshRequest>>::Error: Into<BoxError>,
    <Endpoint<C> as Service<MeshRequest>>::Future: Send + 'static,
    <Endpoint<C> as Service<MeshRequest>>::Response: Send + 'static,
    Broken<C>: Service<MeshRequest, Error = breaker::error::Error> + Clone,
{
    let timeout = policies.timeout()?;
    let endpoint_breaker = policies
        .endpoint_breaker
        .endpoint_breaker_with(service, classifier.clone())
        .map_err(|e| e.within("endpoint_breaker"))?;
    let outlier = policies
        .outlier
        .builder(service)
        .map_err(|e| e.within("outlier"))?
        .classifier(classifier.clone())
        .gateway(HttpGateway)
        .build::<InstanceId>()
        .map_err(|e| PolicyError::new("outlier", e))?;
    let service_breaker = policies
        .service_breaker
        .service_breaker_with(service, ServiceClassifier(classifier))
        .map_err(|e| e.within("service_breaker"))?;
    let retry: RetryLayer = policies.retry.layer().map_err(|e| e.within("retry"))?;
    let pick: AnyPick<MeshRequest> = policies.strategy.pick().map_err(|e| e.within("strategy"))?;
    let strategy = Switchable::new(pick);
    let switch = strategy.switch();

    let breakers = Arc::new(EndpointBreakers::default());
    let recorded = Recorded {
        inner: HttpEndpoints::with_client(http).layered(endpoint_breaker),
        breakers: breakers.clone(),
    };
    let endpoints = outlier.endpoints(recorded).weighted();
    let discover = policies
        .health_filter
        .discover_builder()
        .build(registry, service, endpoints)
        .map_err(|e| PolicyError::new("service", e))?
        .spawn();
    // A client made before the service's first instance waits for one up to its timeout.
    let balance: Balanced<C> = BalanceLayer::builder(Avoiding::new(strategy))
        .no_endpoints_timeout(timeout)
        .build()
        .map_err(|e| PolicyError::new("timeout", e))?
        .build(discover);
    let parts = Arc::new(Parts {
        service: Arc::from(service),
        timeout,
        balance: balance.handle(),
        outlier: outlier.handle(),
        breaker: service_breaker.handle(),
        endpoint_breakers: breakers,
        switch,
    });
    // No `Buffer`: the balancer is cloneable, and every clone (one per `Client` clone, and
    // the retry layer's template) shares its endpoints and its worker.
    let stack = retry.layer(service_breaker.layer(balance));
    Ok((stack, parts))
}

/// The client of one service: timeout → retry → service breaker → balance → outlier
/// detection → endpoint breaker → load metric → hyper-util client; see the
/// [module documentation](super).
///
/// Made by [`Mesh::client`](super::Mesh::client): built once per service, and every clone
/// shares it (and the process's one registry watch). Cheap to clone, `Send + Sync`; its
/// futures are `Send` and `'static`.
pub struct Client {
    pub(crate) inner: Stack<HttpClassifier<ServerErrorsAsFailures>>,
    pub(crate) parts: Arc<Parts>,
}

impl Clone for Client {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            parts: self.parts.clone(),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.parts.service)
            .field("timeout", &self.parts.timeout)
            .field("strategy", &self.parts.switch.strategy())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The service this client calls.
    pub fn service(&self) -> &str {
        &self.parts.service
    }

    /// The balancer's endpoint set (discovered, ready, ejected), for introspection.
    pub fn balance(&self) -> &BalanceHandle<InstanceId> {
        &self.parts.balance
    }

    /// The service breaker's handle (state, counters, forcing it open or closed).
    pub fn breaker(&self) -> &breaker::Handle {
        &self.parts.breaker
    }

    /// The outlier detector's handle (ejections by instance).
    pub fn outlier(&self) -> &OutlierHandle<InstanceId> {
        &self.parts.outlier
    }

    /// The breaker of each endpoint the balancer holds, by instance id (sorted).
    pub fn endpoint_breakers(&self) -> Vec<(InstanceId, breaker::Handle)> {
        self.parts.endpoint_breakers.live()
    }

    /// The instance that served a request, from the [`Avoid`](crate::balance::Avoid) set
    /// the request carried (the retry layer adds one to requests it may retry: idempotent,
    /// with a whole body; add your own to any request to learn where it went): the last
    /// endpoint it was sent to.
    pub fn served_by(&self, avoid: &crate::balance::Avoid) -> Option<InstanceId> {
        self.parts.endpoint_breakers.instance(avoid.served()?)
    }

    /// The strategy the client balances with now.
    pub fn strategy(&self) -> crate::balance::Strategy {
        self.parts.switch.strategy()
    }
}

impl Service<MeshRequest> for Client {
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| classify(&self.parts, e))
    }

    #[inline]
    fn call(&mut self, req: MeshRequest) -> ResponseFuture {
        let fut = timed(self.inner.call(req), self.parts.timeout);
        ResponseFuture::new(fut, self.parts.clone())
    }
}

/// The response future of a [`Client`] (and of a `GrpcClient`, feature `tonic`): `Send`
/// and `'static`, failing with the mesh's [`Error`].
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>,
    parts: Arc<Parts>,
}

impl ResponseFuture {
    pub(crate) fn new(
        inner: Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>,
        parts: Arc<Parts>,
    ) -> Self {
        Self { inner, parts }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("service", &self.parts.service)
            .finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.inner.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(rsp)) => Poll::Ready(Ok(rsp)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(classify(&self.parts, e))),
        }
    }
}

/// The mesh's error for `e`; a timeout with no endpoint ready is "no endpoints" (the call
/// waited for one the whole time).
pub(crate) fn classify(parts: &Parts, e: BoxError) -> Error {
    let err = Error::from_box(parts.service.clone(), e).with_timeout(parts.timeout);
    if err.is_timeout() && parts.balance.ready_len() == 0 {
        return Error::NoEndpoints {
            service: parts.service.clone(),
        };
    }
    err
}

/// The stack's future under the client's timeout, boxed, its response body boxed into
/// the mesh's [`Body`]. The timeout is applied here rather than by tower's `Timeout` layer:
/// one future fewer to build, move and drop per request. It fails with tower's
/// [`Elapsed`](tower::timeout::error::Elapsed), as that layer does.
pub(crate) fn timed<F, B>(
    fut: F,
    timeout: Duration,
) -> Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>
where
    F: Future<Output = Result<Response<B>, BoxError>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(Timed {
        inner: fut,
        sleep: tokio::time::sleep(timeout),
    })
}

pin_project_lite::pin_project! {
    /// A stack's future and its deadline.
    struct Timed<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl<F, B> Future for Timed<F>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map(|rsp| rsp.map(Body::new)));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(tower::timeout::error::Elapsed::new().into())),
            Poll::Pending => Poll::Pending,
        }
    }
}
