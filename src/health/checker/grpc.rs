//! The gRPC health check: `grpc.health.v1.Health/Check` through `tonic-health`'s client, over
//! one lazily connecting channel per checked instance.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::probe::{chain, Outcome};

/// A gRPC health client for one instance; its channel connects on first use and reconnects
/// by itself.
pub(crate) struct GrpcProber {
    client: Option<HealthClient<Channel>>,
    target: String,
    service: String,
}

impl GrpcProber {
    pub(crate) fn new(authority: &str, service: &str, timeout: Duration) -> Self {
        let target = format!("http://{authority}");
        let client = Endpoint::from_shared(target.clone()).ok().map(|endpoint| {
            HealthClient::new(
                endpoint
                    .connect_timeout(timeout)
                    .tcp_nodelay(true)
                    .connect_lazy(),
            )
        });
        GrpcProber {
            client,
            target,
            service: service.to_owned(),
        }
    }

    /// One `Check` call (without the timeout, which the caller applies).
    pub(crate) async fn probe(&mut self) -> Outcome {
        let Some(client) = self.client.as_mut() else {
            return Outcome::fail(format!("bad gRPC target {}", self.target));
        };
        let request = HealthCheckRequest {
            service: self.service.clone(),
        };
        match client.check(request).await {
            Ok(response) => {
                let status = response.into_inner().status();
                let line = format!("gRPC health {}", status.as_str_name());
                if status == ServingStatus::Serving {
                    Outcome::pass(line)
                } else {
                    Outcome::fail(line)
                }
            }
            Err(status) => Outcome::fail(format!(
                "gRPC health check: {:?}: {}{}",
                status.code(),
                status.message(),
                std::error::Error::source(&status)
                    .map(|s| format!(": {}", chain(s)))
                    .unwrap_or_default()
            )),
        }
    }
}
