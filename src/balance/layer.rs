use std::time::Duration;

use tower_layer::Layer;

use crate::balance::{Balance, SlowStart};

/// What the balancer does when fewer endpoints than the panic threshold are healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanicMode {
    /// Spread load over every ready endpoint, healthy or not (Envoy's panic routing).
    #[default]
    Spread,
    /// Fail `poll_ready` with [`error::Panic`](super::error::Panic).
    FailFast,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) no_endpoints_timeout: Duration,
    pub(crate) panic_threshold_percent: u32,
    pub(crate) panic_mode: PanicMode,
    pub(crate) slow_start: Option<SlowStart>,
    pub(crate) default_rtt: Duration,
    pub(crate) decay: Duration,
    /// Whether the balancer reports to `metrics` (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) metrics: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            no_endpoints_timeout: Duration::from_secs(1),
            panic_threshold_percent: 50,
            panic_mode: PanicMode::Spread,
            slow_start: None,
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            #[cfg(feature = "metrics")]
            metrics: true,
        }
    }
}

/// Builds [`Balance`] services over a discovery stream with a strategy and settings.
///
/// Defaults: no-endpoints timeout 1 s, panic threshold 50% with [`PanicMode::Spread`], no
/// slow start, peak-EWMA default RTT 30 ms and decay 10 s.
#[derive(Debug, Clone)]
pub struct BalanceLayer<P> {
    strategy: P,
    config: Config,
}

impl<P> BalanceLayer<P> {
    /// A layer that balances with `strategy` and default settings.
    pub fn new(strategy: P) -> Self {
        Self {
            strategy,
            config: Config::default(),
        }
    }

    /// How long `poll_ready` waits for a ready endpoint before failing with
    /// [`error::NoEndpoints`](super::error::NoEndpoints).
    pub fn no_endpoints_timeout(mut self, timeout: Duration) -> Self {
        self.config.no_endpoints_timeout = timeout;
        self
    }

    /// Panic threshold in percent of discovered endpoints (0 disables it; capped at 100).
    pub fn panic_threshold_percent(mut self, percent: u32) -> Self {
        self.config.panic_threshold_percent = percent.min(100);
        self
    }

    /// What to do below the panic threshold.
    pub fn panic_mode(mut self, mode: PanicMode) -> Self {
        self.config.panic_mode = mode;
        self
    }

    /// Ramp the weight of newly inserted endpoints.
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.config.slow_start = Some(slow_start);
        self
    }

    /// Latency assumed for an endpoint without a sample (peak EWMA).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.config.default_rtt = rtt;
        self
    }

    /// Time constant of the peak-EWMA decay.
    pub fn decay(mut self, decay: Duration) -> Self {
        self.config.decay = decay;
        self
    }

    /// Whether the balancer reports to `metrics` (default on): per-endpoint request and
    /// readiness-failure counters and the no-endpoints counter. Off, a pick touches no counter.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, on: bool) -> Self {
        self.config.metrics = on;
        self
    }

    /// Build a balancer over `discover` without going through `Layer`.
    pub fn build<D>(&self, discover: D) -> Balance<D, P>
    where
        D: tower::discover::Discover,
        P: Clone,
    {
        Balance::with_config(discover, self.strategy.clone(), self.config.clone())
    }
}

impl<D, P> Layer<D> for BalanceLayer<P>
where
    D: tower::discover::Discover,
    P: Clone,
{
    type Service = Balance<D, P>;

    fn layer(&self, discover: D) -> Self::Service {
        self.build(discover)
    }
}
