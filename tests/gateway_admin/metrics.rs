//! `GET /metrics`: the Prometheus text format, read back by a Prometheus text parser.

use std::collections::HashMap;
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use tower_mesh::gateway::admin::AdminAuth;
use tower_mesh::gateway::metrics::{self, Metrics};

use crate::Admin;

/// Parses `text`, first checking that every line is a comment, blank, or a sample the
/// parser understands, and that no family is declared twice.
fn parse(text: &str) -> Scrape {
    let mut types = HashMap::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Ignored => panic!("not Prometheus text: {line:?}"),
            LineInfo::Type { metric_name, .. } => {
                assert!(
                    types.insert(metric_name.clone(), ()).is_none(),
                    "{metric_name} declared twice"
                );
            }
            _ => {}
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The samples of `metric` whose labels include `labels`.
fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect()
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(scrape, metric, labels);
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let admin = Admin::start(AdminAuth::Open).await;
    // Services of their own, so that other tests recording at the same time (one recorder
    // per process) do not change these counts.
    metrics::record_request("metrics-test", "m-1", 200, Duration::from_millis(3));
    metrics::record_request("metrics-test", "m-1", 200, Duration::from_millis(40));
    metrics::record_request("metrics-test", "m-2", 503, Duration::from_secs(2));
    metrics::record_error("metrics-test", "timeout");
    metrics::record_error("metrics-test", "no_endpoints");
    metrics::record_error("metrics-test", "no_endpoints");
    let rsp = admin
        .open(
            Method::POST,
            "/services/orders/endpoints/orders-2/breaker",
            r#"{"state": "open"}"#,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);

    let rsp = admin.get("/metrics").await;
    assert_eq!(rsp.status, StatusCode::OK);
    let content_type = rsp.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let scrape = parse(&rsp.text);

    let requests = "tower_mesh_gateway_requests_total";
    let ok = [
        ("service", "metrics-test"),
        ("endpoint", "m-1"),
        ("status", "200"),
    ];
    assert_eq!(value(&scrape, requests, &ok), 2.0);
    let failed = [
        ("service", "metrics-test"),
        ("endpoint", "m-2"),
        ("status", "503"),
    ];
    assert_eq!(value(&scrape, requests, &failed), 1.0);
    assert!(scrape.docs.contains_key(requests));

    let latency = find(
        &scrape,
        "tower_mesh_gateway_request_duration_seconds",
        &[("service", "metrics-test"), ("endpoint", "m-1")],
    );
    assert_eq!(latency.len(), 1, "{}", rsp.text);
    let Value::Histogram(buckets) = &latency[0].value else {
        panic!("not a histogram: {:?}", latency[0]);
    };
    let count_le = |le: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == le)
            .unwrap_or_else(|| panic!("no bucket {le}: {buckets:?}"))
            .count
    };
    assert_eq!(count_le(0.001), 0.0);
    assert_eq!(count_le(0.005), 1.0);
    assert_eq!(count_le(0.05), 2.0);
    assert_eq!(count_le(10.0), 2.0);
    assert_eq!(count_le(f64::INFINITY), 2.0);

    let errors = "tower_mesh_gateway_errors_total";
    assert_eq!(
        value(
            &scrape,
            errors,
            &[("service", "metrics-test"), ("kind", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            errors,
            &[("service", "metrics-test"), ("kind", "no_endpoints")]
        ),
        2.0
    );

    // Read from this test's mesh at the scrape.
    let orders = [("service", "orders")];
    assert_eq!(
        value(&scrape, "tower_mesh_service_breaker_state", &orders),
        0.0
    );
    let endpoint = |id| [("service", "orders"), ("endpoint", id)];
    let state = "tower_mesh_endpoint_breaker_state";
    assert_eq!(value(&scrape, state, &endpoint("orders-1")), 0.0);
    assert_eq!(
        value(&scrape, state, &endpoint("orders-2")),
        4.0,
        "forced open"
    );
    assert_eq!(
        value(&scrape, "tower_mesh_endpoints_discovered", &orders),
        2.0
    );
    let ready = value(&scrape, "tower_mesh_endpoints_ready", &orders);
    assert!((1.0..=2.0).contains(&ready), "{ready}");
    assert_eq!(value(&scrape, "tower_mesh_registry_stale", &[]), 0.0);
    for gauge in [
        "tower_mesh_service_breaker_state",
        "tower_mesh_endpoint_breaker_state",
        "tower_mesh_endpoints_ready",
        "tower_mesh_endpoints_discovered",
        "tower_mesh_registry_stale",
    ] {
        assert!(scrape.docs.contains_key(gauge), "{gauge} has no HELP");
    }

    // The crate's own breaker series reach the same recorder.
    assert!(
        !find(
            &scrape,
            "tower_mesh_breaker_calls_total",
            &[("breaker", "orders")]
        )
        .is_empty(),
        "{}",
        rsp.text
    );
}

#[tokio::test]
async fn the_recorder_is_installed_once_per_process() {
    let first = Metrics::install().unwrap();
    let again = Metrics::install().unwrap();
    metrics::record_error("install-test", "upstream");
    for m in [&first, &again] {
        let text = m.handle().render();
        assert!(
            text.contains(
                r#"tower_mesh_gateway_errors_total{service="install-test",kind="upstream"} 1"#
            ),
            "{text}"
        );
    }
}

#[tokio::test]
async fn without_metrics_the_route_is_404() {
    let mesh = tower_mesh::mesh::Mesh::builder()
        .registry_url("memory:")
        .build()
        .await
        .unwrap();
    let app = tower_mesh::gateway::admin::router(mesh, AdminAuth::Open, None, 1024);
    let rsp = tower::ServiceExt::oneshot(
        app,
        http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
}
