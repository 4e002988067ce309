//! The outlier detection policy and its override.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::error::PolicyError;
use crate::health::outlier;

/// Passive outlier detection (see [`crate::health::outlier`]); the defaults are Envoy's, as
/// [`outlier::Builder::new`]'s. A rule with enforcement 0 is detected and counted only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierPolicy {
    /// How often the interval rules run (default `"10s"`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The first ejection's length (default `"30s"`).
    #[serde(with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// The longest ejection (default `"5m"`).
    #[serde(with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// The largest share of endpoints ejected at once, in percent (default 10).
    pub max_ejection_percent: u32,
    /// Consecutive 5xx (errors) that eject (default 5).
    pub consecutive_5xx: u32,
    /// Percent of detections of `consecutive_5xx` enforced (default 100).
    pub enforcing_consecutive_5xx: u32,
    /// Consecutive gateway failures that eject (default 5).
    pub consecutive_gateway_failure: u32,
    /// Percent enforced (default 0).
    pub enforcing_consecutive_gateway_failure: u32,
    /// Success-rate outliers: below the mean minus this many standard deviations (default 1.9).
    pub success_rate_stdev_factor: f64,
    /// Hosts with enough requests the success-rate rule needs (default 5).
    pub success_rate_minimum_hosts: u32,
    /// Requests per interval a host needs for the success-rate rule (default 100).
    pub success_rate_request_volume: u32,
    /// Percent enforced (default 100).
    pub enforcing_success_rate: u32,
    /// Failure percentage that ejects (default 85).
    pub failure_percentage_threshold: u32,
    /// Hosts the failure-percentage rule needs (default 5).
    pub failure_percentage_minimum_hosts: u32,
    /// Requests per interval a host needs for the failure-percentage rule (default 50).
    pub failure_percentage_request_volume: u32,
    /// Percent enforced (default 0).
    pub enforcing_failure_percentage: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            consecutive_5xx: 5,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            success_rate_stdev_factor: 1.9,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            enforcing_success_rate: 100,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            enforcing_failure_percentage: 0,
        }
    }
}

overrides! {
    /// The fields of an [`OutlierPolicy`] that a service replaces.
    OutlierOverride for OutlierPolicy {
        /// Replaces [`OutlierPolicy::interval`].
        #[serde(with = "humantime_serde")]
        interval: Duration,
        /// Replaces [`OutlierPolicy::base_ejection_time`].
        #[serde(with = "humantime_serde")]
        base_ejection_time: Duration,
        /// Replaces [`OutlierPolicy::max_ejection_time`].
        #[serde(with = "humantime_serde")]
        max_ejection_time: Duration,
        /// Replaces [`OutlierPolicy::max_ejection_percent`].
        max_ejection_percent: u32,
        /// Replaces [`OutlierPolicy::consecutive_5xx`].
        consecutive_5xx: u32,
        /// Replaces [`OutlierPolicy::enforcing_consecutive_5xx`].
        enforcing_consecutive_5xx: u32,
        /// Replaces [`OutlierPolicy::consecutive_gateway_failure`].
        consecutive_gateway_failure: u32,
        /// Replaces [`OutlierPolicy::enforcing_consecutive_gateway_failure`].
        enforcing_consecutive_gateway_failure: u32,
        /// Replaces [`OutlierPolicy::success_rate_stdev_factor`].
        success_rate_stdev_factor: f64,
        /// Replaces [`OutlierPolicy::success_rate_minimum_hosts`].
        success_rate_minimum_hosts: u32,
        /// Replaces [`OutlierPolicy::success_rate_request_volume`].
        success_rate_request_volume: u32,
        /// Replaces [`OutlierPolicy::enforcing_success_rate`].
        enforcing_success_rate: u32,
        /// Replaces [`OutlierPolicy::failure_percentage_threshold`].
        failure_percentage_threshold: u32,
        /// Replaces [`OutlierPolicy::failure_percentage_minimum_hosts`].
        failure_percentage_minimum_hosts: u32,
        /// Replaces [`OutlierPolicy::failure_percentage_request_volume`].
        failure_percentage_request_volume: u32,
        /// Replaces [`OutlierPolicy::enforcing_failure_percentage`].
        enforcing_failure_percentage: u32,
    }
}

impl OutlierPolicy {
    fn unchecked(&self, name: &str) -> outlier::Builder {
        outlier::Builder::new()
            .name(name)
            .interval(self.interval)
            .base_ejection_time(self.base_ejection_time)
            .max_ejection_time(self.max_ejection_time)
            .max_ejection_percent(self.max_ejection_percent)
            .consecutive_5xx(self.consecutive_5xx)
            .enforcing_consecutive_5xx(self.enforcing_consecutive_5xx)
            .consecutive_gateway_failure(self.consecutive_gateway_failure)
            .enforcing_consecutive_gateway_failure(self.enforcing_consecutive_gateway_failure)
            .success_rate_stdev_factor(self.success_rate_stdev_factor)
            .success_rate_minimum_hosts(self.success_rate_minimum_hosts)
            .success_rate_request_volume(self.success_rate_request_volume)
            .enforcing_success_rate(self.enforcing_success_rate)
            .failure_percentage_threshold(self.failure_percentage_threshold)
            .failure_percentage_minimum_hosts(self.failure_percentage_minimum_hosts)
            .failure_percentage_request_volume(self.failure_percentage_request_volume)
            .enforcing_failure_percentage(self.enforcing_failure_percentage)
    }

    /// The detector's builder with these settings, named `name`, checked: its
    /// [`build`](outlier::Builder::build) and [`build_pair`](outlier::Builder::build_pair)
    /// do not fail. A refusal names the field.
    pub fn builder(&self, name: &str) -> Result<outlier::Builder, PolicyError> {
        // The builder checks at `build_pair`, which makes a detector and a worker that are
        // dropped unused (nothing is spawned, nothing reported to `metrics`).
        let throwaway = self.unchecked(name);
        #[cfg(feature = "metrics")]
        let throwaway = throwaway.metrics(false);
        if let Err(e) = throwaway.build_pair::<()>() {
            return Err(PolicyError::new(outlier_field(&e), e));
        }
        Ok(self.unchecked(name))
    }
}

/// The field of an [`OutlierPolicy`] that an outlier build error is about.
fn outlier_field(e: &outlier::error::BuildError) -> &'static str {
    use outlier::error::BuildError as E;
    match e {
        E::ZeroDuration { setting }
        | E::ZeroCount { setting }
        | E::PercentOutOfRange { setting, .. } => setting,
        E::InvalidFactor { .. } => "success_rate_stdev_factor",
        E::MaxBelowBase { .. } => "max_ejection_time",
    }
}
