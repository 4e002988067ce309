//! Which failures are *gateway* failures, for the consecutive gateway failure rule.
//!
//! Envoy counts a response 502, 503 or 504, and a failure to reach the endpoint at all
//! (connect failure, timeout, reset), as a gateway failure. The classifier (any
//! [`Classify`](crate::breaker::Classify)) decides whether a call failed; a
//! [`ClassifyGateway`] then says whether that failure was a gateway failure. It is asked only
//! about calls the classifier counts as failures.

use http::{Response, StatusCode};

/// Says whether a failed call was a gateway failure.
///
/// Implemented by [`ErrorsAsGateway`] (the default: every error from the endpoint service,
/// such as hyper-util's connect errors), [`HttpGateway`] (also 502, 503 and 504) and any
/// closure `Fn(&Result<Res, E>) -> bool`.
pub trait ClassifyGateway<Res, E> {
    /// Whether `result`, which the classifier counted as a failure, is a gateway failure.
    fn is_gateway_failure(&self, result: &Result<Res, E>) -> bool;
}

impl<F, Res, E> ClassifyGateway<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> bool,
{
    #[inline]
    fn is_gateway_failure(&self, result: &Result<Res, E>) -> bool {
        self(result)
    }
}

/// Every error from the endpoint service is a gateway failure (the endpoint could not be
/// reached or did not answer); no response is. The default, for any response type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAsGateway;

impl<Res, E> ClassifyGateway<Res, E> for ErrorsAsGateway {
    #[inline]
    fn is_gateway_failure(&self, result: &Result<Res, E>) -> bool {
        result.is_err()
    }
}

/// HTTP: every error from the endpoint service, and responses 502 Bad Gateway, 503 Service
/// Unavailable and 504 Gateway Timeout, are gateway failures (Envoy's definition).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpGateway;

impl<B, E> ClassifyGateway<Response<B>, E> for HttpGateway {
    #[inline]
    fn is_gateway_failure(&self, result: &Result<Response<B>, E>) -> bool {
        match result {
            Ok(response) => matches!(
                response.status(),
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            Err(_) => true,
        }
    }
}
