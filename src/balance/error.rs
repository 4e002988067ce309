//! Errors returned by [`Balance`](super::Balance).

use std::fmt;
use std::time::Duration;

use crate::balance::BoxError;

/// No endpoint became ready within the configured bound
/// ([`BalanceLayer::no_endpoints_timeout`](super::BalanceLayer::no_endpoints_timeout)).
///
/// Returned by the response future, never by `poll_ready` (which is ready, so that a
/// `Buffer` in front keeps working): past the bound every request fails at once with this
/// error until an endpoint is ready again, so the balancer fails fast instead of hanging.
/// Also returned, with `waited` zero, when the last ready endpoint was removed between
/// `poll_ready` and `call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEndpoints {
    pub(crate) discovered: usize,
    pub(crate) waited: Duration,
}

impl NoEndpoints {
    /// How many endpoints were discovered (none of them ready).
    pub fn discovered(&self) -> usize {
        self.discovered
    }

    /// How long the balancer had been without a ready endpoint.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no ready endpoint for {:?} ({} discovered)",
            self.waited, self.discovered
        )
    }
}

impl std::error::Error for NoEndpoints {}

/// Fewer endpoints than the panic threshold are healthy and the balancer is configured to
/// fail fast ([`PanicMode::FailFast`](super::PanicMode::FailFast)). Returned by the
/// response future; `poll_ready` is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    pub(crate) healthy: usize,
    pub(crate) discovered: usize,
    pub(crate) threshold_percent: u32,
}

impl Panic {
    /// Ready and healthy endpoints.
    pub fn healthy(&self) -> usize {
        self.healthy
    }

    /// Discovered endpoints.
    pub fn discovered(&self) -> usize {
        self.discovered
    }

    /// The configured threshold in percent.
    pub fn threshold_percent(&self) -> u32 {
        self.threshold_percent
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "only {} of {} endpoints healthy, below the panic threshold of {}%",
            self.healthy, self.discovered, self.threshold_percent
        )
    }
}

impl std::error::Error for Panic {}

/// The discovery stream failed.
#[derive(Debug)]
pub struct Discover(pub(crate) BoxError);

impl fmt::Display for Discover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "load balancer discovery error: {}", self.0)
    }
}

impl std::error::Error for Discover {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A strategy name that [`Strategy`](super::Strategy)'s `FromStr` does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStrategy {
    pub(crate) name: String,
}

impl UnknownStrategy {
    /// The offending name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown load balancing strategy {:?} (expected one of {})",
            self.name,
            super::Strategy::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownStrategy {}
