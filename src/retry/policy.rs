use std::error::Error as StdError;
use std::fmt;
use std::future::{ready, Ready};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use tower::retry::budget::{Budget, TpsBudget};

use crate::balance::Avoid;
use tower::BoxError;

pub(crate) struct Config {
    pub(crate) max_retries: usize,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) grpc: bool,
    /// Shared by every service the layer builds (one `Arc` with the settings, so that a
    /// request's copy of the policy costs one count).
    pub(crate) budget: TpsBudget,
}

/// The retry policy of a [`Retry`](super::Retry) service (a `tower::retry::Policy`): which
/// requests are retried, on which outcomes, within the shared budget; each retry adds
/// the endpoint that failed to the request's [`Avoid`] set.
///
/// Made by a [`RetryLayer`](super::RetryLayer); each request works on a clone of it.
pub struct Policy {
    pub(crate) config: Arc<Config>,
    /// Retries of the current request (the policy is cloned per request).
    pub(crate) retries: usize,
}

impl Clone for Policy {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            retries: self.retries,
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("max_retries", &self.config.max_retries)
            .field("statuses", &self.config.statuses)
            .field("grpc", &self.config.grpc)
            .field("budget", &self.config.budget)
            .finish()
    }
}

/// What kind of request, as far as retrying goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An idempotent method: retried on connection errors and the configured statuses.
    Idempotent,
    /// gRPC: retried only when it got no response.
    Grpc,
    /// Not retried.
    Never,
}

impl Policy {
    fn kind<B>(&self, req: &Request<B>) -> Kind {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            return if self.config.grpc {
                Kind::Grpc
            } else {
                Kind::Never
            };
        }
        match *req.method() {
            Method::GET
            | Method::HEAD
            | Method::OPTIONS
            | Method::PUT
            | Method::DELETE
            | Method::TRACE => Kind::Idempotent,
            _ => Kind::Never,
        }
    }

    /// Whether the request may be retried (it then needs an [`Avoid`] set).
    pub(crate) fn is_retryable<B>(&self, req: &Request<B>) -> bool {
        self.kind(req) != Kind::Never
    }

    /// Counts a request in the budget.
    pub(crate) fn deposit(&self) {
        self.config.budget.deposit();
    }

    fn failed<B, ResB>(&self, req: &Request<B>, result: &Result<Response<ResB>, BoxError>) -> bool {
        match (self.kind(req), result) {
            (Kind::Never, _) => false,
            (Kind::Idempotent, Ok(rsp)) => self.config.statuses.contains(&rsp.status()),
            (Kind::Grpc, Ok(rsp)) => {
                // Trailers-only `UNAVAILABLE` (14): the server sent no response message.
                rsp.headers()
                    .get("grpc-status")
                    .is_some_and(|v| v.as_bytes() == b"14")
            }
            (Kind::Idempotent, Err(e)) => is_connection_error(&**e, false),
            (Kind::Grpc, Err(e)) => is_connection_error(&**e, true),
        }
    }
}

/// Whether `e` (or an error in its chain) is a failure to reach the endpoint: connecting
/// failed, or, unless `connect_only`, the connection failed during the exchange.
fn is_connection_error(e: &(dyn StdError + 'static), connect_only: bool) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if e.is_connect() || !connect_only {
                return true;
            }
        } else if let Some(e) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match e.kind() {
                ConnectionRefused => return true,
                ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
                    if !connect_only =>
                {
                    return true
                }
                _ => {}
            }
        } else if !connect_only && e.downcast_ref::<hyper::Error>().is_some() {
            return true;
        }
        next = e.source();
    }
    false
}

impl<B, ResB> tower::retry::Policy<Request<B>, Response<ResB>, BoxError> for Policy
where
    B: super::RetryBody,
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<Response<ResB>, BoxError>,
    ) -> Option<Self::Future> {
        if !self.failed(req, result) {
            return None;
        }
        let avoid = req.extensions_mut().get_mut::<Avoid>()?;
        let mut retries = self.retries;
        let again = self.again(&mut retries, avoid);
        self.retries = retries;
        again.then(|| ready(()))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        if !self.is_retryable(req) {
            return None;
        }
        copy(req)
    }
}

impl Policy {
    /// Whether a request that failed (see [`Policy::should_retry`]) and was retried
    /// `retries` times so far gets another attempt: retries left, an endpoint to avoid, and
    /// the budget allows it. If so, the endpoint that failed it goes into `avoid` and the
    /// attempt is counted.
    fn again(&self, retries: &mut usize, avoid: &mut Avoid) -> bool {
        if *retries >= self.config.max_retries {
            return false;
        }
        let Some(failed) = avoid.served() else {
            // It never reached the balancer (failed in front of it): nothing to avoid, and
            // no reason to think another try goes better.
            return false;
        };
        if !self.config.budget.withdraw() {
            tracing::debug!("retry budget exhausted; not retrying");
            return false;
        }
        *retries += 1;
        avoid.insert(failed);
        true
    }

    /// Whether `result`, the outcome of `req` (sent with `avoid`, retried `retries` times
    /// so far), is retried.
    pub(crate) fn should_retry<B, ResB>(
        &self,
        retries: &mut usize,
        req: &Request<B>,
        result: &Result<Response<ResB>, BoxError>,
        avoid: &mut Avoid,
    ) -> bool {
        self.failed(req, result) && self.again(retries, avoid)
    }

    /// Whether another retry could follow the `retries`-th.
    pub(crate) fn has_retries_left(&self, retries: usize) -> bool {
        retries < self.config.max_retries
    }
}

/// A copy of `req` to send again, or `None` if its body cannot be sent again.
pub(crate) fn copy<B: super::RetryBody>(req: &Request<B>) -> Option<Request<B>> {
    let mut clone = Request::new(req.body().try_clone()?);
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    *clone.extensions_mut() = req.extensions().clone();
    Some(clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        crate::retry::RetryLayer::builder().build().unwrap().policy
    }

    fn req(method: Method, content_type: Option<&'static str>) -> Request<()> {
        let mut b = Request::builder().method(method);
        if let Some(ct) = content_type {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn idempotent_methods_and_grpc_are_retryable() {
        let p = policy();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(p.is_retryable(&req(m, None)));
        }
        assert!(!p.is_retryable(&req(Method::POST, None)));
        assert!(!p.is_retryable(&req(Method::PATCH, None)));
        assert!(p.is_retryable(&req(Method::POST, Some("application/grpc+proto"))));
        let no_grpc = crate::retry::RetryLayer::builder()
            .grpc(false)
            .build()
            .unwrap()
            .policy;
        assert!(!no_grpc.is_retryable(&req(Method::POST, Some("application/grpc"))));
    }

    #[test]
    fn grpc_is_retried_only_without_a_response() {
        let p = policy();
        let grpc = req(Method::POST, Some("application/grpc"));
        let reset: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        let refused: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(!p.failed::<_, ()>(&grpc, &Err(reset)));
        assert!(p.failed::<_, ()>(&grpc, &Err(refused)));
        let internal = Response::builder()
            .header("grpc-status", "13")
            .body(())
            .unwrap();
        assert!(!p.failed(&grpc, &Ok(internal)));
        let get = req(Method::GET, None);
        let reset: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert!(p.failed::<_, ()>(&get, &Err(reset)));
        let timeout: BoxError = std::io::Error::from(std::io::ErrorKind::TimedOut).into();
        assert!(!p.failed::<_, ()>(&get, &Err(timeout)));
        let bad_gateway = Response::builder().status(502).body(()).unwrap();
        assert!(p.failed(&get, &Ok(bad_gateway)));
        let server_error = Response::builder().status(500).body(()).unwrap();
        assert!(!p.failed(&get, &Ok(server_error)));
    }
}
