//! The breaker's policy: when it trips, how long it stays open, how it half-opens.

use std::time::Duration;

use super::error::BuildError;

/// The sliding window over which failure and slow-call rates are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` recorded calls (resilience4j's `COUNT_BASED` window).
    Count(u32),
    /// The calls of the last `n` whole seconds, kept in one bucket per second
    /// (resilience4j's `TIME_BASED` window).
    Time(u32),
}

/// Largest number of concurrent half-open probes and of half-open successes.
pub(crate) const MAX_PROBES: u32 = (1 << 14) - 1;
/// Largest window size, in calls or seconds.
pub(crate) const MAX_WINDOW: u32 = 1 << 20;

/// The longest a breaker may stay open in one opening, jitter included: 100 years (of 365
/// days).
///
/// [`Builder::build`](super::Builder::build) refuses an open duration or a maximum open
/// duration that, lengthened by the largest jitter, exceeds it
/// ([`BuildError::OpenDurationTooLong`]): the end of an opening must be an instant the clock
/// can hold. To keep a breaker open until told otherwise, use
/// [`Handle::force_open`](super::Handle::force_open).
pub const MAX_OPEN_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A validated policy, shared by every breaker built from one builder.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) open_base: Duration,
    pub(crate) open_max: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) success_threshold: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            consecutive_failures: Some(5),
            failure_rate: None,
            slow_call_duration: None,
            slow_call_rate: None,
            window: Window::Count(100),
            minimum_calls: 20,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.0,
            half_open_probes: 1,
            success_threshold: 1,
        }
    }
}

impl Policy {
    /// Whether the rate window must be kept at all.
    pub(crate) fn uses_window(&self) -> bool {
        self.failure_rate.is_some() || self.slow_call_rate.is_some()
    }

    /// The open duration after `openings` earlier consecutive openings, before jitter.
    pub(crate) fn open_duration(&self, openings: u32) -> Duration {
        let factor = self.multiplier.powi(openings.min(1_000) as i32);
        let secs = self.open_base.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.open_max.as_secs_f64() {
            self.open_max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        fn count(setting: &'static str, v: u32, max: u32) -> Result<(), BuildError> {
            if v == 0 {
                Err(BuildError::ZeroCount { setting })
            } else if v > max {
                Err(BuildError::CountTooLarge {
                    setting,
                    value: v.into(),
                    max: max.into(),
                })
            } else {
                Ok(())
            }
        }
        fn rate(setting: &'static str, v: Option<f64>) -> Result<(), BuildError> {
            match v {
                Some(value) if !(value > 0.0 && value <= 1.0) => {
                    Err(BuildError::InvalidRate { setting, value })
                }
                _ => Ok(()),
            }
        }
        if let Some(n) = self.consecutive_failures {
            count("consecutive_failures", n, u32::MAX)?;
        }
        rate("failure_rate", self.failure_rate)?;
        rate("slow_call_rate", self.slow_call_rate)?;
        if self.slow_call_duration == Some(Duration::ZERO) {
            return Err(BuildError::ZeroDuration {
                setting: "slow_call_duration",
            });
        }
        match self.window {
            Window::Count(n) => count("window", n, MAX_WINDOW)?,
            Window::Time(n) => count("window", n, MAX_WINDOW)?,
        }
        count("minimum_calls", self.minimum_calls, u32::MAX)?;
        if self.open_base.is_zero() {
            return Err(BuildError::ZeroDuration {
                setting: "open_duration",
            });
        }
        if self.open_max < self.open_base {
            return Err(BuildError::MaxBelowBase {
                base: self.open_base,
                max: self.open_max,
            });
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(BuildError::InvalidMultiplier {
                value: self.multiplier,
            });
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BuildError::InvalidJitter { value: self.jitter });
        }
        // The base first: a maximum is only reached after openings at the base.
        for (setting, value) in [
            ("open_duration", self.open_base),
            ("max_open_duration", self.open_max),
        ] {
            if value.as_secs_f64() * (1.0 + self.jitter) > MAX_OPEN_DURATION.as_secs_f64() {
                return Err(BuildError::OpenDurationTooLong {
                    setting,
                    value,
                    jitter: self.jitter,
                    max: MAX_OPEN_DURATION,
                });
            }
        }
        count("half_open_probes", self.half_open_probes, MAX_PROBES)?;
        count("success_threshold", self.success_threshold, MAX_PROBES)?;
        if self.consecutive_failures.is_none() && !self.uses_window() {
            return Err(BuildError::NoTripCondition);
        }
        if let Window::Count(window) = self.window {
            if self.uses_window() && self.minimum_calls > window {
                return Err(BuildError::MinimumCallsAboveWindow {
                    minimum_calls: self.minimum_calls,
                    window,
                });
            }
        }
        if self.slow_call_rate.is_some() && self.slow_call_duration.is_none() {
            return Err(BuildError::ZeroDuration {
                setting: "slow_call_duration",
            });
        }
        Ok(())
    }
}
