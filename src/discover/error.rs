//! Errors from configuring discovery.
//!
//! A registry outage is never an error of the [`Discover`](tower::discover::Discover) stream
//! (see [`RegistryDiscover`](super::RegistryDiscover)); what can be refused is configuration,
//! at [`Builder::build`](super::Builder::build) and
//! [`balance_channel`][balance-channel] (feature `tonic`), with the setting and the value named.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::discover::{error::BuildError, p2c_pending, Builder};
//! use tower_mesh::instance::Instance;
//! use tower_mesh::registry::MemoryRegistry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let err = Builder::new()
//!     .backoff(Duration::ZERO, Duration::from_secs(10))
//!     .build(MemoryRegistry::new(), "orders", |i: &Instance| i.clone())
//!     .unwrap_err();
//! assert_eq!(err, BuildError::ZeroDuration { setting: "backoff_initial" });
//! assert_eq!(
//!     err.to_string(),
//!     "invalid discovery setting backoff_initial: 0ns (must be positive)"
//! );
//!
//! // Built with valid settings, the stream feeds a balancer.
//! let discover = Builder::new()
//!     .backoff(Duration::from_millis(50), Duration::from_secs(5))
//!     .build(MemoryRegistry::new(), "orders", |_: &Instance| {
//!         tower::service_fn(|req: u32| async move { Ok::<_, tower::BoxError>(req) })
//!     })
//!     .unwrap()
//!     .spawn();
//! let client = ServiceBuilder::new().buffer(64).service(p2c_pending(discover));
//! # drop(client);
//! # }
//! ```
#![cfg_attr(feature = "tonic", doc = "[balance-channel]: super::balance_channel")]
#![cfg_attr(
    not(feature = "tonic"),
    doc = "[balance-channel]: https://docs.rs/tower-mesh/latest/tower_mesh/discover/fn.balance_channel.html"
)]

use std::time::Duration;

use crate::instance::InvalidInput;

/// An invalid discovery setting, refused with the setting and the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The service name, or the zone given to
    /// [`prefer_zone`](super::Builder::prefer_zone), is not valid; the error names the field
    /// and the value.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// A duration was zero where it must be positive.
    #[error("invalid discovery setting {setting}: 0ns (must be positive)")]
    ZeroDuration {
        /// The name of the setting.
        setting: &'static str,
    },
    /// The backoff cap was below its first pause.
    #[error("invalid discovery backoff: max {max:?} is below initial {initial:?}")]
    MaxBelowInitial {
        /// The first pause.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// The mass-disappearance guard's share was outside `[0.0, 1.0]` or not a number.
    #[error("invalid discovery setting max_removal_share: {value} (must be in [0.0, 1.0])")]
    InvalidShare {
        /// The value given.
        value: f64,
    },
    /// A count was zero where it must be at least 1.
    #[error("invalid discovery setting {setting}: 0 (must be at least 1)")]
    ZeroCount {
        /// The name of the setting.
        setting: &'static str,
    },
}
