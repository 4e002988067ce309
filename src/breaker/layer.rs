//! [`CircuitBreakerLayer`], [`EndpointBreakerLayer`] and their [`Builder`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::classify::DefaultClassifier;
use super::error::BuildError;
use super::handle::Handle;
use super::hooks::{Hooks, OnRejected, OnSlowCall, OnStateChange};
use super::naming;
use super::policy::{Policy, Window};
use super::service::{CircuitBreaker, EndpointBreaker};
use super::state::{Config, Shared};

/// Applies a service-level [`CircuitBreaker`].
///
/// The breaker's state is made once, by [`Builder::build`]; every service this layer makes
/// (and every clone of them) shares it, and [`Layer::layer`] only clones an `Arc`, so it is
/// fine for a framework to call it once per request.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) classifier: C,
}

impl CircuitBreakerLayer {
    /// A builder with the default policy (see [`Builder`]).
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A handle on the breaker this layer applies.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.shared)
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self)
    }
}

/// Applies an [`EndpointBreaker`], a fresh breaker for each service it wraps.
///
/// Meant for the endpoint factory of a discovery stream: each endpoint gets its own breaker
/// with the layer's policy, hooks and classifier. Reach an endpoint's breaker through
/// [`EndpointBreaker::handle`].
///
/// # Names
///
/// Every breaker has a name of its own, which its events, errors and metrics carry:
///
/// * made for an instance by discovery (the layer given to `MakeEndpoint::layered`, alone
///   or inside another layer, or `layer_instance`, both with the `discover` feature):
///   `<name>/<instance id>`, where the name is the builder's [`name`](Builder::name) if one was
///   set and the instance's service otherwise (`orders/orders-1`); an endpoint made again for
///   the same instance (after a change of address) keeps the name, and so its metrics;
/// * made by [`Layer::layer`] anywhere else: `<name>#<n>`, numbered from 1 by this layer and
///   its clones (`breaker#1`, `breaker#2`, …);
/// * [`layer_named`](Self::layer_named): the name given.
///
/// A breaker's state, its name and its `metrics` handles are freed with the endpoint (and the
/// last of its response futures and handles); see the [module docs](super#metrics) for what
/// a `metrics` exporter keeps.
#[derive(Clone)]
pub struct EndpointBreakerLayer<C = DefaultClassifier> {
    config: Arc<Config>,
    classifier: C,
}

impl EndpointBreakerLayer {
    /// A builder with the default policy (see [`Builder`]); finish it with
    /// [`Builder::build_endpoint`].
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<C: Clone> EndpointBreakerLayer<C> {
    /// Wraps `inner` in a new breaker named `name` (events, errors and metrics carry it).
    pub fn layer_named<S>(&self, inner: S, name: impl Into<Arc<str>>) -> EndpointBreaker<S, C> {
        let shared = Shared::new(self.config.clone(), name.into());
        EndpointBreaker::from_shared(inner, shared, self.classifier.clone())
    }

    /// Wraps `inner`, the endpoint for `instance`, in a new breaker named
    /// `<name>/<instance id>` (see [Names](Self#names)), for endpoint factories written by
    /// hand:
    ///
    /// ```
    /// use tower::service_fn;
    /// use tower_mesh::breaker::EndpointBreakerLayer;
    /// use tower_mesh::discover::MakeEndpoint;
    /// use tower_mesh::instance::Instance;
    ///
    /// let breaker = EndpointBreakerLayer::builder().build_endpoint().unwrap();
    /// let mut factory = move |instance: &Instance| {
    ///     let endpoint = service_fn(|req: u32| async move { Ok::<_, std::io::Error>(req) });
    ///     breaker.layer_instance(endpoint, instance)
    /// };
    /// let orders_1 = Instance::builder("orders", "orders-1").host("10.0.0.1").port(80).build().unwrap();
    /// assert_eq!(factory.make_endpoint(&orders_1).handle().name(), "orders/orders-1");
    /// ```
    #[cfg(feature = "discover")]
    #[cfg_attr(docsrs, doc(cfg(feature = "discover")))]
    pub fn layer_instance<S>(
        &self,
        inner: S,
        instance: &crate::instance::Instance,
    ) -> EndpointBreaker<S, C> {
        let name = naming::instance_name(
            &self.config,
            instance.service().as_str(),
            instance.id().as_str(),
        );
        self.layer_named(inner, name)
    }
}

impl<C: fmt::Debug> fmt::Debug for EndpointBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointBreakerLayer")
            .field("name", &self.config.name)
            .field("policy", &self.config.policy)
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl<S, C: Clone> Layer<S> for EndpointBreakerLayer<C> {
    type Service = EndpointBreaker<S, C>;

    /// Wraps `inner` in a new breaker, named after the instance discovery is making it for, or
    /// else numbered (see [Names](Self#names)).
    fn layer(&self, inner: S) -> Self::Service {
        self.layer_named(inner, naming::endpoint_name(&self.config))
    }
}

/// Configures a circuit breaker; validated by [`build`](Self::build).
///
/// Defaults (safe for production, and as documented on each method):
///
/// | setting | default |
/// | --- | --- |
/// | [`name`](Self::name) | `"breaker"`; endpoint breakers: see [`EndpointBreakerLayer`](EndpointBreakerLayer#names) |
/// | [`consecutive_failures`](Self::consecutive_failures) | 5 |
/// | [`failure_rate`](Self::failure_rate) | off |
/// | [`slow_calls`](Self::slow_calls) | off |
/// | [`window`](Self::window) | last 100 calls |
/// | [`minimum_calls`](Self::minimum_calls) | 20 |
/// | [`open_duration`](Self::open_duration) | 5 s, × 2 per consecutive opening, at most 5 min |
/// | [`jitter`](Self::jitter) | 0 |
/// | [`half_open_probes`](Self::half_open_probes) | 1 |
/// | [`success_threshold`](Self::success_threshold) | 1 |
/// | [`classifier`](Self::classifier) | [`DefaultClassifier`] (every `Err` is a failure) |
/// | `metrics` (feature `metrics`) | on |
pub struct Builder<C = DefaultClassifier> {
    policy: Policy,
    hooks: Hooks,
    name: Option<Arc<str>>,
    seed: Option<u64>,
    #[cfg(feature = "metrics")]
    metrics: bool,
    classifier: C,
}

impl<C: fmt::Debug> fmt::Debug for Builder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the default policy.
    pub fn new() -> Self {
        Builder {
            policy: Policy::default(),
            hooks: Hooks::default(),
            name: None,
            seed: None,
            #[cfg(feature = "metrics")]
            metrics: true,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> Builder<C> {
    /// The name carried by errors, events, tracing and metrics (default `"breaker"`).
    ///
    /// A service-level breaker has this name. Endpoint breakers are named after it and their
    /// endpoint (see [`EndpointBreakerLayer`](EndpointBreakerLayer#names)); without it, an
    /// endpoint breaker made through discovery is named after the instance's service. The
    /// name is shared, not copied: a rejection's [`Open`](super::error::Open) error counts a
    /// reference to it, and it is freed with the breaker and the last such error.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Open after `n` consecutive failures in the closed state (default 5; the seed's
    /// `failure_threshold`). An ignored call neither breaks nor extends the run.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.policy.consecutive_failures = Some(n);
        self
    }

    /// Do not open on consecutive failures (then a rate must be set).
    pub fn without_consecutive_failures(mut self) -> Self {
        self.policy.consecutive_failures = None;
        self
    }

    /// Open when at least this share of the calls in the [`window`](Self::window) failed,
    /// once it holds [`minimum_calls`](Self::minimum_calls) (resilience4j's
    /// `failureRateThreshold`; a rate in `(0.0, 1.0]`; default off).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.policy.failure_rate = Some(rate);
        self
    }

    /// Count calls taking at least `duration` as slow, and open when at least `rate` of the
    /// calls in the window were slow, once it holds [`minimum_calls`](Self::minimum_calls)
    /// (resilience4j's `slowCallDurationThreshold` and `slowCallRateThreshold`; default off).
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.policy.slow_call_duration = Some(duration);
        self.policy.slow_call_rate = Some(rate);
        self
    }

    /// Count calls taking at least `duration` as slow (reported to
    /// [`on_slow_call`](Self::on_slow_call) and the counters) without opening on them.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.policy.slow_call_duration = Some(duration);
        self
    }

    /// The window the rates are computed over (default [`Window::Count(100)`](Window::Count)).
    pub fn window(mut self, window: Window) -> Self {
        self.policy.window = window;
        self
    }

    /// The number of calls the window must hold before a rate can open the breaker
    /// (default 20; at least 1). With a rate over a [`Window::Count`] window, at most the
    /// window's size: [`build`](Self::build) refuses a larger one, which could never be
    /// reached.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.policy.minimum_calls = n;
        self
    }

    /// How long the breaker stays open the first time (default 5 s; positive, and at most
    /// [`MAX_OPEN_DURATION`](super::MAX_OPEN_DURATION) with the [`jitter`](Self::jitter)
    /// added).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.policy.open_base = duration;
        self
    }

    /// The longest the breaker stays open, however often it reopened (default 5 min; at least
    /// the [`open_duration`](Self::open_duration), and at most
    /// [`MAX_OPEN_DURATION`](super::MAX_OPEN_DURATION) with the [`jitter`](Self::jitter)
    /// added). To keep a breaker open until told otherwise, use
    /// [`Handle::force_open`](super::Handle::force_open).
    pub fn max_open_duration(mut self, duration: Duration) -> Self {
        self.policy.open_max = duration;
        self
    }

    /// The factor the open duration grows by with each consecutive opening (default 2.0; 1.0
    /// keeps it constant). The growth resets when the breaker closes from half-open.
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.policy.multiplier = multiplier;
        self
    }

    /// Lengthen each open duration by a random share of up to `jitter` (in `[0.0, 1.0]`;
    /// default 0), so that many clients do not probe at the same instant.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// Seed the jitter's random numbers (by default seeded from the thread's RNG).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether the breaker reports to `metrics` (default on): calls by outcome, transitions and
    /// the state gauge.
    ///
    /// With metrics on, every call also increments a `metrics` counter; the handle's
    /// [`counters`](super::Handle::counters) are kept either way.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// At most `k` probe calls in flight while half-open (default 1).
    pub fn half_open_probes(mut self, k: u32) -> Self {
        self.policy.half_open_probes = k;
        self
    }

    /// Close after `n` successful probes (default 1; the seed's `success_threshold`). No more
    /// probes are admitted at once than could still be needed.
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.policy.success_threshold = n;
        self
    }

    /// What counts as a failure: a [`Classify`](super::Classify) implementation such as
    /// [`HttpClassifier::server_errors()`](super::HttpClassifier::server_errors) or a closure
    /// `Fn(&Result<Res, E>) -> Outcome`.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2> {
        Builder {
            policy: self.policy,
            hooks: self.hooks,
            name: self.name,
            seed: self.seed,
            #[cfg(feature = "metrics")]
            metrics: self.metrics,
            classifier,
        }
    }

    /// Called on every state transition (`()` for none).
    pub fn on_state_change(mut self, hook: impl OnStateChange) -> Self {
        self.hooks.on_state_change = Box::new(hook);
        self
    }

    /// Called on every rejected call (`()` for none).
    pub fn on_rejected<H: OnRejected>(mut self, hook: H) -> Self {
        self.hooks.on_rejected = if std::any::TypeId::of::<H>() == std::any::TypeId::of::<()>() {
            None
        } else {
            Some(Box::new(hook))
        };
        self
    }

    /// Called on every slow call (`()` for none).
    pub fn on_slow_call(mut self, hook: impl OnSlowCall) -> Self {
        self.hooks.on_slow_call = Box::new(hook);
        self
    }

    fn config(self) -> Result<(Arc<Config>, C), BuildError> {
        self.policy.validate()?;
        Ok((
            Arc::new(Config {
                policy: self.policy,
                hooks: self.hooks,
                name: self.name,
                numbered: Default::default(),
                seed: self.seed,
                #[cfg(feature = "metrics")]
                metrics: self.metrics,
            }),
            self.classifier,
        ))
    }

    /// Validates the policy and makes the service-level layer and its breaker.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first setting found invalid and its value: a zero count,
    /// window or duration; a rate outside `(0.0, 1.0]`; a backoff multiplier below 1.0 or a
    /// jitter outside `[0.0, 1.0]`; a maximum open duration below the open duration, or an
    /// opening longer than [`MAX_OPEN_DURATION`](super::MAX_OPEN_DURATION); more
    /// [`minimum_calls`](Self::minimum_calls) than a count window holds; no trip condition.
    /// Nothing is clamped.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, BuildError> {
        let (config, classifier) = self.config()?;
        let name = config.name_or_default();
        Ok(CircuitBreakerLayer {
            shared: Shared::new(config, name),
            classifier,
        })
    }

    /// Like [`build`](Self::build), also returning a [`Handle`] on the breaker.
    pub fn build_with_handle(self) -> Result<(CircuitBreakerLayer<C>, Handle), BuildError> {
        let layer = self.build()?;
        let handle = layer.handle();
        Ok((layer, handle))
    }

    /// Validates the policy (as [`build`](Self::build) does) and makes an endpoint layer,
    /// which gives every endpoint it wraps a breaker of its own.
    pub fn build_endpoint(self) -> Result<EndpointBreakerLayer<C>, BuildError> {
        let (config, classifier) = self.config()?;
        Ok(EndpointBreakerLayer { config, classifier })
    }
}
