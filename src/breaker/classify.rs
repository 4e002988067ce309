//! Deciding whether a call succeeded, failed or is to be ignored.
//!
//! The default, [`DefaultClassifier`], counts every `Err` as a failure and every `Ok` as a
//! success. [`HttpClassifier`] adapts any of tower-http's [`ClassifyResponse`] classifiers
//! ([`ServerErrorsAsFailures`], [`StatusInRangeAsFailures`], [`GrpcErrorsAsFailures`],
//! re-exported here with the types they use, so a stack can be named without depending on
//! tower-http); when the verdict needs the end of the body (a gRPC status sent in trailers)
//! it wraps the body in a [`ClassifiedBody`] that records the outcome when the trailers
//! arrive. Any closure `Fn(&Result<Res, E>) -> Outcome` is a classifier too; returning
//! [`Outcome::Ignored`] leaves a call out of every count, like resilience4j's
//! `ignoreExceptions`.
//!
//! The common classifiers and the bodies they hand on have names of their own:
//!
//! | classifier | made by | response body |
//! | --- | --- | --- |
//! | [`ServerErrorsClassifier`] | [`HttpClassifier::server_errors`] | [`ServerErrorsBody<B>`] |
//! | [`StatusInRangeClassifier`] | [`HttpClassifier::status_in_range`] | [`StatusInRangeBody<B>`] |
//! | [`GrpcClassifier`] | [`HttpClassifier::grpc`] | [`GrpcBody<B>`] |
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_mesh::breaker::classify::{GrpcBody, GrpcClassifier, HttpClassifier};
//! use tower_mesh::breaker::{CircuitBreaker, CircuitBreakerLayer};
//!
//! // gRPC: a status in the headers is classified at once, one in the trailers at the end of
//! // the response body.
//! let layer = CircuitBreakerLayer::builder()
//!     .classifier(HttpClassifier::grpc())
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new().layer(layer).service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! });
//! // The stack's types, named without tower-http.
//! struct Client<S> {
//!     svc: CircuitBreaker<S, GrpcClassifier>,
//! }
//! fn body_of(rsp: http::Response<GrpcBody<String>>) -> GrpcBody<String> {
//!     rsp.into_body()
//! }
//! # let _ = (Client { svc }, body_of);
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
pub use tower_http::classify::{
    ClassifiedResponse, ClassifyEos, ClassifyResponse, GrpcCode, GrpcEosErrorsAsFailures,
    GrpcErrorsAsFailures, GrpcFailureClass, NeverClassifyEos, ServerErrorsAsFailures,
    ServerErrorsFailureClass, StatusInRangeAsFailures, StatusInRangeFailureClass,
};

use super::permit::Permit;

/// [`HttpClassifier::server_errors`]: 5xx responses and transport errors are failures.
pub type ServerErrorsClassifier = HttpClassifier<ServerErrorsAsFailures>;

/// [`HttpClassifier::status_in_range`]: responses with a status in a range, and transport
/// errors, are failures.
pub type StatusInRangeClassifier = HttpClassifier<StatusInRangeAsFailures>;

/// [`HttpClassifier::grpc`]: gRPC responses whose `grpc-status` is not `Ok`, and transport
/// errors, are failures.
pub type GrpcClassifier = HttpClassifier<GrpcErrorsAsFailures>;

/// The response body a [`ServerErrorsClassifier`] hands on (the inner body `B`, unchanged).
pub type ServerErrorsBody<B> = ClassifiedBody<B, NeverClassifyEos<ServerErrorsFailureClass>>;

/// The response body a [`StatusInRangeClassifier`] hands on (the inner body `B`, unchanged).
pub type StatusInRangeBody<B> = ClassifiedBody<B, NeverClassifyEos<StatusInRangeFailureClass>>;

/// The response body a [`GrpcClassifier`] hands on: the inner body `B`, whose trailers
/// decide the outcome when the status was not in the headers.
pub type GrpcBody<B> = ClassifiedBody<B, GrpcEosErrorsAsFailures>;

/// How a completed call counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed.
    Failure,
    /// The call counts neither as a success nor as a failure (a half-open probe that ends
    /// ignored just gives its permit back).
    Ignored,
}

/// Classifies the result of a call.
///
/// Implemented by [`DefaultClassifier`], [`HttpClassifier`] and any
/// `Fn(&Result<Res, E>) -> Outcome` closure.
pub trait Classify<Res, E> {
    /// The response handed on: `Res` itself, or `Res` wrapped so that the outcome can be
    /// decided once the response has been consumed (as [`HttpClassifier`] does).
    type Response;

    /// Classifies `result`, reporting the outcome through `done` now or, after
    /// [`Done::defer`], later; returns what the breaker hands on.
    fn classify(&self, result: Result<Res, E>, done: Done<'_>) -> Result<Self::Response, E>;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    type Response = Res;

    #[inline]
    fn classify(&self, result: Result<Res, E>, done: Done<'_>) -> Result<Res, E> {
        done.complete(self(&result));
        result
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<Res, E> Classify<Res, E> for DefaultClassifier {
    type Response = Res;

    #[inline]
    fn classify(&self, result: Result<Res, E>, done: Done<'_>) -> Result<Res, E> {
        done.complete(match &result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
        result
    }
}

/// Where a [`Classify`] implementation reports a call's outcome: at once with
/// [`complete`](Self::complete), or later through the [`Deferred`] that
/// [`defer`](Self::defer) returns. Dropping it unused leaves the call uncounted (a half-open
/// probe gives its permit back).
pub struct Done<'a> {
    sink: Sink<'a>,
}

/// What a [`Done`] reports to: a breaker's permit, or another recorder (outlier detection
/// reuses the classifiers this way). Kept out of [`Permit`], whose layout the breaker's
/// closed-call path is tuned to; a `Done` lives only inside one `classify` call, so the
/// breaker's own path sees a variant known at compile time.
enum Sink<'a> {
    Breaker(&'a mut Permit),
    #[cfg_attr(not(feature = "health"), allow(dead_code))]
    External(&'a mut External),
}

impl<'a> Done<'a> {
    #[inline]
    pub(crate) fn new(permit: &'a mut Permit) -> Self {
        Done {
            sink: Sink::Breaker(permit),
        }
    }

    /// A `Done` reporting to another recorder than a breaker.
    #[inline]
    #[cfg_attr(not(feature = "health"), allow(dead_code))]
    pub(crate) fn external(external: &'a mut External) -> Self {
        Done {
            sink: Sink::External(external),
        }
    }

    /// Records the outcome now.
    #[inline]
    pub fn complete(self, outcome: Outcome) {
        match self.sink {
            Sink::Breaker(permit) => permit.complete(outcome),
            Sink::External(external) => external.complete(outcome),
        }
    }

    /// Takes the call's permit along, to record the outcome once the response has been
    /// consumed.
    pub fn defer(self) -> Deferred {
        Deferred {
            inner: match self.sink {
                Sink::Breaker(permit) => {
                    DeferredSink::Breaker(std::mem::replace(permit, Permit::Done))
                }
                Sink::External(external) => DeferredSink::External(std::mem::take(external)),
            },
        }
    }
}

impl fmt::Debug for Done<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sink {
            Sink::Breaker(permit) => f.debug_struct("Done").field("permit", permit).finish(),
            Sink::External(external) => f.debug_struct("Done").field("external", external).finish(),
        }
    }
}

/// A call's outcome still to be recorded (see [`Done::defer`]). Dropping it records nothing
/// (a half-open probe gives its permit back).
#[derive(Debug)]
pub struct Deferred {
    inner: DeferredSink,
}

#[derive(Debug)]
enum DeferredSink {
    Breaker(Permit),
    External(External),
}

impl Deferred {
    /// Records the outcome.
    pub fn complete(self, outcome: Outcome) {
        match self.inner {
            DeferredSink::Breaker(mut permit) => permit.complete(outcome),
            DeferredSink::External(mut external) => external.complete(outcome),
        }
    }
}

/// Where an [`External`] permit reports its call's outcome.
pub(crate) trait Record: Send + Sync {
    /// Records one call's outcome, with the tag its permit was given.
    fn record(&self, outcome: Outcome, tag: u8);
}

/// A call's permit for another recorder than a breaker: reports the outcome to its
/// [`Record`] once, with a tag of the recorder's own; records nothing if dropped unused.
#[derive(Default)]
pub(crate) struct External {
    sink: Option<std::sync::Arc<dyn Record>>,
    tag: u8,
}

impl fmt::Debug for External {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("External")
            .field("pending", &self.sink.is_some())
            .field("tag", &self.tag)
            .finish()
    }
}

#[cfg_attr(not(feature = "health"), allow(dead_code))]
impl External {
    /// A permit reporting to `sink`, with tag 0.
    #[inline]
    pub(crate) fn new(sink: std::sync::Arc<dyn Record>) -> Self {
        External {
            sink: Some(sink),
            tag: 0,
        }
    }

    /// Sets the tag the outcome is reported with.
    #[inline]
    pub(crate) fn set_tag(&mut self, tag: u8) {
        self.tag = tag;
    }

    /// Reports the outcome (once; later calls do nothing).
    #[inline]
    pub(crate) fn complete(&mut self, outcome: Outcome) {
        if let Some(sink) = self.sink.take() {
            sink.record(outcome, self.tag);
        }
    }
}

/// Classifies HTTP responses with a tower-http [`ClassifyResponse`] classifier (such as
/// [`ServerErrorsAsFailures`]); transport errors are failures.
///
/// Responses come back with their body in a [`ClassifiedBody`]. When the classifier can decide
/// from the head (a 5xx, a `grpc-status` header) the outcome is recorded at once and the body
/// just passes through; when it must see the end of the stream (`ClassifiedResponse::
/// RequiresEos`, as gRPC's does when the status comes in trailers) it is recorded when the
/// body ends: by the trailers, by the end of a body without trailers, or as a failure by a
/// body error. A body dropped before its end records nothing.
#[derive(Clone, Copy, Default)]
pub struct HttpClassifier<C> {
    inner: C,
}

impl<C: fmt::Debug> fmt::Debug for HttpClassifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<C> HttpClassifier<C> {
    /// Wraps a tower-http classifier.
    pub fn new(inner: C) -> Self {
        HttpClassifier { inner }
    }
}

impl HttpClassifier<ServerErrorsAsFailures> {
    /// 5xx responses and transport errors are failures.
    pub fn server_errors() -> Self {
        HttpClassifier::new(ServerErrorsAsFailures::new())
    }
}

impl HttpClassifier<StatusInRangeAsFailures> {
    /// Responses with a status in `range` (for example `500..=599` or `400..=599`) and
    /// transport errors are failures.
    pub fn status_in_range(range: std::ops::RangeInclusive<u16>) -> Self {
        HttpClassifier::new(StatusInRangeAsFailures::new(range))
    }
}

impl HttpClassifier<GrpcErrorsAsFailures> {
    /// gRPC responses whose `grpc-status` (in the headers, or else in the trailers) is not
    /// `Ok`, and transport errors, are failures.
    pub fn grpc() -> Self {
        HttpClassifier::new(GrpcErrorsAsFailures::new())
    }
}

impl<C, B, E> Classify<Response<B>, E> for HttpClassifier<C>
where
    C: ClassifyResponse + Clone,
{
    type Response = Response<ClassifiedBody<B, C::ClassifyEos>>;

    fn classify(
        &self,
        result: Result<Response<B>, E>,
        done: Done<'_>,
    ) -> Result<Self::Response, E> {
        match result {
            Ok(response) => match self.inner.clone().classify_response(&response) {
                ClassifiedResponse::Ready(verdict) => {
                    done.complete(if verdict.is_ok() {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    });
                    Ok(response.map(|inner| ClassifiedBody { inner, eos: None }))
                }
                ClassifiedResponse::RequiresEos(eos) => {
                    let deferred = done.defer();
                    Ok(response.map(|inner| ClassifiedBody {
                        inner,
                        eos: Some((eos, deferred)),
                    }))
                }
            },
            Err(e) => {
                done.complete(Outcome::Failure);
                Err(e)
            }
        }
    }
}

pin_project! {
    /// A response body whose end decides the call's outcome (see [`HttpClassifier`]): the
    /// frames pass through unchanged.
    pub struct ClassifiedBody<B, E> {
        #[pin]
        inner: B,
        eos: Option<(E, Deferred)>,
    }
}

impl<B, E> ClassifiedBody<B, E> {
    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: fmt::Debug, E> fmt::Debug for ClassifiedBody<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifiedBody")
            .field("inner", &self.inner)
            .field("pending", &self.eos.is_some())
            .finish()
    }
}

fn end<E: ClassifyEos>(eos: &mut Option<(E, Deferred)>, trailers: Option<&HeaderMap>) {
    if let Some((classify, deferred)) = eos.take() {
        deferred.complete(match classify.classify_eos(trailers) {
            Ok(()) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
    }
}

impl<B, E> Body for ClassifiedBody<B, E>
where
    B: Body,
    B::Error: fmt::Display + 'static,
    E: ClassifyEos,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    end(this.eos, Some(trailers));
                }
            }
            Some(Err(error)) => {
                if let Some((classify, deferred)) = this.eos.take() {
                    let _ = classify.classify_error(error);
                    deferred.complete(Outcome::Failure);
                }
            }
            None => end(this.eos, None),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::breaker::{CircuitBreakerLayer, Handle};
    use http::StatusCode;
    use http_body_util::{BodyExt, StreamBody};

    /// A fresh breaker's handle and one permit from it.
    fn permit() -> (Handle, Permit) {
        let (_, handle) = CircuitBreakerLayer::builder().build_with_handle().unwrap();
        let permit = handle.shared.try_acquire().unwrap();
        (handle, permit)
    }

    /// Classifies `result` with `c` and returns the counts it left (successes, failures) and
    /// what the classifier handed on.
    fn run<C: Classify<Res, E>, Res, E>(
        c: &C,
        result: Result<Res, E>,
    ) -> ((u64, u64), Handle, Result<C::Response, E>) {
        let (handle, mut permit) = permit();
        let out = c.classify(result, Done::new(&mut permit));
        drop(permit);
        let n = handle.counters();
        ((n.successes, n.failures), handle, out)
    }

    fn response(status: u16) -> Result<Response<()>, ()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok(r)
    }

    #[test]
    fn default_counts_errors() {
        assert_eq!(run(&DefaultClassifier, Ok::<_, ()>(1)).0, (1, 0));
        assert_eq!(run(&DefaultClassifier, Err::<(), _>(1)).0, (0, 1));
    }

    #[test]
    fn http_server_errors() {
        let c = HttpClassifier::server_errors();
        assert_eq!(run(&c, response(200)).0, (1, 0));
        assert_eq!(run(&c, response(404)).0, (1, 0));
        assert_eq!(run(&c, response(503)).0, (0, 1));
        assert_eq!(run(&c, Err::<Response<()>, _>(())).0, (0, 1));
        let c = HttpClassifier::status_in_range(400..=599);
        assert_eq!(run(&c, response(404)).0, (0, 1));
    }

    #[test]
    fn grpc_status_in_headers() {
        let c = HttpClassifier::grpc();
        let mut r = Response::new(());
        r.headers_mut().insert("grpc-status", "14".parse().unwrap());
        assert_eq!(run(&c, Ok::<_, ()>(r)).0, (0, 1));
        let mut r = Response::new(());
        r.headers_mut().insert("grpc-status", "0".parse().unwrap());
        assert_eq!(run(&c, Ok::<_, ()>(r)).0, (1, 0));
    }

    type Item = Result<Frame<bytes::Bytes>, std::io::Error>;
    type Frames = Vec<Item>;
    type Stream = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Item>>>;

    fn grpc_body(frames: Frames) -> Response<Stream> {
        Response::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    fn trailers(status: &str) -> Frame<bytes::Bytes> {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", status.parse().unwrap());
        Frame::trailers(t)
    }

    #[tokio::test]
    async fn grpc_status_in_trailers_is_recorded_at_the_end_of_the_body() {
        let c = HttpClassifier::grpc();
        let data = || Ok(Frame::data(bytes::Bytes::from_static(b"\0\0\0\0\0")));
        for (status, expect) in [("14", (0, 1)), ("0", (1, 0))] {
            let (counts, handle, out) = run(
                &c,
                Ok::<_, ()>(grpc_body(vec![data(), Ok(trailers(status))])),
            );
            assert_eq!(counts, (0, 0), "nothing is recorded before the body ends");
            let body = out.unwrap().into_body().collect().await.unwrap();
            assert!(body.trailers().is_some());
            let n = handle.counters();
            assert_eq!((n.successes, n.failures), expect, "grpc-status {status}");
        }
        // A body error is a failure; a body dropped before its end records nothing.
        let (_, handle, out) = run(
            &c,
            Ok::<_, ()>(grpc_body(vec![data(), Err(std::io::Error::other("reset"))])),
        );
        assert!(out.unwrap().into_body().collect().await.is_err());
        assert_eq!(handle.counters().failures, 1);
        let (_, handle, out) = run(&c, Ok::<_, ()>(grpc_body(vec![data(), Ok(trailers("14"))])));
        drop(out);
        let n = handle.counters();
        assert_eq!((n.successes, n.failures), (0, 0));
    }

    #[test]
    fn closures_can_ignore() {
        let c = |r: &Result<u8, u8>| match r {
            Err(0) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        };
        let ((s, f), handle, _) = run(&c, Err(0));
        assert_eq!((s, f, handle.counters().ignored), (0, 0, 1));
        assert_eq!(run(&c, Err(1)).0, (0, 1));
    }
}
