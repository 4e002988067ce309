use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use tower_layer::Layer;

use crate::balance::error::BuildError;
use crate::balance::{Balance, BoxError, SlowStart, Weight, Worker};

/// What the balancer does when fewer endpoints than the panic threshold are healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanicMode {
    /// Spread load over every ready endpoint, healthy or not (Envoy's panic routing).
    #[default]
    Spread,
    /// Fail requests at once with [`error::Panic`](super::error::Panic): `poll_ready` is
    /// ready, and the response future fails without reaching an endpoint.
    FailFast,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `None`: wait for an endpoint forever.
    pub(crate) no_endpoints_timeout: Option<Duration>,
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
            no_endpoints_timeout: Some(Duration::from_secs(1)),
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
/// [`BalanceLayer::new`] takes the defaults: no-endpoints timeout 1 s, panic threshold 50%
/// with [`PanicMode::Spread`], no slow start, peak-EWMA default RTT 30 ms and decay 10 s.
/// [`BalanceLayer::builder`] changes them, validated by [`Builder::build`].
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

    /// A [`Builder`] for a layer that balances with `strategy`.
    pub fn builder(strategy: P) -> Builder<P> {
        Builder {
            strategy,
            config: Config::default(),
        }
    }

    /// Build a balancer over `discover` without going through `Layer`. Its worker is
    /// spawned on the current tokio runtime (or, outside one, on the runtime of the first
    /// `poll_ready`); see [`Balance::new`].
    pub fn build<D>(&self, discover: D) -> Balance<D, P>
    where
        D: tower::discover::Discover + Unpin + Send + 'static,
        D::Key: Hash + Eq + Clone + fmt::Debug + Send,
        D::Service: Weight + Send,
        D::Error: Into<BoxError>,
        P: Clone + Send + 'static,
    {
        Balance::with_config(discover, self.strategy.clone(), self.config.clone())
    }

    /// Build a balancer over `discover` and its [`Worker`], for an executor other than
    /// tokio's: run the worker to make the balancer progress without requests (see
    /// [`Balance::pair`]).
    pub fn pair<D>(&self, discover: D) -> (Balance<D, P>, Worker<D, P>)
    where
        D: tower::discover::Discover + Unpin,
        D::Key: Hash + Eq + Clone + fmt::Debug,
        D::Service: Weight,
        D::Error: Into<BoxError>,
        P: Clone,
    {
        Balance::pair_with_config(discover, self.strategy.clone(), self.config.clone())
    }
}

impl<D, P> Layer<D> for BalanceLayer<P>
where
    D: tower::discover::Discover + Unpin + Send + 'static,
    D::Key: Hash + Eq + Clone + fmt::Debug + Send,
    D::Service: Weight + Send,
    D::Error: Into<BoxError>,
    P: Clone + Send + 'static,
{
    type Service = Balance<D, P>;

    fn layer(&self, discover: D) -> Self::Service {
        self.build(discover)
    }
}

/// Settings of a [`BalanceLayer`], checked by [`build`](Builder::build).
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mesh::balance::{BalanceLayer, PanicMode, RoundRobin, SlowStart};
///
/// # fn main() -> Result<(), tower_mesh::balance::error::BuildError> {
/// let balance = BalanceLayer::builder(RoundRobin::new())
///     .no_endpoints_timeout(Duration::from_secs(2))
///     .panic_threshold_percent(30)
///     .panic_mode(PanicMode::FailFast)
///     .slow_start(SlowStart::new(Duration::from_secs(30)).min_weight_percent(20))
///     .build()?;
/// let stack = ServiceBuilder::new()
///     .buffer::<http::Request<String>>(1024)
///     .layer(balance);
/// # let _ = stack;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<P> {
    strategy: P,
    config: Config,
}

impl<P> Builder<P> {
    /// How long `poll_ready` waits for a ready endpoint (default 1 s). Past it,
    /// `poll_ready` is ready and the request fails at once with
    /// [`error::NoEndpoints`](super::error::NoEndpoints), until an endpoint is ready
    /// again. Any duration is accepted (zero fails at once); one too long to add to the
    /// clock waits forever.
    pub fn no_endpoints_timeout(mut self, timeout: Duration) -> Self {
        self.config.no_endpoints_timeout = Some(timeout);
        self
    }

    /// Wait for a ready endpoint for as long as it takes, never failing a request for
    /// lack of one (tower's balancer behaves so): `poll_ready` stays pending until an
    /// endpoint is ready. Bound the wait from outside (a `Timeout` layer above) if needed.
    pub fn wait_for_endpoints(mut self) -> Self {
        self.config.no_endpoints_timeout = None;
        self
    }

    /// Panic threshold in percent of discovered endpoints, 0 to 100 (default 50; 0
    /// disables it).
    pub fn panic_threshold_percent(mut self, percent: u32) -> Self {
        self.config.panic_threshold_percent = percent;
        self
    }

    /// What to do below the panic threshold (default [`PanicMode::Spread`]).
    pub fn panic_mode(mut self, mode: PanicMode) -> Self {
        self.config.panic_mode = mode;
        self
    }

    /// Ramp the weight of newly inserted endpoints.
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.config.slow_start = Some(slow_start);
        self
    }

    /// Latency assumed for an endpoint without a sample (peak EWMA; default 30 ms; must
    /// be positive).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.config.default_rtt = rtt;
        self
    }

    /// Time constant of the peak-EWMA decay (default 10 s; must be positive).
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

    /// Checks the settings and makes the layer.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the first setting out of range: `panic_threshold_percent`
    /// above 100, a zero `default_rtt` or `decay`, a zero slow-start `window`, or a
    /// slow-start `min_weight_percent` outside 1 to 100.
    pub fn build(self) -> Result<BalanceLayer<P>, BuildError> {
        let c = &self.config;
        if c.panic_threshold_percent > 100 {
            return Err(BuildError::new(
                crate::balance::error::COMPONENT,
                "panic_threshold_percent",
                c.panic_threshold_percent,
                "must be 0 to 100",
            ));
        }
        if c.default_rtt.is_zero() {
            return Err(BuildError::new(
                crate::balance::error::COMPONENT,
                "default_rtt",
                c.default_rtt,
                "must be positive",
            ));
        }
        if c.decay.is_zero() {
            return Err(BuildError::new(
                crate::balance::error::COMPONENT,
                "decay",
                c.decay,
                "must be positive",
            ));
        }
        if let Some(slow_start) = &c.slow_start {
            slow_start.validate()?;
        }
        Ok(BalanceLayer {
            strategy: self.strategy,
            config: self.config,
        })
    }
}
