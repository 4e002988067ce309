//! Health-check specs declared with an instance: an HTTP request, a TCP connect, or the gRPC
//! health protocol, with the timing and thresholds that turn results into [`Health`].
//!
//! A [`Check`] travels with its [`Instance`](super::Instance) into the registry, so every
//! process sees the same spec; a checker runs it and writes the outcome back. Specs are built
//! with [`Check::http`], [`Check::tcp`] or [`Check::grpc`] and validated at
//! [`build`](CheckBuilder::build); deserializing validates too.
//!
//! [`Health`]: super::Health

mod builder;
mod last;
#[cfg(test)]
mod tests;

pub use self::builder::CheckBuilder;
pub use self::last::LastCheck;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Field, InvalidInput};

/// Longest check interval (and unhealthy interval): 24 hours.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest `healthy_threshold` or `unhealthy_threshold`.
pub const MAX_CHECK_THRESHOLD: u32 = 1000;
/// Longest HTTP check path (with its query), in bytes.
pub const MAX_CHECK_PATH_LEN: usize = 1024;
/// Longest body substring an HTTP check may look for, in bytes.
pub const MAX_CHECK_BODY_LEN: usize = 1024;
/// Most bytes of a response body a checker reads when looking for the body substring: a
/// substring past them is not found.
pub const CHECK_BODY_READ_LIMIT: usize = 64 * 1024;
/// Most status ranges an HTTP check may accept.
pub const MAX_CHECK_STATUS_RANGES: usize = 16;
/// Longest service name of a gRPC health check, in bytes.
pub const MAX_GRPC_SERVICE_LEN: usize = 256;
/// Longest check output kept with an instance, in bytes; see [`LastCheck::new`].
pub const MAX_CHECK_OUTPUT: usize = 4096;

/// A validated health-check spec: what to probe ([`CheckKind`]), on which port, how often, how
/// long to wait, and how many results in a row change the instance's health.
///
/// Timing and thresholds follow Envoy's health checking:
///
/// - every [`interval`](Check::interval) (plus a random wait up to the
///   [`jitter`](Check::jitter)) the checker probes the instance, giving up after the
///   [`timeout`](Check::timeout), which counts as a failure;
/// - [`healthy_threshold`](Check::healthy_threshold) successes in a row turn it `Passing`,
///   [`unhealthy_threshold`](Check::unhealthy_threshold) failures in a row turn it `Critical`;
/// - while it is `Critical`, probes come every
///   [`unhealthy_interval`](Check::unhealthy_interval) instead.
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::instance::{Check, CheckKind, Instance};
///
/// let check = Check::http("/healthz")
///     .statuses([200..=299, 304..=304])
///     .body("ok")
///     .interval(Duration::from_secs(5))
///     .timeout(Duration::from_secs(1))
///     .build()?;
/// let instance = Instance::builder("orders", "orders-1").port(8080).check(check).build()?;
/// let CheckKind::Http(http) = instance.check().unwrap().kind() else { unreachable!() };
/// assert!(http.accepts(304) && !http.accepts(503));
///
/// let err = Check::tcp().interval(Duration::from_secs(1)).timeout(Duration::from_secs(2)).build();
/// assert_eq!(
///     err.unwrap_err().to_string(),
///     "invalid check timeout 2s: must be less than the check interval"
/// );
/// # Ok::<(), tower_mesh::instance::InvalidInput>(())
/// ```
///
/// # Serialized form
///
/// A flat object, durations in milliseconds like the rest of the crate (`ttl_ms`), every value
/// written out (defaults are resolved at build, so a stored spec does not change meaning when
/// a default changes):
///
/// ```json
/// {"kind": "http", "method": "GET", "path": "/healthz", "statuses": ["200-299"],
///  "interval_ms": 10000, "jitter_ms": 1000, "timeout_ms": 2000, "unhealthy_interval_ms": 10000,
///  "healthy_threshold": 2, "unhealthy_threshold": 3}
/// ```
///
/// `kind` is `http`, `tcp` or `grpc`; `method`, `path`, `statuses` and `body` belong to HTTP
/// checks, `service` to gRPC ones, and `port` (the instance's port when absent) to any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CheckBuilder", into = "CheckBuilder")]
pub struct Check {
    kind: CheckKind,
    port: Option<u16>,
    interval: Duration,
    jitter: Duration,
    timeout: Duration,
    unhealthy_interval: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl Check {
    /// What the check probes.
    pub fn kind(&self) -> &CheckKind {
        &self.kind
    }

    /// The port to probe, when it is not the instance's own (an admin port, say).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The time between probes while the instance is not `Critical`.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The most a checker adds, at random, to each wait between probes, so that checks of many
    /// instances spread out.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// How long a probe may take; a slower one is cut and counts as a failure. Always less than
    /// both intervals.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The time between probes while the instance is `Critical` (Envoy's `unhealthy_interval`).
    pub fn unhealthy_interval(&self) -> Duration {
        self.unhealthy_interval
    }

    /// Successes in a row that turn the instance `Passing`.
    pub fn healthy_threshold(&self) -> u32 {
        self.healthy_threshold
    }

    /// Failures in a row that turn the instance `Critical`.
    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold
    }

    /// The wait before the next probe: [`unhealthy_interval`](Check::unhealthy_interval) while
    /// `critical`, [`interval`](Check::interval) otherwise (jitter not included).
    pub fn interval_for(&self, critical: bool) -> Duration {
        if critical {
            self.unhealthy_interval
        } else {
            self.interval
        }
    }
}

/// What a [`Check`] probes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckKind {
    /// An HTTP request; passes on an accepted status (and body substring, if any).
    Http(HttpCheck),
    /// A TCP connect; passes when the connection is established.
    Tcp,
    /// The gRPC health protocol: `grpc.health.v1.Health/Check`; passes on `SERVING`.
    Grpc(GrpcCheck),
}

impl CheckKind {
    /// The kind as serialized: `http`, `tcp` or `grpc`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Grpc(_) => "grpc",
        }
    }
}

/// The HTTP request of a [`CheckKind::Http`] check, made with the instance's scheme (`https`
/// for an `https` instance, `http` otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    method: http::Method,
    path: http::uri::PathAndQuery,
    statuses: Vec<StatusRange>,
    body: Option<String>,
}

impl HttpCheck {
    /// The request method (`GET` by default).
    pub fn method(&self) -> &http::Method {
        &self.method
    }

    /// The request path, with its query if any; starts with `/`.
    pub fn path(&self) -> &http::uri::PathAndQuery {
        &self.path
    }

    /// The accepted response statuses (`200-299` by default).
    pub fn statuses(&self) -> &[StatusRange] {
        &self.statuses
    }

    /// A substring the response body must contain to pass, looked for in at most the first
    /// [`CHECK_BODY_READ_LIMIT`] bytes.
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }

    /// Whether `status` is one of the accepted statuses.
    pub fn accepts(&self, status: u16) -> bool {
        self.statuses.iter().any(|r| r.contains(status))
    }
}

/// The service of a [`CheckKind::Grpc`] check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCheck {
    service: String,
}

impl GrpcCheck {
    /// The service name sent in the `HealthCheckRequest`; empty asks about the server as a
    /// whole (the protocol's convention).
    pub fn service(&self) -> &str {
        &self.service
    }
}

/// An inclusive range of HTTP statuses an HTTP check accepts, within `100..=599`.
///
/// Written `200-299`, or `204` for a single status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatusRange {
    lo: u16,
    hi: u16,
}

impl StatusRange {
    /// The first accepted status.
    pub fn lo(self) -> u16 {
        self.lo
    }

    /// The last accepted status.
    pub fn hi(self) -> u16 {
        self.hi
    }

    /// Whether `status` is in the range.
    pub fn contains(self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }

    /// Checks the bounds: within `100..=599`, `lo <= hi`.
    fn validate(self) -> Result<Self, InvalidInput> {
        if !(100..=599).contains(&self.lo) || !(100..=599).contains(&self.hi) {
            return Err(InvalidInput::new(
                Field::CheckStatus,
                self,
                "statuses must be in 100..=599",
            ));
        }
        if self.lo > self.hi {
            return Err(InvalidInput::new(
                Field::CheckStatus,
                self,
                "the first status must not be above the last",
            ));
        }
        Ok(self)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for StatusRange {
    type Err = InvalidInput;
    /// Parses `200-299` or `204`, and checks the bounds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidInput::new(
                Field::CheckStatus,
                format_args!("{s:?}"),
                "must be a status like 204 or a range like 200-299",
            )
        };
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let num = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse::<u16>().map_err(|_| bad())
        };
        StatusRange {
            lo: num(lo)?,
            hi: num(hi)?,
        }
        .validate()
    }
}

impl TryFrom<String> for StatusRange {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<StatusRange> for String {
    fn from(r: StatusRange) -> Self {
        r.to_string()
    }
}
