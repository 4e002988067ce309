//! The policy of each part of the stack, and the overrides of each.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{InvalidValue, PolicyError};
use crate::balance::{AnyPick, Strategy};
use crate::breaker::{self, Window};
use crate::retry::RetryLayer;

/// Defines an override struct of `$base`: every field an `Option`, `None` keeping the base's
/// value, `Some` replacing it.
macro_rules! overrides {
    (
        $(#[$meta:meta])*
        $name:ident for $base:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// Replaces the fields of `base` that this override names.
            pub fn apply_to(&self, base: &mut $base) {
                $(
                    if let Some(value) = &self.$field {
                        base.$field = value.clone().into();
                    }
                )*
            }
        }
    };
}

mod outlier;

pub use self::outlier::{OutlierOverride, OutlierPolicy};

/// The load-balancing strategy of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyPolicy {
    /// The strategy's name, one of [`Strategy::NAMES`] (default `"p2c"`, peak EWMA).
    pub name: String,
    /// The request header whose value the consistent hashers (`ring_hash`, `maglev`) hash:
    /// required by them, refused by the other strategies (default none).
    pub hash_header: Option<String>,
}

impl Default for StrategyPolicy {
    fn default() -> Self {
        Self {
            name: Strategy::P2c.name().to_owned(),
            hash_header: None,
        }
    }
}

/// The fields of a [`StrategyPolicy`] that a service replaces.
///
/// The hash header belongs to the strategy: an override that names a strategy replaces the
/// header too (with its own, or none), so a service can move from the defaults' `ring_hash`
/// to `p2c` without inheriting a header `p2c` refuses. An override naming only the header
/// keeps the defaults' strategy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyOverride {
    /// Replaces [`StrategyPolicy::name`], and the hash header with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replaces [`StrategyPolicy::hash_header`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_header: Option<String>,
}

impl StrategyOverride {
    /// Replaces the fields of `base` that this override names (see [`StrategyOverride`]).
    pub fn apply_to(&self, base: &mut StrategyPolicy) {
        if let Some(name) = &self.name {
            base.name = name.clone();
            base.hash_header = self.hash_header.clone();
        } else if let Some(header) = &self.hash_header {
            base.hash_header = Some(header.clone());
        }
    }
}

impl StrategyPolicy {
    /// The strategy named, or the error naming the field (`name`, `hash_header`).
    pub fn strategy(&self) -> Result<Strategy, PolicyError> {
        let strategy: Strategy = self.name.parse().map_err(|e| PolicyError::new("name", e))?;
        match (&self.hash_header, strategy.is_consistent_hash()) {
            (None, true) => Err(PolicyError::new(
                "hash_header",
                InvalidValue::new(
                    None::<&str>,
                    "required by the consistent hashers ring_hash and maglev",
                ),
            )),
            (Some(h), false) => Err(PolicyError::new(
                "hash_header",
                InvalidValue::new(
                    h,
                    "only used by the consistent hashers ring_hash and maglev",
                ),
            )),
            _ => Ok(strategy),
        }
    }

    /// The picker for HTTP requests: the strategy, with the hashers keyed by the value of
    /// `hash_header` (hashed with [`hash_bytes`](crate::balance::hash_bytes); a request
    /// without the header falls back to round robin).
    pub fn pick<B>(&self) -> Result<AnyPick<http::Request<B>>, PolicyError> {
        let strategy = self.strategy()?;
        let pick = AnyPick::new(strategy);
        let Some(header) = &self.hash_header else {
            return Ok(pick);
        };
        let header = http::HeaderName::try_from(header.as_str())
            .map_err(|e| PolicyError::new("hash_header", e))?;
        Ok(pick.with_key(move |req: &http::Request<B>| {
            req.headers()
                .get(&header)
                .map(|v| crate::balance::hash_bytes(v.as_bytes()))
        }))
    }
}

/// Budgeted retries on another endpoint (see [`crate::retry`]); the defaults are
/// [`RetryLayer::builder`]'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// How long a request's deposit counts in the budget (default `"10s"`).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Retries allowed per second whatever the traffic (default 10).
    pub min_per_sec: u32,
    /// Retries allowed per request deposited, on top of `min_per_sec` (default 0.2).
    pub retry_ratio: f32,
    /// Retries of one request at most (default 2).
    pub max_retries: usize,
    /// Response statuses retried for idempotent methods (default `[502, 503, 504]`).
    pub statuses: Vec<u16>,
    /// Whether gRPC requests that got no response are retried (default `true`).
    pub grpc: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
            max_retries: 2,
            statuses: vec![502, 503, 504],
            grpc: true,
        }
    }
}

overrides! {
    /// The fields of a [`RetryPolicy`] that a service replaces.
    RetryOverride for RetryPolicy {
        /// Replaces [`RetryPolicy::ttl`].
        #[serde(with = "humantime_serde")]
        ttl: Duration,
        /// Replaces [`RetryPolicy::min_per_sec`].
        min_per_sec: u32,
        /// Replaces [`RetryPolicy::retry_ratio`].
        retry_ratio: f32,
        /// Replaces [`RetryPolicy::max_retries`].
        max_retries: usize,
        /// Replaces [`RetryPolicy::statuses`].
        statuses: Vec<u16>,
        /// Replaces [`RetryPolicy::grpc`].
        grpc: bool,
    }
}

impl RetryPolicy {
    /// The retry layer, or the error naming the field (the builder's setting names are the
    /// fields' names).
    pub fn layer(&self) -> Result<RetryLayer, PolicyError> {
        let statuses = self
            .statuses
            .iter()
            .map(|&s| StatusCode::from_u16(s).map_err(|e| PolicyError::new("statuses", e)))
            .collect::<Result<Vec<_>, _>>()?;
        RetryLayer::builder()
            .ttl(self.ttl)
            .min_per_sec(self.min_per_sec)
            .retry_ratio(self.retry_ratio)
            .max_retries(self.max_retries)
            .statuses(statuses)
            .grpc(self.grpc)
            .build()
            .map_err(|e| PolicyError::new(e.setting(), e))
    }
}

/// The sliding window of a breaker's rates: `{ count = 100 }` calls or `{ time = 10 }`
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowPolicy {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `n` whole seconds.
    Time(u32),
}

impl From<WindowPolicy> for Window {
    fn from(w: WindowPolicy) -> Self {
        match w {
            WindowPolicy::Count(n) => Window::Count(n),
            WindowPolicy::Time(n) => Window::Time(n),
        }
    }
}

/// A circuit breaker (see [`crate::breaker`]); the defaults are [`breaker::Builder::new`]'s.
///
/// The rules left out (`None`) are off. A service's override can change a rule's threshold
/// but cannot turn off a rule that the defaults turn on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Opens after this many failures in a row (default 5).
    pub consecutive_failures: Option<u32>,
    /// Opens when this share of the window's calls failed (default off).
    pub failure_rate: Option<f64>,
    /// A call slower than this is slow (default none).
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Option<Duration>,
    /// Opens when this share of the window's calls was slow; needs `slow_call_duration`
    /// (default off).
    pub slow_call_rate: Option<f64>,
    /// The rates' window (default `{ count = 100 }`).
    pub window: WindowPolicy,
    /// Calls the window needs before a rate can open the breaker (default 20).
    pub minimum_calls: u32,
    /// How long the first opening lasts (default `"5s"`).
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// The longest opening (default `"5m"`).
    #[serde(with = "humantime_serde")]
    pub max_open_duration: Duration,
    /// Each consecutive opening lasts this many times the previous one (default 2.0).
    pub backoff_multiplier: f64,
    /// Openings are lengthened by up to this share at random (default 0.0).
    pub jitter: f64,
    /// Concurrent half-open probes (default 1).
    pub half_open_probes: u32,
    /// Half-open successes that close the breaker (default 1).
    pub success_threshold: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate: None,
            slow_call_duration: None,
            slow_call_rate: None,
            window: WindowPolicy::Count(100),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(300),
            backoff_multiplier: 2.0,
            jitter: 0.0,
            half_open_probes: 1,
            success_threshold: 1,
        }
    }
}

overrides! {
    /// The fields of a [`BreakerPolicy`] that a service replaces.
    BreakerOverride for BreakerPolicy {
        /// Replaces [`BreakerPolicy::consecutive_failures`].
        consecutive_failures: u32,
        /// Replaces [`BreakerPolicy::failure_rate`].
        failure_rate: f64,
        /// Replaces [`BreakerPolicy::slow_call_duration`].
        #[serde(with = "humantime_serde")]
        slow_call_duration: Duration,
        /// Replaces [`BreakerPolicy::slow_call_rate`].
        slow_call_rate: f64,
        /// Replaces [`BreakerPolicy::window`].
        window: WindowPolicy,
        /// Replaces [`BreakerPolicy::minimum_calls`].
        minimum_calls: u32,
        /// Replaces [`BreakerPolicy::open_duration`].
        #[serde(with = "humantime_serde")]
        open_duration: Duration,
        /// Replaces [`BreakerPolicy::max_open_duration`].
        #[serde(with = "humantime_serde")]
        max_open_duration: Duration,
        /// Replaces [`BreakerPolicy::backoff_multiplier`].
        backoff_multiplier: f64,
        /// Replaces [`BreakerPolicy::jitter`].
        jitter: f64,
        /// Replaces [`BreakerPolicy::half_open_probes`].
        half_open_probes: u32,
        /// Replaces [`BreakerPolicy::success_threshold`].
        success_threshold: u32,
    }
}

/// The field of a [`BreakerPolicy`] that a breaker build error is about.
fn breaker_field(e: &breaker::error::BuildError) -> &'static str {
    use breaker::error::BuildError as E;
    match e {
        E::ZeroCount { setting }
        | E::CountTooLarge { setting, .. }
        | E::InvalidRate { setting, .. }
        | E::ZeroDuration { setting }
        | E::OpenDurationTooLong { setting, .. } => match *setting {
            // The builder's `slow_calls(duration, rate)` names its rate `slow_calls`.
            "slow_calls" => "slow_call_rate",
            s => s,
        },
        E::MaxBelowBase { .. } => "max_open_duration",
        E::InvalidMultiplier { .. } => "backoff_multiplier",
        E::InvalidJitter { .. } => "jitter",
        E::MinimumCallsAboveWindow { .. } => "minimum_calls",
        // No rule is on: the first rule is the one to set.
        E::NoTripCondition => "consecutive_failures",
    }
}

impl BreakerPolicy {
    /// The breaker builder with these settings, named `name`; its
    /// [`build`](breaker::Builder::build) (service breaker) or
    /// [`build_endpoint`](breaker::Builder::build_endpoint) (endpoint breakers) checks them,
    /// and [`service_breaker`](Self::service_breaker) and
    /// [`endpoint_breaker`](Self::endpoint_breaker) name the field of a refusal.
    pub fn builder(&self, name: &str) -> Result<breaker::Builder, PolicyError> {
        let mut b = breaker::Builder::new()
            .name(name)
            .window(self.window.into())
            .minimum_calls(self.minimum_calls)
            .open_duration(self.open_duration)
            .max_open_duration(self.max_open_duration)
            .backoff_multiplier(self.backoff_multiplier)
            .jitter(self.jitter)
            .half_open_probes(self.half_open_probes)
            .success_threshold(self.success_threshold);
        b = match self.consecutive_failures {
            Some(n) => b.consecutive_failures(n),
            None => b.without_consecutive_failures(),
        };
        if let Some(rate) = self.failure_rate {
            b = b.failure_rate(rate);
        }
        b = match (self.slow_call_duration, self.slow_call_rate) {
            (Some(d), Some(rate)) => b.slow_calls(d, rate),
            (Some(d), None) => b.slow_call_duration(d),
            (None, Some(rate)) => {
                return Err(PolicyError::new(
                    "slow_call_rate",
                    InvalidValue::new(rate, "needs slow_call_duration"),
                ))
            }
            (None, None) => b,
        };
        Ok(b)
    }

    /// Builds and drops a breaker of these settings (without metrics), for the error.
    pub(super) fn check(&self, endpoint: bool) -> Result<(), PolicyError> {
        let b = self.builder("check")?;
        #[cfg(feature = "metrics")]
        let b = b.metrics(false);
        let built = if endpoint {
            b.build_endpoint().map(drop)
        } else {
            b.build().map(drop)
        };
        built.map_err(|e| PolicyError::new(breaker_field(&e), e))
    }

    /// The service-level breaker named `name`, or the error naming the field.
    pub fn service_breaker(&self, name: &str) -> Result<breaker::CircuitBreakerLayer, PolicyError> {
        self.builder(name)?
            .build()
            .map_err(|e| PolicyError::new(breaker_field(&e), e))
    }

    /// The service-level breaker named `name` judging outcomes with `classifier`, or the
    /// error naming the field.
    pub fn service_breaker_with<C>(
        &self,
        name: &str,
        classifier: C,
    ) -> Result<breaker::CircuitBreakerLayer<C>, PolicyError> {
        self.builder(name)?
            .classifier(classifier)
            .build()
            .map_err(|e| PolicyError::new(breaker_field(&e), e))
    }

    /// The endpoint breakers' layer, named after `name`, judging outcomes with
    /// `classifier`, or the error naming the field.
    pub fn endpoint_breaker_with<C>(
        &self,
        name: &str,
        classifier: C,
    ) -> Result<breaker::EndpointBreakerLayer<C>, PolicyError> {
        self.builder(name)?
            .classifier(classifier)
            .build_endpoint()
            .map_err(|e| PolicyError::new(breaker_field(&e), e))
    }

    /// The endpoint breakers' layer, named after `name`, or the error naming the field.
    pub fn endpoint_breaker(
        &self,
        name: &str,
    ) -> Result<breaker::EndpointBreakerLayer, PolicyError> {
        self.builder(name)?
            .build_endpoint()
            .map_err(|e| PolicyError::new(breaker_field(&e), e))
    }
}

/// Which instances discovery offers by health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthFilterPolicy {
    /// Whether instances whose health is `Warning` take traffic (default `true`, as
    /// [`discover::Builder::include_warning`](crate::discover::Builder::include_warning)).
    pub include_warning: bool,
}

impl Default for HealthFilterPolicy {
    fn default() -> Self {
        Self {
            include_warning: true,
        }
    }
}

overrides! {
    /// The fields of a [`HealthFilterPolicy`] that a service replaces.
    HealthFilterOverride for HealthFilterPolicy {
        /// Replaces [`HealthFilterPolicy::include_warning`].
        include_warning: bool,
    }
}

impl HealthFilterPolicy {
    /// The discovery builder with this filter.
    pub fn discover_builder(&self) -> crate::discover::Builder {
        crate::discover::Builder::new().include_warning(self.include_warning)
    }
}
