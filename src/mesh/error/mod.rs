//! The mesh's one error type.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tower::BoxError;

use crate::balance::error::{Discover, NoEndpoints, Panic};
use crate::breaker::error::Open;

/// Why a call through the mesh failed: match on it (or use the `is_*` helpers and
/// [`status`](Error::status)) instead of downcasting.
///
/// Each variant names the service called. [`Error::from_box`] classifies any error that a
/// stack of the crate's parts returns (through `Buffer`, `BoxError`s and the crate's
/// wrappers). The error is `Send + Sync + 'static`, so it crosses spawned tasks and generated
/// clients' futures.
///
/// | variant | [`status`](Error::status) |
/// | --- | --- |
/// | [`NoEndpoints`](Error::NoEndpoints) | 503 Service Unavailable |
/// | [`CircuitOpen`](Error::CircuitOpen) | 503 Service Unavailable, with `Retry-After` from [`retry_after`](Error::retry_after) when known |
/// | [`Timeout`](Error::Timeout) | 504 Gateway Timeout |
/// | [`Discovery`](Error::Discovery) | 502 Bad Gateway |
/// | [`Upstream`](Error::Upstream) | 502 Bad Gateway |
/// | [`Request`](Error::Request) | 400 Bad Request |
///
/// ```
/// use http::StatusCode;
/// use tower_mesh::mesh::Error;
///
/// let err = Error::from_box("orders", "connection reset".into());
/// assert!(err.is_upstream());
/// assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
/// assert_eq!(err.to_string(), "call to service \"orders\" failed");
/// assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "connection reset");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No endpoint of the service was ready: none discovered, all ejected or open, or fewer
    /// healthy than the balancer's panic threshold. HTTP 503.
    #[error("no endpoint of service {service:?} is available")]
    NoEndpoints {
        /// The service called.
        service: Arc<str>,
    },
    /// The service's circuit breaker (or, with no other endpoint left, an endpoint's) is
    /// open. HTTP 503, with `Retry-After` when `retry_after` is known.
    #[error("circuit breaker of service {service:?} is open")]
    CircuitOpen {
        /// The service called.
        service: Arc<str>,
        /// How long until the breaker may half-open, measured when the call was rejected;
        /// `None` when forced open or half-open with every probe permit taken.
        retry_after: Option<Duration>,
    },
    /// The call did not complete within the service's timeout. HTTP 504.
    #[error("call to service {service:?} timed out")]
    Timeout {
        /// The service called.
        service: Arc<str>,
        /// The timeout, when known (see [`Error::with_timeout`]).
        after: Option<Duration>,
    },
    /// Discovering the service's endpoints failed (the registry's error is the source).
    /// HTTP 502.
    #[error("discovery of service {service:?} failed")]
    Discovery {
        /// The service called.
        service: Arc<str>,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// The upstream call failed (connection, protocol or the inner service's own error,
    /// kept as the source). HTTP 502.
    #[error("call to service {service:?} failed")]
    Upstream {
        /// The service called.
        service: Arc<str>,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// The request could not be sent as given: an invalid service name, a request body that
    /// could not be read or is over the limit (the source says which). Nothing was sent.
    /// HTTP 400.
    #[error("request to service {service:?} could not be sent")]
    Request {
        /// The service called.
        service: Arc<str>,
        /// What is wrong with the request.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Classifies `error`, returned by a call to `service`, by the crate's errors found in it
    /// or its source chain: a breaker's [`Open`] is [`CircuitOpen`](Error::CircuitOpen) (with
    /// its half-open time), the balancer's [`NoEndpoints`] and [`Panic`] are
    /// [`NoEndpoints`](Error::NoEndpoints), tower's
    /// [`Elapsed`](tower::timeout::error::Elapsed) is [`Timeout`](Error::Timeout), the
    /// balancer's [`Discover`] is [`Discovery`](Error::Discovery) (its source the discovery
    /// stream's error), and anything else is [`Upstream`](Error::Upstream) with `error` as
    /// its source. An `Error` already is returned as it is.
    pub fn from_box(service: impl Into<Arc<str>>, error: BoxError) -> Self {
        let error = match error.downcast::<Error>() {
            Ok(error) => return *error,
            Err(error) => error,
        };
        let service = service.into();
        if let Some(open) = Open::find(&*error) {
            return Error::CircuitOpen {
                service,
                retry_after: open.retry_after(),
            };
        }
        if NoEndpoints::find(&*error).is_some() || Panic::find(&*error).is_some() {
            return Error::NoEndpoints { service };
        }
        if crate::chain::find::<tower::timeout::error::Elapsed>(&*error).is_some() {
            return Error::Timeout {
                service,
                after: None,
            };
        }
        if Discover::find(&*error).is_some() {
            // Owned, the stream's error is the source; shared (behind `Buffer`), the whole
            // chain is, which still reaches it.
            let source = match error.downcast::<Discover>() {
                Ok(discover) => discover.0,
                Err(error) => error,
            };
            return Error::Discovery { service, source };
        }
        Error::Upstream {
            service,
            source: error,
        }
    }

    /// The same error with the timeout that elapsed recorded in a
    /// [`Timeout`](Error::Timeout) (other variants are returned unchanged).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        match self {
            Error::Timeout { service, .. } => Error::Timeout {
                service,
                after: Some(timeout),
            },
            other => other,
        }
    }

    /// The service called.
    pub fn service(&self) -> &str {
        match self {
            Error::NoEndpoints { service }
            | Error::CircuitOpen { service, .. }
            | Error::Timeout { service, .. }
            | Error::Discovery { service, .. }
            | Error::Upstream { service, .. }
            | Error::Request { service, .. } => service,
        }
    }

    /// Whether no endpoint was available.
    pub fn is_no_endpoints(&self) -> bool {
        matches!(self, Error::NoEndpoints { .. })
    }

    /// Whether a circuit breaker rejected the call.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Error::CircuitOpen { .. })
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Whether discovery failed.
    pub fn is_discovery(&self) -> bool {
        matches!(self, Error::Discovery { .. })
    }

    /// Whether the upstream call failed.
    pub fn is_upstream(&self) -> bool {
        matches!(self, Error::Upstream { .. })
    }

    /// Whether the request could not be sent as given.
    pub fn is_request(&self) -> bool {
        matches!(self, Error::Request { .. })
    }

    /// The HTTP status a server answers with when this call failed: 503 Service Unavailable
    /// for no endpoints and an open circuit (send [`retry_after`](Self::retry_after) as
    /// `Retry-After`, rounded up to whole seconds), 504 Gateway Timeout for a timeout, 502
    /// Bad Gateway for a discovery or upstream failure, 400 Bad Request for a request that
    /// could not be sent.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoEndpoints { .. } | Error::CircuitOpen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Discovery { .. } | Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Error::Request { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// How long until an open circuit may half-open, when known; `None` for every other
    /// variant.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::CircuitOpen { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
