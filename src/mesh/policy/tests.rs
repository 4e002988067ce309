use std::error::Error as _;
use std::time::Duration;

use super::*;
use crate::balance::Strategy;
use crate::breaker::error::BuildError as BreakerBuildError;
use crate::health::outlier::error::BuildError as OutlierBuildError;
use crate::retry::error::BuildError as RetryBuildError;

const FULL: &str = r#"
[defaults]
timeout = "2s"
strategy = { name = "least_requests" }
health_filter = { include_warning = false }

[defaults.retry]
ttl = "15s"
max_retries = 3
retry_ratio = 0.1
statuses = [503]
grpc = false

[defaults.endpoint_breaker]
consecutive_failures = 3
failure_rate = 0.5
slow_call_duration = "150ms"
slow_call_rate = 0.8
window = { time = 10 }
minimum_calls = 5
open_duration = "1s 500ms"
max_open_duration = "1m"

[defaults.outlier]
interval = "500ms"
base_ejection_time = "10s"
max_ejection_percent = 50

[services.orders]
timeout = "5s"
strategy = { name = "ring_hash", hash_header = "x-user-id" }
retry = { max_retries = 1 }
service_breaker = { open_duration = "30s" }

[services.billing]
outlier = { consecutive_5xx = 2 }
"#;

fn full() -> MeshConfig {
    toml::from_str(FULL).unwrap()
}

/// The full chain of an error, as a reporter prints it.
fn chain(e: &PolicyError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn deserializes_toml_with_human_durations() {
    let c = full();
    let d = &c.defaults;
    assert_eq!(d.timeout, Duration::from_secs(2));
    assert_eq!(d.strategy.name, "least_requests");
    assert!(!d.health_filter.include_warning);
    assert_eq!(d.retry.ttl, Duration::from_secs(15));
    assert_eq!(d.retry.max_retries, 3);
    assert_eq!(d.retry.statuses, vec![503]);
    assert!(!d.retry.grpc);
    let b = &d.endpoint_breaker;
    assert_eq!(b.consecutive_failures, Some(3));
    assert_eq!(b.failure_rate, Some(0.5));
    assert_eq!(b.slow_call_duration, Some(Duration::from_millis(150)));
    assert_eq!(b.window, WindowPolicy::Time(10));
    assert_eq!(b.open_duration, Duration::from_millis(1500));
    assert_eq!(b.max_open_duration, Duration::from_secs(60));
    assert_eq!(d.outlier.interval, Duration::from_millis(500));
    // Unnamed fields keep their defaults.
    assert_eq!(d.service_breaker, BreakerPolicy::default());
    assert_eq!(d.outlier.consecutive_5xx, 5);
    c.check().unwrap();
}

#[test]
fn round_trips_through_toml() {
    let c = full();
    let text = toml::to_string(&c).unwrap();
    assert!(text.contains("timeout = \"2s\""), "{text}");
    let back: MeshConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, c);
}

#[test]
fn empty_config_is_the_defaults() {
    let c: MeshConfig = toml::from_str("").unwrap();
    assert_eq!(c, MeshConfig::default());
    assert_eq!(c.policies("anything").unwrap(), Policies::default());
    c.check().unwrap();
}

#[test]
fn unknown_keys_are_refused_by_name() {
    for (text, key) in [
        ("[defaults]\ntimeuot = \"2s\"", "timeuot"),
        ("[defaults.retry]\nmax_retry = 3", "max_retry"),
        ("[services.orders]\nretry = { budget = 3 }", "budget"),
        ("[services.orders.strategy]\nhash = \"x\"", "hash"),
        ("colour = 1", "colour"),
    ] {
        let err = toml::from_str::<MeshConfig>(text).unwrap_err().to_string();
        assert!(
            err.contains(&format!("unknown field `{key}`")),
            "{text}: {err}"
        );
    }
    let err = toml::from_str::<MeshConfig>("[defaults.endpoint_breaker]\nwindow = { calls = 3 }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `calls`"), "{err}");
}

#[test]
fn bad_durations_are_refused() {
    let err = toml::from_str::<MeshConfig>("[defaults]\ntimeout = \"2 parsecs\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeout"), "{err}");
    let err = toml::from_str::<MeshConfig>("[defaults]\ntimeout = 2").unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn overrides_replace_only_the_fields_they_name() {
    let c = full();
    let orders = c.policies("orders").unwrap();
    assert_eq!(orders.timeout, Duration::from_secs(5));
    assert_eq!(orders.strategy.name, "ring_hash");
    assert_eq!(orders.strategy.hash_header.as_deref(), Some("x-user-id"));
    // One retry field replaced, the others from the defaults (not the built-in defaults).
    assert_eq!(orders.retry.max_retries, 1);
    assert_eq!(orders.retry.ttl, Duration::from_secs(15));
    assert_eq!(orders.retry.statuses, vec![503]);
    assert_eq!(
        orders.service_breaker.open_duration,
        Duration::from_secs(30)
    );
    assert_eq!(orders.service_breaker.consecutive_failures, Some(5));
    assert_eq!(orders.endpoint_breaker, c.defaults.endpoint_breaker);
    assert_eq!(orders.outlier, c.defaults.outlier);
    assert!(!orders.health_filter.include_warning);

    let billing = c.policies("billing").unwrap();
    assert_eq!(billing.outlier.consecutive_5xx, 2);
    assert_eq!(billing.outlier.interval, Duration::from_millis(500));
    assert_eq!(billing.strategy.name, "least_requests");
    // A service without overrides gets the defaults.
    assert_eq!(c.policies("users").unwrap(), c.defaults);
}

#[test]
fn a_strategy_override_brings_its_own_hash_header() {
    let c: MeshConfig = toml::from_str(
        r#"
        [defaults]
        strategy = { name = "maglev", hash_header = "x-user-id" }
        [services.a]
        strategy = { name = "p2c" }
        [services.b]
        strategy = { hash_header = "x-tenant" }
        "#,
    )
    .unwrap();
    let a = c.policies("a").unwrap();
    assert_eq!(a.strategy.name, "p2c");
    assert_eq!(a.strategy.hash_header, None);
    let b = c.policies("b").unwrap();
    assert_eq!(b.strategy.name, "maglev");
    assert_eq!(b.strategy.hash_header.as_deref(), Some("x-tenant"));
}

#[test]
fn an_override_can_turn_a_rate_rule_on() {
    let c: MeshConfig =
        toml::from_str("[services.a]\nservice_breaker = { failure_rate = 0.25 }").unwrap();
    let p = c.policies("a").unwrap();
    assert_eq!(p.service_breaker.failure_rate, Some(0.25));
    assert_eq!(p.service_breaker.consecutive_failures, Some(5));
}

#[test]
fn strategy_converts() {
    let p = StrategyPolicy {
        name: "round_robin".into(),
        hash_header: None,
    };
    assert_eq!(p.strategy().unwrap(), Strategy::RoundRobin);
    assert_eq!(p.pick::<()>().unwrap().strategy(), Strategy::RoundRobin);
    for name in ["ring_hash", "maglev"] {
        let p = StrategyPolicy {
            name: name.into(),
            hash_header: Some("x-user-id".into()),
        };
        assert_eq!(p.pick::<()>().unwrap().strategy().name(), name);
    }
    assert_eq!(StrategyPolicy::default().strategy().unwrap(), Strategy::P2c);
}

#[test]
fn bad_strategies_name_the_field() {
    let c: MeshConfig =
        toml::from_str("[services.orders]\nstrategy = { name = \"fastest\" }").unwrap();
    let err = c.policies("orders").unwrap_err();
    assert_eq!(err.path(), "services.orders.strategy.name");
    let text = chain(&err);
    assert!(
        text.starts_with("invalid mesh policy services.orders.strategy.name: unknown load balancing strategy \"fastest\""),
        "{text}"
    );

    let c: MeshConfig = toml::from_str("[defaults]\nstrategy = { name = \"maglev\" }").unwrap();
    let err = c.check().unwrap_err();
    assert_eq!(err.path(), "defaults.strategy.hash_header");
    assert!(
        chain(&err).contains("required by the consistent hashers"),
        "{}",
        chain(&err)
    );

    let c: MeshConfig =
        toml::from_str("[defaults]\nstrategy = { name = \"p2c\", hash_header = \"x-user-id\" }")
            .unwrap();
    let err = c.check().unwrap_err();
    assert_eq!(err.path(), "defaults.strategy.hash_header");
    assert!(
        chain(&err).contains("\"x-user-id\" (only used by"),
        "{}",
        chain(&err)
    );

    let c: MeshConfig = toml::from_str(
        "[defaults]\nstrategy = { name = \"ring_hash\", hash_header = \"bad header\" }",
    )
    .unwrap();
    let err = c.check().unwrap_err();
    assert_eq!(err.path(), "defaults.strategy.hash_header");
    assert!(err
        .source()
        .unwrap()
        .downcast_ref::<http::header::InvalidHeaderName>()
        .is_some());
}

#[test]
fn retry_converts_and_names_bad_fields() {
    RetryPolicy::default().layer().unwrap();
    let c: MeshConfig = toml::from_str("[services.orders]\nretry = { max_retries = 0 }").unwrap();
    let err = c.policies("orders").unwrap_err();
    assert_eq!(err.path(), "services.orders.retry.max_retries");
    let source = err
        .source()
        .unwrap()
        .downcast_ref::<RetryBuildError>()
        .unwrap();
    assert_eq!(source.setting(), "max_retries");
    assert_eq!(
        chain(&err),
        "invalid mesh policy services.orders.retry.max_retries: \
         invalid retry setting max_retries: 0 (must be at least 1)"
    );

    let c: MeshConfig = toml::from_str("[defaults.retry]\nttl = \"2m\"").unwrap();
    assert_eq!(c.check().unwrap_err().path(), "defaults.retry.ttl");
    let c: MeshConfig = toml::from_str("[defaults.retry]\nstatuses = [200]").unwrap();
    assert_eq!(c.check().unwrap_err().path(), "defaults.retry.statuses");
    let c: MeshConfig = toml::from_str("[defaults.retry]\nstatuses = [42]").unwrap();
    let err = c.check().unwrap_err();
    assert_eq!(err.path(), "defaults.retry.statuses");
    assert!(err
        .source()
        .unwrap()
        .downcast_ref::<http::status::InvalidStatusCode>()
        .is_some());
}

#[test]
fn breakers_convert_and_name_bad_fields() {
    let c = full();
    let p = c.policies("orders").unwrap();
    p.endpoint_breaker.endpoint_breaker("orders").unwrap();
    let layer = p.service_breaker.service_breaker("orders").unwrap();
    assert_eq!(layer.handle().name(), "orders");

    for (text, path) in [
        (
            "service_breaker = { consecutive_failures = 0 }",
            "service_breaker.consecutive_failures",
        ),
        (
            "endpoint_breaker = { failure_rate = 1.5 }",
            "endpoint_breaker.failure_rate",
        ),
        (
            "service_breaker = { open_duration = \"0s\" }",
            "service_breaker.open_duration",
        ),
        (
            "service_breaker = { open_duration = \"10m\" }",
            "service_breaker.max_open_duration",
        ),
        (
            "service_breaker = { jitter = 2.0 }",
            "service_breaker.jitter",
        ),
        (
            "service_breaker = { backoff_multiplier = 0.5 }",
            "service_breaker.backoff_multiplier",
        ),
        (
            "service_breaker = { slow_call_rate = 0.5 }",
            "service_breaker.slow_call_rate",
        ),
        (
            "service_breaker = { half_open_probes = 0 }",
            "service_breaker.half_open_probes",
        ),
        (
            "service_breaker = { failure_rate = 0.5, window = { count = 10 } }",
            "service_breaker.minimum_calls",
        ),
    ] {
        let c: MeshConfig = toml::from_str(&format!("[services.orders]\n{text}")).unwrap();
        let err = c.policies("orders").unwrap_err();
        assert_eq!(
            err.path(),
            format!("services.orders.{path}"),
            "{text}: {}",
            chain(&err)
        );
    }

    let err = BreakerPolicy {
        consecutive_failures: Some(0),
        ..BreakerPolicy::default()
    }
    .endpoint_breaker("orders")
    .unwrap_err();
    assert_eq!(err.path(), "consecutive_failures");
    assert_eq!(
        err.source().unwrap().downcast_ref::<BreakerBuildError>(),
        Some(&BreakerBuildError::ZeroCount {
            setting: "consecutive_failures"
        })
    );
}

#[tokio::test]
async fn outlier_converts_and_names_bad_fields() {
    let c = full();
    let p = c.policies("billing").unwrap();
    let layer = p
        .outlier
        .builder("billing")
        .unwrap()
        .build::<u32>()
        .unwrap();
    assert_eq!(layer.handle().name(), "billing");

    for (text, path) in [
        (
            "outlier = { max_ejection_percent = 150 }",
            "outlier.max_ejection_percent",
        ),
        ("outlier = { interval = \"0s\" }", "outlier.interval"),
        (
            "outlier = { max_ejection_time = \"1s\" }",
            "outlier.max_ejection_time",
        ),
        (
            "outlier = { success_rate_stdev_factor = -1.0 }",
            "outlier.success_rate_stdev_factor",
        ),
    ] {
        let c: MeshConfig = toml::from_str(&format!("[services.billing]\n{text}")).unwrap();
        let err = c.policies("billing").unwrap_err();
        assert_eq!(
            err.path(),
            format!("services.billing.{path}"),
            "{text}: {}",
            chain(&err)
        );
        assert!(err.source().unwrap().is::<OutlierBuildError>());
    }
}

#[test]
fn timeout_and_health_filter_convert() {
    let c = full();
    assert_eq!(c.defaults.timeout().unwrap(), Duration::from_secs(2));
    let c: MeshConfig = toml::from_str("[services.a]\ntimeout = \"0s\"").unwrap();
    let err = c.policies("a").unwrap_err();
    assert_eq!(err.path(), "services.a.timeout");
    assert_eq!(
        chain(&err),
        "invalid mesh policy services.a.timeout: 0ns (must be positive)"
    );

    let filter = HealthFilterPolicy {
        include_warning: false,
    };
    let debug = format!("{:?}", filter.discover_builder());
    assert!(debug.contains("include_warning: false"), "{debug}");
}
