//! A service's policies as plain serde structs, and the mesh configuration of every service.
//!
//! Durations are human (`"2s"`, `"150ms"`, `"5m"`), unknown keys are refused with their
//! name, and every value is checked when it is converted into its part, the error naming the
//! field by its path ([`PolicyError`]). [`MeshConfig`] holds the default [`Policies`] and
//! per-service [`PolicyOverrides`]; an override replaces only the fields it names, section
//! by section and field by field, and every other field keeps the defaults' value (one
//! exception: naming a strategy replaces its hash header too, see [`StrategyOverride`]).
//!
//! ```toml
//! [defaults]
//! timeout = "2s"
//! strategy = { name = "p2c" }
//! retry = { max_retries = 2 }
//!
//! [services.orders]
//! strategy = { name = "ring_hash", hash_header = "x-user-id" }
//! service_breaker = { consecutive_failures = 10, open_duration = "30s" }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod error;
mod parts;
#[cfg(test)]
mod tests;

pub use self::error::{InvalidValue, PolicyError};
pub use self::parts::{
    BreakerOverride, BreakerPolicy, HealthFilterOverride, HealthFilterPolicy, OutlierOverride,
    OutlierPolicy, RetryOverride, RetryPolicy, StrategyOverride, StrategyPolicy, WindowPolicy,
};

/// Everything that shapes the stack of one service. Each field left out of a configuration
/// takes its default (see each policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policies {
    /// The load-balancing strategy.
    pub strategy: StrategyPolicy,
    /// The whole call's deadline, retries included (default `"10s"`; must be positive).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries on another endpoint.
    pub retry: RetryPolicy,
    /// The breaker of each endpoint.
    pub endpoint_breaker: BreakerPolicy,
    /// The breaker of the service as a whole. It judges what the endpoints answer; a call
    /// that reached no endpoint ([`Error::NoEndpoints`](crate::mesh::Error::NoEndpoints))
    /// counts neither as a success nor as a failure.
    pub service_breaker: BreakerPolicy,
    /// Passive outlier detection over the endpoints.
    pub outlier: OutlierPolicy,
    /// Which instances discovery offers by health.
    pub health_filter: HealthFilterPolicy,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            strategy: StrategyPolicy::default(),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            endpoint_breaker: BreakerPolicy::default(),
            service_breaker: BreakerPolicy::default(),
            outlier: OutlierPolicy::default(),
            health_filter: HealthFilterPolicy::default(),
        }
    }
}

impl Policies {
    /// The timeout, checked (positive).
    pub fn timeout(&self) -> Result<Duration, PolicyError> {
        if self.timeout.is_zero() {
            return Err(PolicyError::new(
                "timeout",
                InvalidValue::new(self.timeout, "must be positive"),
            ));
        }
        Ok(self.timeout)
    }

    /// Converts every policy (building and dropping the parts, with `metrics` off; no runtime
    /// needed), so that a configuration is refused before anything is built from it. The error names the field
    /// (`retry.max_retries`).
    pub fn check(&self) -> Result<(), PolicyError> {
        self.strategy
            .pick::<()>()
            .map_err(|e| e.within("strategy"))?;
        self.timeout()?;
        self.retry.layer().map_err(|e| e.within("retry"))?;
        self.endpoint_breaker
            .check(true)
            .map_err(|e| e.within("endpoint_breaker"))?;
        self.service_breaker
            .check(false)
            .map_err(|e| e.within("service_breaker"))?;
        self.outlier
            .builder("check")
            .map_err(|e| e.within("outlier"))?;
        Ok(())
    }
}

/// The fields of [`Policies`] that one service replaces; everything it leaves out keeps the
/// defaults' value, down to single fields (`retry = { max_retries = 3 }` changes only the
/// retry count).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    /// Replaces fields of [`Policies::strategy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyOverride>,
    /// Replaces [`Policies::timeout`].
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Replaces fields of [`Policies::retry`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOverride>,
    /// Replaces fields of [`Policies::endpoint_breaker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_breaker: Option<BreakerOverride>,
    /// Replaces fields of [`Policies::service_breaker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_breaker: Option<BreakerOverride>,
    /// Replaces fields of [`Policies::outlier`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierOverride>,
    /// Replaces fields of [`Policies::health_filter`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_filter: Option<HealthFilterOverride>,
}

impl PolicyOverrides {
    /// `base` with the fields this override names replaced.
    pub fn apply(&self, base: &Policies) -> Policies {
        let mut p = base.clone();
        if let Some(o) = &self.strategy {
            o.apply_to(&mut p.strategy);
        }
        if let Some(t) = self.timeout {
            p.timeout = t;
        }
        if let Some(o) = &self.retry {
            o.apply_to(&mut p.retry);
        }
        if let Some(o) = &self.endpoint_breaker {
            o.apply_to(&mut p.endpoint_breaker);
        }
        if let Some(o) = &self.service_breaker {
            o.apply_to(&mut p.service_breaker);
        }
        if let Some(o) = &self.outlier {
            o.apply_to(&mut p.outlier);
        }
        if let Some(o) = &self.health_filter {
            o.apply_to(&mut p.health_filter);
        }
        p
    }
}

/// The policies of every service: defaults, and per-service overrides merged over them
/// field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// The policies of a service without overrides, and the base of the overrides.
    pub defaults: Policies,
    /// Overrides by service name.
    pub services: BTreeMap<String, PolicyOverrides>,
}

impl MeshConfig {
    /// The policies of `service` (the defaults with its overrides applied), checked; the
    /// error's path starts at the configuration's root (`services.orders.retry.max_retries`,
    /// or `defaults.…` for a service without overrides).
    pub fn policies(&self, service: &str) -> Result<Policies, PolicyError> {
        match self.services.get(service) {
            Some(o) => {
                let p = o.apply(&self.defaults);
                p.check()
                    .map_err(|e| e.within(&format!("services.{service}")))?;
                Ok(p)
            }
            None => {
                self.defaults.check().map_err(|e| e.within("defaults"))?;
                Ok(self.defaults.clone())
            }
        }
    }

    /// Checks the defaults and every service's merged policies (see
    /// [`policies`](Self::policies)).
    pub fn check(&self) -> Result<(), PolicyError> {
        self.defaults.check().map_err(|e| e.within("defaults"))?;
        for service in self.services.keys() {
            self.policies(service)?;
        }
        Ok(())
    }
}
