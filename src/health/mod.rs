//! Health: active checks shared out across a fleet of checkers through the registry, the
//! self-registration guard for a service process, and passive outlier detection fed by real
//! traffic (feature `health`; the gRPC check also needs `tonic`).
//!
//! ```
//! use tower::ServiceBuilder;
//! let stack = ServiceBuilder::new();
//! # let _ = stack;
//! ```

mod checker;
mod self_registration;
pub use self::checker::{
    Assignment, HealthChecker, HealthCheckerBuilder, HealthCheckerError, HealthCheckerStats,
    CHECKERS_SERVICE,
};
pub use self::self_registration::{
    SelfRegistration, SelfRegistrationBuilder, SelfRegistrationError, SelfRegistrationState,
    SelfRegistrationStatus,
};
pub mod report;
pub use self::report::{service_health, ServiceHealth};
