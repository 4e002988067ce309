use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tower::retry::budget::TpsBudget;
use tower_layer::Layer;

use crate::retry::error::BuildError;
use crate::retry::policy::{Config, Policy};
use crate::retry::Retry;

/// Builds [`Retry`] services that share one retry budget; see the
/// [module documentation](super).
pub struct RetryLayer {
    pub(crate) policy: Policy,
}

impl Clone for RetryLayer {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
        }
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

impl RetryLayer {
    /// A builder with the defaults: a budget of 20% retries on top of 10 retries per
    /// second over a 10 s window, at most 2 retries per request, on 502, 503 and 504,
    /// gRPC included.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<S: Clone> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy.clone())
    }
}

/// Settings of a [`RetryLayer`], checked by [`build`](Builder::build).
#[derive(Debug, Clone)]
pub struct Builder {
    ttl: Duration,
    min_per_sec: u32,
    retry_ratio: f32,
    max_retries: usize,
    statuses: Vec<StatusCode>,
    grpc: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
            max_retries: 2,
            statuses: vec![
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ],
            grpc: true,
        }
    }
}

impl Builder {
    /// How long a request's deposit counts in the budget (1 to 60 s; default 10 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Retries allowed per second whatever the traffic (default 10; below `i32::MAX`).
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// Retries allowed per request deposited, on top of `min_per_sec` (0.0 to 1000.0;
    /// default 0.2, that is 20% more requests at most).
    pub fn retry_ratio(mut self, ratio: f32) -> Self {
        self.retry_ratio = ratio;
        self
    }

    /// Retries of one request at most (1 or more; default 2).
    pub fn max_retries(mut self, max: usize) -> Self {
        self.max_retries = max;
        self
    }

    /// The response statuses retried for idempotent methods (each 400 to 599, at least
    /// one; default 502, 503, 504).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Whether gRPC requests (`content-type: application/grpc…`) are retried when they
    /// got no response: a connection error, or a trailers-only `UNAVAILABLE` (default
    /// `true`).
    pub fn grpc(mut self, grpc: bool) -> Self {
        self.grpc = grpc;
        self
    }

    /// The layer, or the first invalid setting.
    pub fn build(self) -> Result<RetryLayer, BuildError> {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(BuildError::new(
                crate::retry::error::COMPONENT,
                "ttl",
                self.ttl,
                "must be 1 to 60 seconds",
            ));
        }
        if self.min_per_sec >= i32::MAX as u32 {
            return Err(BuildError::new(
                crate::retry::error::COMPONENT,
                "min_per_sec",
                self.min_per_sec,
                "must be below 2147483647",
            ));
        }
        if !(0.0..=1000.0).contains(&self.retry_ratio) {
            return Err(BuildError::new(
                crate::retry::error::COMPONENT,
                "retry_ratio",
                self.retry_ratio,
                "must be 0.0 to 1000.0",
            ));
        }
        if self.max_retries == 0 {
            return Err(BuildError::new(
                crate::retry::error::COMPONENT,
                "max_retries",
                self.max_retries,
                "must be at least 1",
            ));
        }
        if self.statuses.is_empty() {
            return Err(BuildError::new(
                crate::retry::error::COMPONENT,
                "statuses",
                &self.statuses,
                "must list at least one status",
            ));
        }
        if let Some(s) = self
            .statuses
            .iter()
            .find(|s| !(s.is_client_error() || s.is_server_error()))
        {
            return Err(BuildError::new(
                crate::retry::error::COMPONENT,
                "statuses",
                s,
                "must be 400 to 599",
            ));
        }
        let budget = TpsBudget::new(self.ttl, self.min_per_sec, self.retry_ratio);
        Ok(RetryLayer {
            policy: Policy {
                config: Arc::new(Config {
                    max_retries: self.max_retries,
                    statuses: self.statuses,
                    grpc: self.grpc,
                    budget,
                }),
                retries: 0,
            },
        })
    }
}
