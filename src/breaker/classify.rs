//! Deciding whether a call succeeded, failed or is to be ignored.
//!
//! The default, [`DefaultClassifier`], counts every `Err` as a failure and every `Ok` as a
//! success. [`HttpClassifier`] adapts any of tower-http's
//! [`ClassifyResponse`](tower_http::classify::ClassifyResponse) classifiers
//! ([`ServerErrorsAsFailures`], [`StatusInRangeAsFailures`], [`GrpcErrorsAsFailures`]). Any
//! closure `Fn(&Result<Res, E>) -> Outcome` is a classifier too; returning
//! [`Outcome::Ignored`] leaves a call out of every count, like resilience4j's `ignoreExceptions`.

use std::fmt;

use http::Response;
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, GrpcErrorsAsFailures, ServerErrorsAsFailures,
    StatusInRangeAsFailures,
};

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
    /// Classifies one result.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<Res, E> Classify<Res, E> for DefaultClassifier {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Classifies HTTP responses with a tower-http
/// [`ClassifyResponse`](tower_http::classify::ClassifyResponse) classifier; transport errors
/// are failures.
///
/// A classifier that must see the end of the stream (`ClassifiedResponse::RequiresEos`, as
/// gRPC's does when the status is not in the response headers) counts the call as a success
/// when the headers arrive: the breaker does not wrap response bodies, so a gRPC status sent
/// only in trailers is not seen. Statuses in the headers (trailers-only responses, which is how
/// servers answer most failed unary calls) are.
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
    /// gRPC responses whose `grpc-status` header is not `Ok`, and transport errors, are
    /// failures (see the type's docs about trailers).
    pub fn grpc() -> Self {
        HttpClassifier::new(GrpcErrorsAsFailures::new())
    }
}

impl<C, B, E> Classify<Response<B>, E> for HttpClassifier<C>
where
    C: ClassifyResponse + Clone,
{
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => match self.inner.clone().classify_response(response) {
                ClassifiedResponse::Ready(Ok(())) => Outcome::Success,
                ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
                ClassifiedResponse::RequiresEos(_) => Outcome::Success,
            },
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use http::StatusCode;

    fn response(status: u16) -> Result<Response<()>, ()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok(r)
    }

    #[test]
    fn default_counts_errors() {
        assert_eq!(
            DefaultClassifier.classify(&Ok::<_, ()>(1)),
            Outcome::Success
        );
        assert_eq!(
            DefaultClassifier.classify(&Err::<(), _>(1)),
            Outcome::Failure
        );
    }

    #[test]
    fn http_server_errors() {
        let c = HttpClassifier::server_errors();
        assert_eq!(c.classify(&response(200)), Outcome::Success);
        assert_eq!(c.classify(&response(404)), Outcome::Success);
        assert_eq!(c.classify(&response(503)), Outcome::Failure);
        assert_eq!(c.classify(&Err::<Response<()>, _>(())), Outcome::Failure);
        let c = HttpClassifier::status_in_range(400..=599);
        assert_eq!(c.classify(&response(404)), Outcome::Failure);
    }

    #[test]
    fn grpc_status_in_headers() {
        let c = HttpClassifier::grpc();
        let mut r = Response::new(());
        r.headers_mut().insert("grpc-status", "14".parse().unwrap());
        assert_eq!(c.classify(&Ok::<_, ()>(r)), Outcome::Failure);
        let mut r = Response::new(());
        r.headers_mut().insert("grpc-status", "0".parse().unwrap());
        assert_eq!(c.classify(&Ok::<_, ()>(r)), Outcome::Success);
    }

    #[test]
    fn closures_can_ignore() {
        let c = |r: &Result<u8, u8>| match r {
            Err(0) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        };
        assert_eq!(c.classify(&Err(0)), Outcome::Ignored);
        assert_eq!(c.classify(&Err(1)), Outcome::Failure);
    }
}
