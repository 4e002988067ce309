//! [`CheckBuilder`]: every knob of a [`Check`], checked at `build`; also the serialized form.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Check, CheckKind, GrpcCheck, HttpCheck, StatusRange, MAX_CHECK_BODY_LEN, MAX_CHECK_INTERVAL,
    MAX_CHECK_PATH_LEN, MAX_CHECK_STATUS_RANGES, MAX_CHECK_THRESHOLD, MAX_GRPC_SERVICE_LEN,
};
use crate::instance::{Field, InvalidInput};

/// The interval when none is given.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The timeout when none is given, unless half the interval is shorter.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Http,
    Tcp,
    Grpc,
}

impl Check {
    /// Starts an HTTP check of `path` (with its query, if any). Defaults: `GET`, statuses
    /// `200-299`, no body substring, and the timing of [`CheckBuilder`].
    pub fn http(path: impl Into<String>) -> CheckBuilder {
        CheckBuilder {
            path: Some(path.into()),
            ..CheckBuilder::new(Kind::Http)
        }
    }

    /// Starts a TCP connect check.
    pub fn tcp() -> CheckBuilder {
        CheckBuilder::new(Kind::Tcp)
    }

    /// Starts a gRPC health check (`grpc.health.v1.Health/Check`) of `service`; `""` asks
    /// about the whole server.
    pub fn grpc(service: impl Into<String>) -> CheckBuilder {
        CheckBuilder {
            service: Some(service.into()),
            ..CheckBuilder::new(Kind::Grpc)
        }
    }

    /// A builder holding this check's values, to derive a changed copy.
    pub fn to_builder(&self) -> CheckBuilder {
        let mut b = CheckBuilder::new(match self.kind {
            CheckKind::Http(_) => Kind::Http,
            CheckKind::Tcp => Kind::Tcp,
            CheckKind::Grpc(_) => Kind::Grpc,
        });
        match &self.kind {
            CheckKind::Http(h) => {
                b.method = Some(h.method.as_str().to_owned());
                b.path = Some(h.path.as_str().to_owned());
                b.statuses = Some(h.statuses.clone());
                b.body = h.body.clone();
            }
            CheckKind::Tcp => {}
            CheckKind::Grpc(g) => b.service = Some(g.service.clone()),
        }
        b.port = self.port.map(u32::from);
        b.interval = self.interval;
        b.jitter = Some(self.jitter);
        b.timeout = Some(self.timeout);
        b.unhealthy_interval = Some(self.unhealthy_interval);
        b.healthy_threshold = self.healthy_threshold;
        b.unhealthy_threshold = self.unhealthy_threshold;
        b
    }
}

/// Builds a validated [`Check`]; start with [`Check::http`], [`Check::tcp`] or
/// [`Check::grpc`].
///
/// Defaults, safe in production: interval 10 s, unhealthy interval equal to the interval,
/// timeout 2 s (or half the shorter interval if that is less), jitter a tenth of the shorter
/// interval, healthy threshold 2, unhealthy threshold 3 (Envoy's usual settings). Durations are
/// kept to the millisecond: a finer one is refused rather than rounded.
///
/// Values are checked at [`build`](CheckBuilder::build), which names the first bad field
/// and its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckBuilder {
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    statuses: Option<Vec<StatusRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u32>,
    #[serde(rename = "interval_ms", with = "ms", default = "default_interval")]
    interval: Duration,
    #[serde(rename = "jitter_ms", with = "opt_ms", default)]
    jitter: Option<Duration>,
    #[serde(rename = "timeout_ms", with = "opt_ms", default)]
    timeout: Option<Duration>,
    #[serde(rename = "unhealthy_interval_ms", with = "opt_ms", default)]
    unhealthy_interval: Option<Duration>,
    #[serde(default = "default_healthy")]
    healthy_threshold: u32,
    #[serde(default = "default_unhealthy")]
    unhealthy_threshold: u32,
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

fn default_healthy() -> u32 {
    DEFAULT_HEALTHY_THRESHOLD
}

fn default_unhealthy() -> u32 {
    DEFAULT_UNHEALTHY_THRESHOLD
}

impl CheckBuilder {
    fn new(kind: Kind) -> Self {
        CheckBuilder {
            kind,
            method: None,
            path: None,
            statuses: None,
            body: None,
            service: None,
            port: None,
            interval: DEFAULT_INTERVAL,
            jitter: None,
            timeout: None,
            unhealthy_interval: None,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }

    /// Sets the HTTP method (HTTP checks only; `GET` by default).
    pub fn method(mut self, method: http::Method) -> Self {
        self.method = Some(method.as_str().to_owned());
        self
    }

    /// Replaces the accepted statuses (HTTP checks only; `200..=299` by default): 1 to 16
    /// ranges within `100..=599`.
    pub fn statuses(mut self, ranges: impl IntoIterator<Item = RangeInclusive<u16>>) -> Self {
        self.statuses = Some(
            ranges
                .into_iter()
                .map(|r| StatusRange {
                    lo: *r.start(),
                    hi: *r.end(),
                })
                .collect(),
        );
        self
    }

    /// A substring the response body must contain (HTTP checks only): 1 to 1024 bytes, looked
    /// for in at most the first [`CHECK_BODY_READ_LIMIT`](super::CHECK_BODY_READ_LIMIT) bytes.
    pub fn body(mut self, substring: impl Into<String>) -> Self {
        self.body = Some(substring.into());
        self
    }

    /// Probes this port instead of the instance's own (an admin or health port). Takes a `u32`
    /// so that out-of-range values are reported rather than truncated.
    pub fn port(mut self, port: u32) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the time between probes: 2 ms ..= 24 h.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the most added at random to each wait: less than both intervals (zero turns
    /// jitter off).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Sets how long a probe may take: more than zero, less than both intervals.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the time between probes while the instance is `Critical`: 2 ms ..= 24 h.
    pub fn unhealthy_interval(mut self, interval: Duration) -> Self {
        self.unhealthy_interval = Some(interval);
        self
    }

    /// Sets the successes in a row that turn the instance `Passing`: 1 ..= 1000.
    pub fn healthy_threshold(mut self, n: u32) -> Self {
        self.healthy_threshold = n;
        self
    }

    /// Sets the failures in a row that turn the instance `Critical`: 1 ..= 1000.
    pub fn unhealthy_threshold(mut self, n: u32) -> Self {
        self.unhealthy_threshold = n;
        self
    }

    /// Validates every value and builds the check. A bad value is an [`InvalidInput`] naming
    /// the field (`check interval`, `check path`, ...) and the value.
    pub fn build(self) -> Result<Check, InvalidInput> {
        let kind = self.kind()?;
        let port = match self.port {
            None => None,
            Some(p @ 1..=65535) => Some(p as u16),
            Some(p) => {
                return Err(InvalidInput::new(
                    Field::CheckPort,
                    p,
                    "must be in 1..=65535",
                ))
            }
        };
        let interval = interval(Field::CheckInterval, self.interval)?;
        let unhealthy_interval = interval_or(
            Field::CheckUnhealthyInterval,
            self.unhealthy_interval,
            interval,
        )?;
        let shortest = interval.min(unhealthy_interval);
        let timeout = match self.timeout {
            Some(t) => t,
            None => whole_ms(DEFAULT_TIMEOUT.min(shortest / 2)),
        };
        check_ms(Field::CheckTimeout, timeout)?;
        if timeout.is_zero() {
            return Err(dur(Field::CheckTimeout, timeout, "must be more than zero"));
        }
        if timeout >= interval {
            return Err(dur(
                Field::CheckTimeout,
                timeout,
                "must be less than the check interval",
            ));
        }
        if timeout >= unhealthy_interval {
            return Err(dur(
                Field::CheckTimeout,
                timeout,
                "must be less than the check unhealthy_interval",
            ));
        }
        let jitter = self.jitter.unwrap_or_else(|| whole_ms(shortest / 10));
        check_ms(Field::CheckJitter, jitter)?;
        if jitter >= shortest {
            return Err(dur(
                Field::CheckJitter,
                jitter,
                "must be less than the check interval and unhealthy_interval",
            ));
        }
        let healthy_threshold = threshold(Field::CheckHealthyThreshold, self.healthy_threshold)?;
        let unhealthy_threshold =
            threshold(Field::CheckUnhealthyThreshold, self.unhealthy_threshold)?;
        Ok(Check {
            kind,
            port,
            interval,
            jitter,
            timeout,
            unhealthy_interval,
            healthy_threshold,
            unhealthy_threshold,
        })
    }

    /// The kind with its own fields checked, refusing fields of another kind.
    fn kind(&self) -> Result<CheckKind, InvalidInput> {
        let only = |field: Field, value: &Option<String>, reason: &'static str| match value {
            Some(v) => Err(InvalidInput::new(field, v, reason)),
            None => Ok(()),
        };
        if self.kind != Kind::Http {
            only(
                Field::CheckMethod,
                &self.method,
                "only an http check has a method",
            )?;
            only(
                Field::CheckPath,
                &self.path,
                "only an http check has a path",
            )?;
            only(
                Field::CheckBody,
                &self.body,
                "only an http check has a body substring",
            )?;
            if let Some(statuses) = &self.statuses {
                return Err(InvalidInput::new(
                    Field::CheckStatus,
                    ranges(statuses),
                    "only an http check has statuses",
                ));
            }
        }
        if self.kind != Kind::Grpc {
            only(
                Field::CheckService,
                &self.service,
                "only a grpc check has a service",
            )?;
        }
        Ok(match self.kind {
            Kind::Tcp => CheckKind::Tcp,
            Kind::Grpc => CheckKind::Grpc(GrpcCheck {
                service: grpc_service(self.service.as_deref().unwrap_or_default())?,
            }),
            Kind::Http => CheckKind::Http(HttpCheck {
                method: method(self.method.as_deref().unwrap_or("GET"))?,
                path: path(self.path.as_deref())?,
                statuses: statuses(self.statuses.as_deref())?,
                body: self.body.as_deref().map(body).transpose()?,
            }),
        })
    }
}

impl TryFrom<CheckBuilder> for Check {
    type Error = InvalidInput;
    fn try_from(b: CheckBuilder) -> Result<Self, Self::Error> {
        b.build()
    }
}

impl From<Check> for CheckBuilder {
    fn from(c: Check) -> Self {
        c.to_builder()
    }
}

fn dur(field: Field, d: Duration, reason: &'static str) -> InvalidInput {
    InvalidInput::new(field, format_args!("{d:?}"), reason)
}

fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn check_ms(field: Field, d: Duration) -> Result<(), InvalidInput> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(dur(field, d, "must be a whole number of milliseconds"));
    }
    Ok(())
}

fn interval(field: Field, d: Duration) -> Result<Duration, InvalidInput> {
    check_ms(field, d)?;
    if d.is_zero() {
        return Err(dur(field, d, "must be more than zero"));
    }
    if d < Duration::from_millis(2) {
        return Err(dur(
            field,
            d,
            "must be at least 2ms, to leave room for a timeout of at least 1ms",
        ));
    }
    if d > MAX_CHECK_INTERVAL {
        return Err(dur(field, d, "must be at most 24h"));
    }
    Ok(d)
}

fn interval_or(field: Field, d: Option<Duration>, or: Duration) -> Result<Duration, InvalidInput> {
    match d {
        Some(d) => interval(field, d),
        None => Ok(or),
    }
}

fn threshold(field: Field, n: u32) -> Result<u32, InvalidInput> {
    if !(1..=MAX_CHECK_THRESHOLD).contains(&n) {
        return Err(InvalidInput::new(field, n, "must be in 1..=1000"));
    }
    Ok(n)
}

fn method(m: &str) -> Result<http::Method, InvalidInput> {
    let bad = |reason| InvalidInput::new(Field::CheckMethod, m, reason);
    if m.is_empty() || m.len() > 32 {
        return Err(bad("must be 1..=32 bytes"));
    }
    let method =
        http::Method::from_bytes(m.as_bytes()).map_err(|_| bad("is not a valid HTTP method"))?;
    if method == http::Method::CONNECT {
        return Err(bad("must not be CONNECT"));
    }
    Ok(method)
}

fn path(p: Option<&str>) -> Result<http::uri::PathAndQuery, InvalidInput> {
    let Some(p) = p else {
        return Err(InvalidInput::new(
            Field::CheckPath,
            "",
            "is required for an http check",
        ));
    };
    let bad = |reason| InvalidInput::new(Field::CheckPath, p, reason);
    if !p.starts_with('/') {
        return Err(bad("must start with '/'"));
    }
    if p.len() > MAX_CHECK_PATH_LEN {
        return Err(bad("must be at most 1024 bytes"));
    }
    if p.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    p.parse().map_err(|_| {
        bad("is not a valid path and query (spaces and control characters are not allowed)")
    })
}

fn statuses(given: Option<&[StatusRange]>) -> Result<Vec<StatusRange>, InvalidInput> {
    let Some(given) = given else {
        return Ok(vec![StatusRange { lo: 200, hi: 299 }]);
    };
    if given.is_empty() {
        return Err(InvalidInput::new(
            Field::CheckStatus,
            "none",
            "must accept at least one status range",
        ));
    }
    if given.len() > MAX_CHECK_STATUS_RANGES {
        return Err(InvalidInput::new(
            Field::CheckStatus,
            format_args!("{} ranges", given.len()),
            "must have at most 16 ranges",
        ));
    }
    given.iter().map(|r| r.validate()).collect()
}

fn ranges(statuses: &[StatusRange]) -> String {
    let texts: Vec<_> = statuses.iter().map(ToString::to_string).collect();
    texts.join(",")
}

fn body(b: &str) -> Result<String, InvalidInput> {
    if b.is_empty() {
        return Err(InvalidInput::new(Field::CheckBody, b, "must not be empty"));
    }
    if b.len() > MAX_CHECK_BODY_LEN {
        return Err(InvalidInput::new(
            Field::CheckBody,
            b,
            "must be at most 1024 bytes",
        ));
    }
    Ok(b.to_owned())
}

fn grpc_service(s: &str) -> Result<String, InvalidInput> {
    if s.len() > MAX_GRPC_SERVICE_LEN {
        return Err(InvalidInput::new(
            Field::CheckService,
            s,
            "must be at most 256 bytes",
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidInput::new(
            Field::CheckService,
            s,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(s.to_owned())
}

/// A duration as whole milliseconds.
mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An optional duration as whole milliseconds.
mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}
