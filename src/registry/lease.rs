//! How leases expire: the settings every sweep follows, and the part of a sweep that every
//! backend shares (self-preservation).

use std::time::Duration;

use crate::instance::{InstanceId, ServiceName};

use super::error::ConfigError;

/// How leases expire (Consul's TTL checks, with Eureka's self-preservation), and how often
/// a [`Reaper`](super::Reaper) sweeps. Made with [`LeaseConfig::builder`], which refuses
/// values that cannot work; [`LeaseConfig::default`] is the builder's defaults.
///
/// A sweep that finds a lease lapsed turns the instance `Critical` and stores when it did; the
/// instance is deregistered once the grace period has passed since then (default 60 s), unless
/// a heartbeat brought it back first.
///
/// Self-preservation looks at a window, not at one sweep: when an outage cuts the registry off
/// from its instances, their leases lapse spread over one TTL (a tenth of them per sweep with a
/// 10 s TTL and 1 s sweeps), so a per-sweep share would never trip. Instead each sweep counts
/// every leased instance whose lease is lapsed right now, against all leased instances. In
/// steady state a lapsed instance is gone within the grace period of turning critical, so that
/// count is the lapses of the last TTL + grace; lapses older than that are still there only
/// because self-preservation held them, and they keep counting, so an outage longer than the
/// window cannot empty the registry either. While more than the share (default 50 %) of at
/// least `min_leases` (default 4) leases are lapsed, the sweep turns none critical and
/// deregisters none, and warns; it resumes when heartbeats bring the share back under the
/// limit.
///
/// By default the last 100,000 revisions of history are kept for watchers, and the reaper
/// sweeps every second.
///
/// ```
/// use std::time::Duration;
/// use tower_mesh::registry::LeaseConfig;
///
/// let config = LeaseConfig::builder()
///     .grace(Duration::from_secs(30))
///     .sweep_interval(Duration::from_millis(500))
///     .build()?;
/// assert_eq!(config.grace(), Duration::from_secs(30));
/// # Ok::<_, tower_mesh::registry::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    grace: Duration,
    max_expiry_share: Option<f64>,
    min_leases_for_guard: usize,
    retain_revisions: Option<u64>,
    sweep_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            grace: Duration::from_secs(60),
            max_expiry_share: Some(0.5),
            min_leases_for_guard: 4,
            retain_revisions: Some(100_000),
            sweep_interval: Duration::from_secs(1),
        }
    }
}

impl LeaseConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> LeaseConfigBuilder {
        LeaseConfigBuilder {
            config: LeaseConfig::default(),
        }
    }

    /// How long an instance stays registered (as `Critical`) after it turned critical.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Self-preservation's share and minimum lease count, or `None` when it is off.
    pub fn self_preservation(&self) -> Option<(f64, usize)> {
        self.max_expiry_share
            .map(|share| (share, self.min_leases_for_guard))
    }

    /// How many revisions of history are kept for watchers (`None`: all).
    pub fn retain_revisions(&self) -> Option<u64> {
        self.retain_revisions
    }

    /// How often a [`Reaper`](super::Reaper) sweeps.
    pub fn sweep_interval(&self) -> Duration {
        self.sweep_interval
    }

    /// The grace period in milliseconds; [`LeaseConfigBuilder::build`] checked that it fits.
    pub(crate) fn grace_ms(&self) -> i64 {
        i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether the instance that turned critical at `since_ms` is past its grace period at
    /// `now_ms` (the SQL backends ask `since <= now - grace` the same way: no overflow).
    pub(crate) fn is_overdue(&self, since_ms: i64, now_ms: i64) -> bool {
        since_ms <= now_ms.saturating_sub(self.grace_ms())
    }

    /// Self-preservation over a sweep that counted `lapsed` of `leased` leases lapsed right
    /// now (the window's count): if too many are, empties `sweep` and counts what it held
    /// back in `report`. What the memory and SQL sweeps share.
    pub(crate) fn preserve(
        &self,
        lapsed: usize,
        leased: usize,
        sweep: &mut Sweep,
        report: &mut ReapReport,
    ) {
        let hold_back = match self.max_expiry_share {
            Some(share) => {
                lapsed > 0
                    && leased >= self.min_leases_for_guard
                    && lapsed as f64 > share * leased as f64
            }
            None => false,
        };
        if hold_back {
            report.held_back = sweep.lapsing.len() + sweep.overdue.len();
            sweep.lapsing.clear();
            sweep.overdue.clear();
        }
    }
}

/// What a sweep found before self-preservation: instances whose lease lapsed and that are
/// not critical yet, and critical instances past their grace period.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    pub(crate) lapsing: Vec<(ServiceName, InstanceId)>,
    pub(crate) overdue: Vec<(ServiceName, InstanceId)>,
}

/// Builds a [`LeaseConfig`]; [`build`](LeaseConfigBuilder::build) refuses values that cannot
/// work with a [`ConfigError`] naming the setting and the value.
#[derive(Debug, Clone)]
pub struct LeaseConfigBuilder {
    config: LeaseConfig,
}

impl LeaseConfigBuilder {
    /// How long an instance stays registered (as `Critical`) after it turned critical, that is
    /// after the sweep that found its lease lapsed (default 60 s). Zero deregisters it at the
    /// next sweep after that; it must fit in `i64` milliseconds.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.config.grace = grace;
        self
    }

    /// Self-preservation: while more than `max_share` (0.0..=1.0) of the leased instances have
    /// lapsed leases (see [`LeaseConfig`]), and there are at least `min_leases` leased
    /// instances, turn none critical, deregister none, and warn (default 0.5 and 4).
    pub fn self_preservation(mut self, max_share: f64, min_leases: usize) -> Self {
        self.config.max_expiry_share = Some(max_share);
        self.config.min_leases_for_guard = min_leases;
        self
    }

    /// Turns self-preservation off: every lapsed lease expires.
    pub fn without_self_preservation(mut self) -> Self {
        self.config.max_expiry_share = None;
        self
    }

    /// Keep the last `n` revisions of history for watchers and compact older ones (default
    /// 100,000; at least 1); `None` keeps everything.
    pub fn retain_revisions(mut self, n: Option<u64>) -> Self {
        self.config.retain_revisions = n;
        self
    }

    /// How often a [`Reaper`](super::Reaper) sweeps (default 1 s; must not be zero).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.config.sweep_interval = interval;
        self
    }

    /// The configuration, or the first setting that cannot work.
    pub fn build(self) -> Result<LeaseConfig, ConfigError> {
        let c = self.config;
        if i64::try_from(c.grace.as_millis()).is_err() {
            return Err(ConfigError::new(
                "grace",
                format_args!("{:?}", c.grace),
                "must fit in i64 milliseconds",
            ));
        }
        if let Some(share) = c.max_expiry_share {
            if !(0.0..=1.0).contains(&share) {
                return Err(ConfigError::new(
                    "self_preservation max_share",
                    share,
                    "must be a number in 0.0..=1.0",
                ));
            }
        }
        if c.retain_revisions == Some(0) {
            return Err(ConfigError::new(
                "retain_revisions",
                "Some(0)",
                "must keep at least 1 revision (None keeps everything)",
            ));
        }
        ConfigError::nonzero("sweep_interval", c.sweep_interval)?;
        Ok(c)
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Instances whose lease lapsed in this sweep: now `Critical`.
    pub expired: Vec<(ServiceName, InstanceId)>,
    /// Instances deregistered because the grace period since they turned critical ran out.
    pub deregistered: Vec<(ServiceName, InstanceId)>,
    /// Instances this sweep would have turned critical or deregistered, left alone because
    /// self-preservation held it back.
    pub held_back: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_by_name() {
        let b = LeaseConfig::builder;
        assert_eq!(b().build().unwrap(), LeaseConfig::default());
        let huge = Duration::from_millis(u64::MAX);
        let cases = [
            (b().grace(huge), "grace", format!("{huge:?}")),
            (
                b().self_preservation(f64::NAN, 4),
                "self_preservation max_share",
                "NaN".to_owned(),
            ),
            (
                b().self_preservation(1.5, 4),
                "self_preservation max_share",
                "1.5".to_owned(),
            ),
            (
                b().self_preservation(-0.1, 4),
                "self_preservation max_share",
                "-0.1".to_owned(),
            ),
            (
                b().retain_revisions(Some(0)),
                "retain_revisions",
                "Some(0)".to_owned(),
            ),
            (
                b().sweep_interval(Duration::ZERO),
                "sweep_interval",
                "0ns".to_owned(),
            ),
        ];
        for (builder, field, value) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!((err.field(), err.value()), (field, value.as_str()), "{err}");
        }
        // The edges are accepted.
        let edge = b()
            .grace(Duration::from_millis(i64::MAX as u64))
            .self_preservation(1.0, 0)
            .retain_revisions(Some(1))
            .build()
            .unwrap();
        assert_eq!(edge.grace_ms(), i64::MAX);
        assert!(!edge.is_overdue(0, 1_800_000_000_000), "no overflow");
        assert!(b().grace(Duration::ZERO).build().is_ok());
        assert!(b().self_preservation(0.0, 4).build().is_ok());
    }
}
