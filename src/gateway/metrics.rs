//! The gateway's Prometheus metrics: one process-wide `metrics` recorder (the
//! `metrics-exporter-prometheus` exporter), what the proxy records per request, and the
//! mesh's state read at each scrape.
//!
//! ```
//! use std::time::Duration;
//! use tower_mesh::gateway::metrics::{self, Metrics};
//! use tower_mesh::mesh::Mesh;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let recorder = Metrics::install()?; // once per process; later calls return the same one
//! let mesh = Mesh::builder().registry_url("memory:").build().await?;
//!
//! // What the proxy does for each request:
//! metrics::record_request("orders", "orders-1", 200, Duration::from_millis(12));
//! metrics::record_error("orders", "timeout");
//!
//! // What `GET /metrics` answers (see `admin::router`):
//! let text = recorder.render(&mesh);
//! assert!(text.contains("tower_mesh_registry_stale 0"));
//! # Ok(())
//! # }
//! ```
//!
//! # Series
//!
//! Recorded by the gateway (through the `metrics` facade):
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `tower_mesh_gateway_requests_total` | counter | `service`, `endpoint` (instance id), `status` |
//! | `tower_mesh_gateway_request_duration_seconds` | histogram | `service`, `endpoint` |
//! | `tower_mesh_gateway_errors_total` | counter | `service`, `kind` (see [`record_error`]) |
//!
//! Read from the [`Mesh`] at each scrape by [`Metrics::render`] (so never stale: an endpoint
//! that left is gone from the next scrape):
//!
//! | name | type | labels | value |
//! | --- | --- | --- | --- |
//! | `tower_mesh_service_breaker_state` | gauge | `service` | the service breaker's state code |
//! | `tower_mesh_endpoint_breaker_state` | gauge | `service`, `endpoint` | each endpoint breaker's state code |
//! | `tower_mesh_endpoints_discovered` | gauge | `service` | endpoints the balancer holds |
//! | `tower_mesh_endpoints_ready` | gauge | `service` | of those, ready to take a request |
//! | `tower_mesh_registry_stale` | gauge | | 1 while the registry cache serves possibly out-of-date data |
//!
//! Breaker state codes are those of the crate's own `tower_mesh_breaker_state`: 0 closed,
//! 1 open, 2 half-open, 3 disabled, 4 forced open. Only services whose client the mesh has
//! built (by a request through the gateway, or [`Mesh::client`]) have breakers and endpoints.
//!
//! Emitted by the crate's parts themselves (feature `metrics`, which `gateway` turns on), and
//! so not repeated here; they reach the same recorder:
//!
//! * breakers (service breakers are named after the service, endpoint breakers
//!   `<service>/<instance id>`): `tower_mesh_breaker_calls_total{breaker,outcome}`,
//!   `tower_mesh_breaker_transitions_total{breaker,from,to}`,
//!   `tower_mesh_breaker_state{breaker}` (set at each transition, where
//!   `tower_mesh_service_breaker_state` is read at each scrape);
//! * balancers: `tower_mesh_balance_requests_total{endpoint}`,
//!   `tower_mesh_balance_endpoint_failures_total{endpoint}`,
//!   `tower_mesh_balance_no_endpoints_total`;
//! * outlier detection: `tower_mesh_outlier_detected_total{detector,rule}`,
//!   `tower_mesh_outlier_ejections_total{detector,rule}`,
//!   `tower_mesh_outlier_returns_total{detector}`, `tower_mesh_outlier_overflow_total{detector}`,
//!   `tower_mesh_outlier_ejected{detector}`;
//! * active health checks: `tower_mesh_health_checks_total{kind,result}`,
//!   `tower_mesh_health_check_duration_seconds{kind}`.
//!
//! Every `*_seconds` histogram has the buckets [`LATENCY_BUCKETS`].
//!
//! # Upkeep
//!
//! The exporter keeps histogram samples until they are folded into buckets. That happens at
//! each [`render`](Metrics::render), every 4096 [`record_request`]s, and at each tick of
//! [`Metrics::upkeep_every`], which a server should spawn so that a process nobody scrapes
//! stays bounded.

use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::breaker::State;
use crate::mesh::Mesh;

/// Counter of proxied requests, by `service`, `endpoint` and `status`.
pub const REQUESTS_TOTAL: &str = "tower_mesh_gateway_requests_total";
/// Histogram of proxied requests' latency in seconds, by `service` and `endpoint`.
pub const REQUEST_DURATION_SECONDS: &str = "tower_mesh_gateway_request_duration_seconds";
/// Counter of failed requests, by `service` and `kind`.
pub const ERRORS_TOTAL: &str = "tower_mesh_gateway_errors_total";
/// Gauge of each service breaker's state code, by `service`.
pub const SERVICE_BREAKER_STATE: &str = "tower_mesh_service_breaker_state";
/// Gauge of each endpoint breaker's state code, by `service` and `endpoint`.
pub const ENDPOINT_BREAKER_STATE: &str = "tower_mesh_endpoint_breaker_state";
/// Gauge of the endpoints each service's balancer holds, by `service`.
pub const ENDPOINTS_DISCOVERED: &str = "tower_mesh_endpoints_discovered";
/// Gauge of the endpoints ready to take a request, by `service`.
pub const ENDPOINTS_READY: &str = "tower_mesh_endpoints_ready";
/// Gauge: 1 while the registry cache serves possibly out-of-date data, else 0.
pub const REGISTRY_STALE: &str = "tower_mesh_registry_stale";

/// The buckets (upper bounds, in seconds) of every `*_seconds` histogram: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The kinds of error [`record_error`] is meant for, as the gateway's proxy names them.
pub const ERROR_KINDS: &[&str] = &[
    "no_endpoints",
    "circuit_open",
    "timeout",
    "discovery",
    "upstream",
    "request",
    "body_too_large",
    "no_route",
];

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Building or installing the Prometheus recorder failed: most often, another `metrics`
    /// recorder is installed in this process already.
    #[error("cannot install the Prometheus metrics recorder")]
    Install(#[source] BuildError),
}

/// The process's Prometheus recorder: installed once as the global `metrics` recorder, then
/// rendered for each scrape. Cheap to clone; every clone (and every later
/// [`install`](Self::install)) is the same recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The recorder installed by this process, if any.
static INSTALLED: Mutex<Option<Metrics>> = Mutex::new(None);

impl Metrics {
    /// Installs the Prometheus recorder as the process's `metrics` recorder, with the
    /// [`LATENCY_BUCKETS`] for every `*_seconds` histogram and a description of each of the
    /// gateway's series. The first call installs it; later calls (say, several gateways
    /// started by one test process) return the same recorder.
    ///
    /// Fails if a recorder of another kind was installed first.
    pub fn install() -> Result<Metrics, MetricsError> {
        let mut slot = crate::sync::lock(&INSTALLED);
        if let Some(metrics) = &*slot {
            return Ok(metrics.clone());
        }
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .map_err(MetricsError::Install)?
            .install_recorder()
            .map_err(MetricsError::Install)?;
        describe();
        let metrics = Metrics { handle };
        *slot = Some(metrics.clone());
        Ok(metrics)
    }

    /// The recorder installed by [`install`](Self::install), if it was.
    pub fn installed() -> Option<Metrics> {
        crate::sync::lock(&INSTALLED).clone()
    }

    /// The exporter's handle, to render on your own.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Folds the histogram samples recorded since the last upkeep into their buckets.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs [`upkeep`](Self::upkeep) every `period`, forever: spawn it next to the server.
    pub fn upkeep_every(&self, period: Duration) -> impl Future<Output = ()> + Send + 'static {
        let metrics = self.clone();
        async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                metrics.upkeep();
            }
        }
    }

    /// The Prometheus text exposition of everything recorded, followed by the gauges read
    /// from `mesh` now (breaker states, endpoints, registry staleness; see the
    /// [module documentation](self)).
    pub fn render(&self, mesh: &Mesh) -> String {
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        render_mesh(&mut text, mesh);
        text
    }
}

/// Records one request proxied to `service`'s instance `endpoint` (its id) that answered
/// `status` after `latency` (until the response head). Goes to whatever `metrics` recorder
/// is installed; a no-op without one.
pub fn record_request(service: &str, endpoint: &str, status: u16, latency: Duration) {
    metrics::counter!(
        REQUESTS_TOTAL,
        "service" => service.to_owned(),
        "endpoint" => endpoint.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        REQUEST_DURATION_SECONDS,
        "service" => service.to_owned(),
        "endpoint" => endpoint.to_owned()
    )
    .record(latency.as_secs_f64());
    upkeep_now_and_then();
}

/// Records one request for `service` that failed with an error of `kind` (one of
/// [`ERROR_KINDS`]: `no_endpoints`, `circuit_open`, `timeout`, `discovery`, `upstream`,
/// `request`, `body_too_large`, `no_route`). A no-op without a recorder.
pub fn record_error(service: &str, kind: &'static str) {
    metrics::counter!(ERRORS_TOTAL, "service" => service.to_owned(), "kind" => kind).increment(1);
}

/// Runs the installed recorder's upkeep every 4096 recorded requests.
fn upkeep_now_and_then() {
    static RECORDED: AtomicU64 = AtomicU64::new(0);
    if RECORDED.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
        if let Some(metrics) = Metrics::installed() {
            metrics.upkeep();
        }
    }
}

/// Describes the gateway's recorded series (the `# HELP` lines).
fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        metrics::Unit::Count,
        "Requests proxied by the gateway, by service, endpoint (instance id) and status."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Latency of proxied requests until the response head, by service and endpoint."
    );
    metrics::describe_counter!(
        ERRORS_TOTAL,
        metrics::Unit::Count,
        "Requests the gateway failed, by service and error kind."
    );
}

/// The state code of `state`, as the crate's `tower_mesh_breaker_state` has it.
pub fn state_code(state: State) -> u8 {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
        State::Disabled => 3,
        // `ForcedOpen`, and any state added later reads as not taking calls.
        _ => 4,
    }
}

const CODES: &str = "0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open";

/// Appends the gauges read from `mesh` to `out`, in the text exposition format.
fn render_mesh(out: &mut String, mesh: &Mesh) {
    let clients = mesh.clients();
    let mut service_states = Vec::with_capacity(clients.len());
    let mut endpoint_states = Vec::new();
    let mut discovered = Vec::with_capacity(clients.len());
    let mut ready = Vec::with_capacity(clients.len());
    for client in &clients {
        let service = client.service();
        service_states.push((
            vec![("service", service)],
            state_code(client.breaker().state()),
        ));
        let endpoints = client.balance().endpoints();
        discovered.push((vec![("service", service)], endpoints.len() as u64));
        let n_ready = endpoints.iter().filter(|e| e.ready).count();
        ready.push((vec![("service", service)], n_ready as u64));
        for (id, handle) in client.endpoint_breakers() {
            endpoint_states.push((
                service.to_owned(),
                id.to_string(),
                state_code(handle.state()),
            ));
        }
    }
    let endpoint_states: Vec<_> = endpoint_states
        .iter()
        .map(|(s, e, code)| {
            (
                vec![("service", s.as_str()), ("endpoint", e.as_str())],
                *code,
            )
        })
        .collect();
    gauge(
        out,
        SERVICE_BREAKER_STATE,
        &format!("State of each service's circuit breaker: {CODES}."),
        &service_states,
    );
    gauge(
        out,
        ENDPOINT_BREAKER_STATE,
        &format!("State of each endpoint's circuit breaker: {CODES}."),
        &endpoint_states,
    );
    gauge(
        out,
        ENDPOINTS_DISCOVERED,
        "Endpoints each service's balancer holds.",
        &discovered,
    );
    gauge(
        out,
        ENDPOINTS_READY,
        "Endpoints of each service ready to take a request.",
        &ready,
    );
    let stale = u64::from(mesh.registry().is_stale());
    gauge(
        out,
        REGISTRY_STALE,
        "1 while the registry cache serves possibly out-of-date data (the registry is unreachable).",
        &[(Vec::new(), stale)],
    );
}

/// Appends the gauge family `name` with `samples` (labels, value); nothing if there are none.
fn gauge<V: fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, V)],
) {
    if samples.is_empty() {
        return;
    }
    // Writing to a `String` does not fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{key}=\"");
                escape_label(out, val);
                out.push('"');
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
    out.push('\n');
}

/// Appends `value` escaped as a label value of the text format (`\`, `"`, newline).
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        gauge(&mut out, "g", "help", &[(vec![("a", "x\"y\\z\nw")], 1)]);
        assert_eq!(
            out,
            "# HELP g help\n# TYPE g gauge\ng{a=\"x\\\"y\\\\z\\nw\"} 1\n\n"
        );
    }

    #[test]
    fn a_family_without_samples_is_left_out() {
        let mut out = String::new();
        gauge::<u8>(&mut out, "g", "help", &[]);
        assert!(out.is_empty());
    }

    #[test]
    fn state_codes_match_the_breakers_own_gauge() {
        for state in [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::Disabled,
            State::ForcedOpen,
        ] {
            assert_eq!(state_code(state), state.code(), "{state}");
        }
    }
}
