//! [`Builder`]: the settings of a [`RegistryDiscover`], checked at `build`.

use std::time::Duration;

use crate::instance::validate::check_zone;
use crate::instance::ServiceName;
use crate::registry::Registry;

use super::error::BuildError;
use super::stream::RegistryDiscover;
use super::MakeEndpoint;

/// Which instances [`RegistryDiscover`] offers to the balancer, and how it retries.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) include_warning: bool,
    pub(crate) prefer_zone: Option<String>,
    pub(crate) max_removal_share: f64,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            include_warning: true,
            prefer_zone: None,
            max_removal_share: 0.5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Refuses the settings no stream can run with.
    fn check(&self) -> Result<(), BuildError> {
        if let Some(zone) = &self.prefer_zone {
            check_zone(zone)?;
        }
        let share = self.max_removal_share;
        if !(0.0..=1.0).contains(&share) {
            // NaN is in no range, so it lands here too.
            return Err(BuildError::InvalidShare { value: share });
        }
        if self.backoff_initial.is_zero() {
            return Err(BuildError::ZeroDuration {
                setting: "backoff_initial",
            });
        }
        if self.backoff_max < self.backoff_initial {
            return Err(BuildError::MaxBelowInitial {
                initial: self.backoff_initial,
                max: self.backoff_max,
            });
        }
        Ok(())
    }
}

/// Builds a [`RegistryDiscover`] with settings other than the defaults.
///
/// The defaults are those of [`RegistryDiscover::new`]: `Warning` instances included, no zone
/// preference, removal guard at 50 %, backoff from 100 ms to 10 s. A builder holds settings
/// only, so one can build the streams of several services. Nothing is checked until
/// [`build`](Builder::build), which refuses a bad value with a [`BuildError`] naming the
/// setting and the value.
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::discover::{Builder, HttpEndpoints};
/// use tower_mesh::registry::MemoryRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_mesh::discover::error::BuildError> {
/// let discover = Builder::new()
///     .include_warning(false)
///     .prefer_zone("eu-west-1a")
///     .backoff(Duration::from_millis(50), Duration::from_secs(5))
///     .build(MemoryRegistry::new(), "orders", HttpEndpoints::new())?
///     .spawn();
/// # drop(discover);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// A builder with the defaults (see [`Builder`]).
    pub fn new() -> Self {
        Builder::default()
    }

    /// Whether instances whose health is `Warning` take traffic (default `true`, as in
    /// Consul's `passing`-or-`warning` default).
    pub fn include_warning(mut self, include: bool) -> Self {
        self.config.include_warning = include;
        self
    }

    /// Prefer instances in `zone`: while at least one eligible instance is in it, only those
    /// are offered; when none is, every eligible instance is (zone-aware routing with fallback).
    /// `zone` must be a valid instance zone (checked at [`build`](Builder::build)).
    pub fn prefer_zone(mut self, zone: impl Into<String>) -> Self {
        self.config.prefer_zone = Some(zone.into());
        self
    }

    /// The mass-disappearance guard: when one update would remove more than `share` (default
    /// 0.5) of the endpoints while the registry is suspected stale, the removals are held and
    /// the endpoints kept until the registry is heard from again. `0.0` holds every such
    /// removal, `1.0` none; [`build`](Builder::build) refuses a value outside `[0.0, 1.0]`.
    pub fn max_removal_share(mut self, share: f64) -> Self {
        self.config.max_removal_share = share;
        self
    }

    /// Retry pauses after a registry error: the first, and the cap they double up to (default
    /// 100 ms and 10 s). [`build`](Builder::build) refuses a zero `initial` and a `max` below
    /// `initial`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max;
        self
    }

    /// The stream for `service` in `registry`, with endpoints made by `factory`.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the setting and the value, for an invalid service name or zone,
    /// a removal share outside `[0.0, 1.0]`, a zero first backoff or a cap below it.
    pub fn build<R, F>(
        self,
        registry: R,
        service: impl AsRef<str>,
        factory: F,
    ) -> Result<RegistryDiscover<R, F>, BuildError>
    where
        R: Registry,
        F: MakeEndpoint,
    {
        let service = ServiceName::new(service.as_ref())?;
        self.config.check()?;
        Ok(RegistryDiscover::from_parts(
            Ok(service),
            registry,
            self.config,
            factory,
        ))
    }

    /// The stream for a service name not checked yet: an invalid one is the stream's first
    /// and only item (what [`RegistryDiscover::new`] does).
    pub(crate) fn build_lazy<R, F>(
        self,
        registry: R,
        service: impl AsRef<str>,
        factory: F,
    ) -> RegistryDiscover<R, F>
    where
        R: Registry,
        F: MakeEndpoint,
    {
        debug_assert!(self.config.check().is_ok());
        RegistryDiscover::from_parts(
            ServiceName::new(service.as_ref()),
            registry,
            self.config,
            factory,
        )
    }
}
