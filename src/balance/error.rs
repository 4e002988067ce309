//! Errors returned by [`Balance`](super::Balance) and by the balancer's builders.
//!
//! The request errors ([`NoEndpoints`], [`Panic`], [`Discover`]) reach callers boxed, and
//! often wrapped again by the layers above (`Buffer`, `BoxError`, tonic's `Status` source):
//! [`NoEndpoints::find`] and [`Panic::find`] look through that wrapping, as
//! `breaker::error::Open::find` does for an open breaker (feature `breaker`).
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::balance::{error::NoEndpoints, BalanceLayer, RoundRobin};
//!
//! # async fn example<D>(discover: D) -> Result<(), tower_mesh::balance::error::BuildError>
//! # where
//! #     D: tower::discover::Discover<Key = u32> + Unpin + Send + 'static,
//! #     D::Service: tower::Service<(), Response = ()> + tower_mesh::balance::Weight + Send,
//! #     <D::Service as tower::Service<()>>::Error: Into<tower::BoxError>,
//! #     <D::Service as tower::Service<()>>::Future: Send,
//! #     D::Error: Into<tower::BoxError>,
//! # {
//! use tower::ServiceExt;
//! let balance = BalanceLayer::builder(RoundRobin::new())
//!     .no_endpoints_timeout(Duration::from_millis(500))
//!     .build()?;
//! let client = ServiceBuilder::new().buffer(64).layer(balance).service(discover);
//! match client.oneshot(()).await {
//!     Err(e) if NoEndpoints::find(&*e).is_some() => { /* 503, retry later */ }
//!     _ => {}
//! }
//! # Ok(())
//! # }
//! ```

use std::error::Error as StdError;
use std::time::Duration;

use crate::balance::BoxError;

use crate::chain::find;

/// No endpoint became ready within the configured bound
/// ([`Builder::no_endpoints_timeout`](super::Builder::no_endpoints_timeout)).
///
/// Returned by the response future, never by `poll_ready` (which is ready, so that a
/// `Buffer` in front keeps working): past the bound every request fails at once with this
/// error until an endpoint is ready again, so the balancer fails fast instead of hanging.
/// Also returned, with `waited` zero, when the last ready endpoint was removed between
/// `poll_ready` and `call`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no ready endpoint for {waited:?} ({discovered} discovered)")]
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

    /// Finds a `NoEndpoints` in `error` or its [`source`](StdError::source) chain: through
    /// `Box<dyn Error>`, `Buffer`'s `ServiceError`, any error that keeps it as its source,
    /// and the crate's transparent wrappers (a service-level breaker's `Error::Inner`).
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a NoEndpoints> {
        find(error)
    }
}

/// Fewer endpoints than the panic threshold are healthy and the balancer is configured to
/// fail fast ([`PanicMode::FailFast`](super::PanicMode::FailFast)). Returned by the
/// response future; `poll_ready` is ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "only {healthy} of {discovered} endpoints healthy, below the panic threshold of {threshold_percent}%"
)]
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

    /// Finds a `Panic` in `error` or its [`source`](StdError::source) chain (see
    /// [`NoEndpoints::find`]).
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Panic> {
        find(error)
    }
}

/// The discovery stream failed. The stream's error is the [`source`](StdError::source);
/// this error's own message does not repeat it.
#[derive(Debug, thiserror::Error)]
#[error("load balancer discovery failed")]
pub struct Discover(#[source] pub(crate) BoxError);

impl Discover {
    /// Finds a `Discover` in `error` or its [`source`](StdError::source) chain (see
    /// [`NoEndpoints::find`]).
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Discover> {
        find(error)
    }
}

/// A strategy name that [`Strategy`](super::Strategy)'s `FromStr` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown load balancing strategy {name:?} (expected one of {})",
    super::Strategy::NAMES.join(", ")
)]
pub struct UnknownStrategy {
    pub(crate) name: String,
}

impl UnknownStrategy {
    /// The offending name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A balancer setting that [`Builder::build`](super::Builder::build) (or a strategy's
/// setter) refuses: the setting's name, the value given and what is accepted.
pub type BuildError = crate::setting::InvalidSetting;

/// The balancer's component name in [`BuildError`]'s message.
pub(crate) const COMPONENT: &str = "load balancer";
