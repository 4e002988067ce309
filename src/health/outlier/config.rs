//! The outlier detection policy and its [`Builder`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::DefaultClassifier;

use super::detector::Detector;
use super::error::BuildError;
use super::gateway::ErrorsAsGateway;
use super::hooks::OnEjection;
use super::layer::OutlierLayer;
use super::worker::Worker;

/// A consecutive-failures rule: eject after `threshold` in a row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Consecutive {
    pub(crate) threshold: u32,
    pub(crate) enforcing: u32,
}

/// A rule evaluated once per interval over the endpoints with enough requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Statistical {
    pub(crate) minimum_hosts: u32,
    pub(crate) request_volume: u32,
    pub(crate) enforcing: u32,
}

/// Envoy's `success_rate` settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SuccessRate {
    pub(crate) stdev_factor: f64,
    pub(crate) base: Statistical,
}

/// Envoy's `failure_percentage` settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailurePercentage {
    pub(crate) threshold: u32,
    pub(crate) base: Statistical,
}

/// The whole policy, validated by [`Builder::build`].
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) interval: Duration,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u32,
    pub(crate) consecutive_5xx: Option<Consecutive>,
    pub(crate) consecutive_gateway_failure: Option<Consecutive>,
    pub(crate) success_rate: Option<SuccessRate>,
    pub(crate) failure_percentage: Option<FailurePercentage>,
}

const CONSECUTIVE_5XX: Consecutive = Consecutive {
    threshold: 5,
    enforcing: 100,
};
const CONSECUTIVE_GATEWAY: Consecutive = Consecutive {
    threshold: 5,
    enforcing: 0,
};
const SUCCESS_RATE: SuccessRate = SuccessRate {
    stdev_factor: 1.9,
    base: Statistical {
        minimum_hosts: 5,
        request_volume: 100,
        enforcing: 100,
    },
};
const FAILURE_PERCENTAGE: FailurePercentage = FailurePercentage {
    threshold: 85,
    base: Statistical {
        minimum_hosts: 5,
        request_volume: 50,
        enforcing: 0,
    },
};

impl Default for Policy {
    fn default() -> Self {
        Policy {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            consecutive_5xx: Some(CONSECUTIVE_5XX),
            consecutive_gateway_failure: Some(CONSECUTIVE_GATEWAY),
            success_rate: Some(SUCCESS_RATE),
            failure_percentage: Some(FAILURE_PERCENTAGE),
        }
    }
}

fn percent(setting: &'static str, value: u32) -> Result<(), BuildError> {
    if value > 100 {
        return Err(BuildError::PercentOutOfRange { setting, value });
    }
    Ok(())
}

fn count(setting: &'static str, value: u32) -> Result<(), BuildError> {
    if value == 0 {
        return Err(BuildError::ZeroCount { setting });
    }
    Ok(())
}

impl Policy {
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.interval.is_zero() {
            return Err(BuildError::ZeroDuration {
                setting: "interval",
            });
        }
        if self.base_ejection_time.is_zero() {
            return Err(BuildError::ZeroDuration {
                setting: "base_ejection_time",
            });
        }
        if self.max_ejection_time < self.base_ejection_time {
            return Err(BuildError::MaxBelowBase {
                base: self.base_ejection_time,
                max: self.max_ejection_time,
            });
        }
        percent("max_ejection_percent", self.max_ejection_percent)?;
        if let Some(c) = &self.consecutive_5xx {
            count("consecutive_5xx", c.threshold)?;
            percent("enforcing_consecutive_5xx", c.enforcing)?;
        }
        if let Some(c) = &self.consecutive_gateway_failure {
            count("consecutive_gateway_failure", c.threshold)?;
            percent("enforcing_consecutive_gateway_failure", c.enforcing)?;
        }
        if let Some(s) = &self.success_rate {
            if !s.stdev_factor.is_finite() || s.stdev_factor < 0.0 {
                return Err(BuildError::InvalidFactor {
                    value: s.stdev_factor,
                });
            }
            count("success_rate_minimum_hosts", s.base.minimum_hosts)?;
            count("success_rate_request_volume", s.base.request_volume)?;
            percent("enforcing_success_rate", s.base.enforcing)?;
        }
        if let Some(p) = &self.failure_percentage {
            percent("failure_percentage_threshold", p.threshold)?;
            count("failure_percentage_minimum_hosts", p.base.minimum_hosts)?;
            count("failure_percentage_request_volume", p.base.request_volume)?;
            percent("enforcing_failure_percentage", p.base.enforcing)?;
        }
        Ok(())
    }

    /// How long the `times`-th ejection in a row lasts: the base times `times`, capped.
    pub(crate) fn ejection_time(&self, times: u32) -> Duration {
        self.base_ejection_time
            .checked_mul(times.max(1))
            .map_or(self.max_ejection_time, |d| d.min(self.max_ejection_time))
    }
}

/// Configures outlier detection; validated by [`build`](Self::build).
///
/// The settings and defaults are Envoy's (`config.cluster.v3.OutlierDetection`), which are
/// safe in production:
///
/// | setting | default |
/// | --- | --- |
/// | [`name`](Self::name) | `"outlier"` (name it after the service) |
/// | [`interval`](Self::interval) | 10 s |
/// | [`base_ejection_time`](Self::base_ejection_time) | 30 s (times the number of ejections in a row) |
/// | [`max_ejection_time`](Self::max_ejection_time) | 300 s |
/// | [`max_ejection_percent`](Self::max_ejection_percent) | 10 (at least one endpoint; see the method) |
/// | [`consecutive_5xx`](Self::consecutive_5xx) | 5, enforcing 100% |
/// | [`consecutive_gateway_failure`](Self::consecutive_gateway_failure) | 5, enforcing 0% (detected and counted only) |
/// | [`success_rate_stdev_factor`](Self::success_rate_stdev_factor) | 1.9, with 5 hosts of 100 requests, enforcing 100% |
/// | [`failure_percentage_threshold`](Self::failure_percentage_threshold) | 85, with 5 hosts of 50 requests, enforcing 0% |
/// | [`classifier`](Self::classifier) | [`DefaultClassifier`] (every `Err` is a failure) |
/// | [`gateway`](Self::gateway) | [`ErrorsAsGateway`] (every `Err` is a gateway failure) |
/// | [`on_ejection`](Self::on_ejection) | `()` |
/// | `metrics` (feature `metrics`) | on |
pub struct Builder<C = DefaultClassifier, G = ErrorsAsGateway, H = ()> {
    pub(crate) policy: Policy,
    pub(crate) name: Arc<str>,
    pub(crate) seed: Option<u64>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: bool,
    pub(crate) classifier: C,
    pub(crate) gateway: G,
    pub(crate) hook: H,
}

impl<C: fmt::Debug, G: fmt::Debug, H> fmt::Debug for Builder<C, G, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("classifier", &self.classifier)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with Envoy's defaults.
    pub fn new() -> Self {
        Builder {
            policy: Policy::default(),
            name: Arc::from("outlier"),
            seed: None,
            #[cfg(feature = "metrics")]
            metrics: true,
            classifier: DefaultClassifier,
            gateway: ErrorsAsGateway,
            hook: (),
        }
    }
}

impl<C, G, H> Builder<C, G, H> {
    /// The name carried by tracing events and metrics (default `"outlier"`): name the
    /// detector after the service whose endpoints it watches.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// How often the success-rate and failure-percentage rules are evaluated, the ejection
    /// times of returned endpoints decayed, and overdue endpoints returned (default 10 s).
    /// Evaluation runs on a timer, with or without traffic.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.policy.interval = interval;
        self
    }

    /// How long an endpoint stays ejected the first time (default 30 s). The `n`-th ejection
    /// in a row lasts `n` times this, at most [`max_ejection_time`](Self::max_ejection_time).
    pub fn base_ejection_time(mut self, duration: Duration) -> Self {
        self.policy.base_ejection_time = duration;
        self
    }

    /// The longest an endpoint stays ejected, however often it was ejected (default 300 s; at
    /// least the base ejection time).
    pub fn max_ejection_time(mut self, duration: Duration) -> Self {
        self.policy.max_ejection_time = duration;
        self
    }

    /// The largest share of the endpoints that may be ejected at once, in percent (default
    /// 10).
    ///
    /// As in Envoy, one endpoint can always be ejected, whatever the share: with the default
    /// 10% and fewer than ten endpoints, one at a time. Beyond the first, an ejection is made
    /// only if the ejected endpoints, it included, are at most this share of the endpoints.
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.policy.max_ejection_percent = percent;
        self
    }

    /// Eject an endpoint after `n` consecutive failures, as the classifier counts them
    /// (default 5; Envoy's `consecutive_5xx`). The run is checked as each call completes.
    pub fn consecutive_5xx(mut self, n: u32) -> Self {
        self.policy
            .consecutive_5xx
            .get_or_insert(CONSECUTIVE_5XX)
            .threshold = n;
        self
    }

    /// The chance, in percent, that an endpoint found by the consecutive-5xx rule is ejected
    /// (default 100; 0 detects, logs and counts only).
    pub fn enforcing_consecutive_5xx(mut self, percent: u32) -> Self {
        self.policy
            .consecutive_5xx
            .get_or_insert(CONSECUTIVE_5XX)
            .enforcing = percent;
        self
    }

    /// Turn the consecutive-5xx rule off (not even detected).
    pub fn without_consecutive_5xx(mut self) -> Self {
        self.policy.consecutive_5xx = None;
        self
    }

    /// Eject an endpoint after `n` consecutive gateway failures (default 5; Envoy's
    /// `consecutive_gateway_failure`): failures the [`gateway`](Self::gateway) classifier
    /// calls gateway failures. Any other outcome ends the run.
    pub fn consecutive_gateway_failure(mut self, n: u32) -> Self {
        self.policy
            .consecutive_gateway_failure
            .get_or_insert(CONSECUTIVE_GATEWAY)
            .threshold = n;
        self
    }

    /// The chance, in percent, that an endpoint found by the consecutive-gateway-failure rule
    /// is ejected (default 0, as in Envoy: detected, logged and counted only).
    pub fn enforcing_consecutive_gateway_failure(mut self, percent: u32) -> Self {
        self.policy
            .consecutive_gateway_failure
            .get_or_insert(CONSECUTIVE_GATEWAY)
            .enforcing = percent;
        self
    }

    /// Turn the consecutive-gateway-failure rule off (not even detected).
    pub fn without_consecutive_gateway_failure(mut self) -> Self {
        self.policy.consecutive_gateway_failure = None;
        self
    }

    /// The success-rate rule's factor (default 1.9; Envoy's `success_rate_stdev_factor`
    /// divided by 1000): each interval, an endpoint whose success rate is below
    /// `mean − stdev × factor` over the endpoints with enough requests is an outlier.
    pub fn success_rate_stdev_factor(mut self, factor: f64) -> Self {
        self.policy
            .success_rate
            .get_or_insert(SUCCESS_RATE)
            .stdev_factor = factor;
        self
    }

    /// How many endpoints must have
    /// [`success_rate_request_volume`](Self::success_rate_request_volume) requests in an
    /// interval for the success-rate rule to be evaluated (default 5).
    pub fn success_rate_minimum_hosts(mut self, n: u32) -> Self {
        self.policy
            .success_rate
            .get_or_insert(SUCCESS_RATE)
            .base
            .minimum_hosts = n;
        self
    }

    /// How many requests an endpoint must complete in an interval to count for the
    /// success-rate rule (default 100).
    pub fn success_rate_request_volume(mut self, n: u32) -> Self {
        self.policy
            .success_rate
            .get_or_insert(SUCCESS_RATE)
            .base
            .request_volume = n;
        self
    }

    /// The chance, in percent, that an endpoint found by the success-rate rule is ejected
    /// (default 100).
    pub fn enforcing_success_rate(mut self, percent: u32) -> Self {
        self.policy
            .success_rate
            .get_or_insert(SUCCESS_RATE)
            .base
            .enforcing = percent;
        self
    }

    /// Turn the success-rate rule off.
    pub fn without_success_rate(mut self) -> Self {
        self.policy.success_rate = None;
        self
    }

    /// The failure-percentage rule's threshold (default 85): each interval, an endpoint with
    /// enough requests whose failures are above this percentage of them is an outlier.
    pub fn failure_percentage_threshold(mut self, percent: u32) -> Self {
        self.policy
            .failure_percentage
            .get_or_insert(FAILURE_PERCENTAGE)
            .threshold = percent;
        self
    }

    /// How many endpoints must have
    /// [`failure_percentage_request_volume`](Self::failure_percentage_request_volume)
    /// requests in an interval for the failure-percentage rule to be evaluated (default 5).
    pub fn failure_percentage_minimum_hosts(mut self, n: u32) -> Self {
        self.policy
            .failure_percentage
            .get_or_insert(FAILURE_PERCENTAGE)
            .base
            .minimum_hosts = n;
        self
    }

    /// How many requests an endpoint must complete in an interval to count for the
    /// failure-percentage rule (default 50).
    pub fn failure_percentage_request_volume(mut self, n: u32) -> Self {
        self.policy
            .failure_percentage
            .get_or_insert(FAILURE_PERCENTAGE)
            .base
            .request_volume = n;
        self
    }

    /// The chance, in percent, that an endpoint found by the failure-percentage rule is
    /// ejected (default 0, as in Envoy: detected, logged and counted only).
    pub fn enforcing_failure_percentage(mut self, percent: u32) -> Self {
        self.policy
            .failure_percentage
            .get_or_insert(FAILURE_PERCENTAGE)
            .base
            .enforcing = percent;
        self
    }

    /// Turn the failure-percentage rule off.
    pub fn without_failure_percentage(mut self) -> Self {
        self.policy.failure_percentage = None;
        self
    }

    /// Seed the random numbers behind the enforcing percentages (by default seeded from the
    /// thread's RNG).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether the detector reports to `metrics` (default on): outliers detected and
    /// ejections enforced by rule, overflows, returns, and the number ejected.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// What counts as a failure: any [`Classify`](crate::breaker::Classify) implementation,
    /// such as [`HttpClassifier::server_errors()`](crate::breaker::HttpClassifier::server_errors)
    /// (5xx and transport errors) or [`HttpClassifier::grpc()`](crate::breaker::HttpClassifier::grpc)
    /// (gRPC statuses, from the headers or the trailers). Calls it classifies as ignored
    /// count for no rule.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2, G, H> {
        Builder {
            policy: self.policy,
            name: self.name,
            seed: self.seed,
            #[cfg(feature = "metrics")]
            metrics: self.metrics,
            classifier,
            gateway: self.gateway,
            hook: self.hook,
        }
    }

    /// Which failures are gateway failures: [`ErrorsAsGateway`] (the default),
    /// [`HttpGateway`](super::HttpGateway) for HTTP (errors and 502, 503, 504), or a closure.
    pub fn gateway<G2>(self, gateway: G2) -> Builder<C, G2, H> {
        Builder {
            policy: self.policy,
            name: self.name,
            seed: self.seed,
            #[cfg(feature = "metrics")]
            metrics: self.metrics,
            classifier: self.classifier,
            gateway,
            hook: self.hook,
        }
    }

    /// Called on every ejection and return (`()` for none; a closure taking an
    /// [`Ejection`](super::Ejection); or [`PublishToRegistry`](super::PublishToRegistry) to
    /// publish ejections to the registry).
    pub fn on_ejection<H2>(self, hook: H2) -> Builder<C, G, H2> {
        Builder {
            policy: self.policy,
            name: self.name,
            seed: self.seed,
            #[cfg(feature = "metrics")]
            metrics: self.metrics,
            classifier: self.classifier,
            gateway: self.gateway,
            hook,
        }
    }

    /// Validates the settings and makes the layer and its detector, and its [`Worker`] to
    /// run on an executor of your choice (it evaluates the interval rules and returns
    /// endpoints; it ends once the layer, every endpoint and every handle are dropped). Run
    /// it: without it the success-rate and failure-percentage rules never run, ejection counts
    /// never decay, and an ejected endpoint returns only when it is polled.
    #[allow(clippy::type_complexity)] // tower's `pair()` shape: (service, worker)
    pub fn build_pair<K>(self) -> Result<(OutlierLayer<K, C, G>, Worker<K>), BuildError>
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        H: OnEjection<K>,
    {
        self.policy.validate()?;
        let detector = Detector::new(
            self.policy,
            self.name,
            self.seed,
            Box::new(self.hook),
            #[cfg(feature = "metrics")]
            self.metrics,
        );
        let worker = Worker::new(&detector);
        Ok((
            OutlierLayer::from_parts(detector, self.classifier, self.gateway),
            worker,
        ))
    }

    /// Validates the settings and makes the layer and its detector, **spawning** the
    /// detector's [`Worker`] on the current tokio runtime (see
    /// [`build_pair`](Self::build_pair) for another executor).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn build<K>(self) -> Result<OutlierLayer<K, C, G>, BuildError>
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        H: OnEjection<K>,
    {
        let (layer, worker) = self.build_pair()?;
        tokio::spawn(worker);
        Ok(layer)
    }
}
