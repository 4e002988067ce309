//! Errors of outlier detection: settings the [`Builder`](super::Builder) refuses.
//!
//! ```
//! use tower_mesh::health::outlier::{error::BuildError, OutlierLayer};
//!
//! let err = OutlierLayer::builder()
//!     .max_ejection_percent(150)
//!     .build::<u32>()
//!     .unwrap_err();
//! assert!(matches!(err, BuildError::PercentOutOfRange { setting: "max_ejection_percent", value: 150 }));
//! assert_eq!(
//!     err.to_string(),
//!     "invalid outlier detection setting max_ejection_percent: 150 (must be at most 100)"
//! );
//! ```

use std::time::Duration;

/// A setting the outlier detection [`Builder`](super::Builder) refused, naming the setting and
/// the value given. Nothing is clamped or defaulted in its place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A duration was zero where it must be positive.
    #[error("invalid outlier detection setting {setting}: 0s (must be positive)")]
    ZeroDuration {
        /// The name of the builder setting.
        setting: &'static str,
    },
    /// A count was zero where it must be at least 1.
    #[error("invalid outlier detection setting {setting}: 0 (must be at least 1)")]
    ZeroCount {
        /// The name of the builder setting.
        setting: &'static str,
    },
    /// A percentage was above 100.
    #[error("invalid outlier detection setting {setting}: {value} (must be at most 100)")]
    PercentOutOfRange {
        /// The name of the builder setting.
        setting: &'static str,
        /// The value given.
        value: u32,
    },
    /// The success-rate standard deviation factor was negative, infinite or not a number.
    #[error(
        "invalid outlier detection setting success_rate_stdev_factor: {value} (must be finite and at least 0)"
    )]
    InvalidFactor {
        /// The value given.
        value: f64,
    },
    /// The maximum ejection time was shorter than the base ejection time.
    #[error(
        "invalid outlier detection ejection times: max_ejection_time {max:?} is below base_ejection_time {base:?}"
    )]
    MaxBelowBase {
        /// The base ejection time.
        base: Duration,
        /// The maximum ejection time.
        max: Duration,
    },
}
