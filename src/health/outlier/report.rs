//! What outlier detection reports: the rules, the reason for an ejection, the ejections in
//! force and the counters.

use std::fmt;

use tokio::time::Instant;

/// One of the outlier detection rules (Envoy's outlier detection types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// A run of consecutive failures (Envoy's `consecutive_5xx`).
    Consecutive5xx,
    /// A run of consecutive gateway failures: 502, 503, 504 or an error reaching the endpoint
    /// (Envoy's `consecutive_gateway_failure`).
    ConsecutiveGatewayFailure,
    /// A success rate below the others' mean by more than a number of standard deviations
    /// (Envoy's `success_rate`).
    SuccessRate,
    /// A failure percentage above a fixed threshold (Envoy's `failure_percentage`).
    FailurePercentage,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 4] = [
        Rule::Consecutive5xx,
        Rule::ConsecutiveGatewayFailure,
        Rule::SuccessRate,
        Rule::FailurePercentage,
    ];

    /// A short lowercase name (`"consecutive_5xx"`, `"consecutive_gateway_failure"`,
    /// `"success_rate"`, `"failure_percentage"`), as used in tracing and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Consecutive5xx => "consecutive_5xx",
            Rule::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Rule::SuccessRate => "success_rate",
            Rule::FailurePercentage => "failure_percentage",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Rule::Consecutive5xx => 0,
            Rule::ConsecutiveGatewayFailure => 1,
            Rule::SuccessRate => 2,
            Rule::FailurePercentage => 3,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an endpoint was found to be an outlier: the rule and the figures that decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// `failures` consecutive failures.
    Consecutive5xx {
        /// The length of the run.
        failures: u32,
    },
    /// `failures` consecutive gateway failures.
    ConsecutiveGatewayFailure {
        /// The length of the run.
        failures: u32,
    },
    /// A success rate below `threshold` (`mean − stdev × factor` over the endpoints with
    /// enough requests in the interval), in percent.
    SuccessRate {
        /// The endpoint's success rate over the interval, in percent.
        success_rate: f64,
        /// The threshold it fell below, in percent.
        threshold: f64,
        /// The requests it completed in the interval.
        requests: u64,
    },
    /// A failure percentage above `threshold` over the interval.
    FailurePercentage {
        /// The endpoint's failure percentage over the interval.
        failure_percent: f64,
        /// The threshold it exceeded, in percent.
        threshold: u32,
        /// The requests it completed in the interval.
        requests: u64,
    },
}

impl Reason {
    /// The rule that found the outlier.
    pub fn rule(&self) -> Rule {
        match self {
            Reason::Consecutive5xx { .. } => Rule::Consecutive5xx,
            Reason::ConsecutiveGatewayFailure { .. } => Rule::ConsecutiveGatewayFailure,
            Reason::SuccessRate { .. } => Rule::SuccessRate,
            Reason::FailurePercentage { .. } => Rule::FailurePercentage,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Consecutive5xx { failures } => write!(f, "{failures} consecutive failures"),
            Reason::ConsecutiveGatewayFailure { failures } => {
                write!(f, "{failures} consecutive gateway failures")
            }
            Reason::SuccessRate {
                success_rate,
                threshold,
                requests,
            } => write!(
                f,
                "success rate {success_rate:.2}% below {threshold:.2}% over {requests} requests"
            ),
            Reason::FailurePercentage {
                failure_percent,
                threshold,
                requests,
            } => write!(
                f,
                "failure percentage {failure_percent:.2}% above {threshold}% over {requests} requests"
            ),
        }
    }
}

/// An ejection in force: which endpoint, why, and until when.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Ejection<K> {
    /// The endpoint's key (its discovery key, or the key given to
    /// [`layer_keyed`](super::OutlierLayer::layer_keyed)).
    pub key: K,
    /// Why it was ejected.
    pub reason: Reason,
    /// When it was ejected.
    pub since: Instant,
    /// When it returns.
    pub until: Instant,
    /// How many times in a row it has been ejected (its ejection time is the base ejection
    /// time times this, capped): one more at each ejection, one less for each clean interval.
    pub times: u32,
}

/// Counts per [`Rule`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerRule(pub(crate) [u64; 4]);

impl PerRule {
    /// The count for `rule`.
    pub fn get(&self, rule: Rule) -> u64 {
        self.0[rule.index()]
    }

    /// The sum over every rule.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// A snapshot of a detector's counters, read through
/// [`OutlierHandle::counters`](super::OutlierHandle::counters) (Envoy's
/// `ejections_detected_*`, `ejections_enforced_*` and `ejections_overflow`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutlierCounters {
    /// Outliers found, by rule, whether or not they were ejected.
    pub detected: PerRule,
    /// Ejections made, by rule.
    pub enforced: PerRule,
    /// Outliers found but not ejected because the rule's enforcing percentage said no (dry
    /// runs).
    pub not_enforced: u64,
    /// Ejections refused because `max_ejection_percent` of the endpoints were ejected already.
    pub overflow: u64,
    /// Ejected endpoints that returned.
    pub returned: u64,
}
