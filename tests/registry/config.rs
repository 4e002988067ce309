//! Settings that cannot work are refused when built, with the setting and the value named;
//! nothing is clamped.

use super::*;
use tower_mesh::registry::{CachedOptions, ConfigError, LeaseConfig};

fn config_error(err: Error) -> ConfigError {
    match err {
        Error::Config(e) => e,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn sql_registry_builder() {
    let zero = Duration::ZERO;
    let second = Duration::from_secs(1);
    let b = || SqlRegistry::builder("sqlite::memory:");
    let cases = [
        (b().poll_interval(zero), "poll_interval", "0ns"),
        (b().fallback_poll(zero), "fallback_poll", "0ns"),
        (b().acquire_timeout(zero), "acquire_timeout", "0ns"),
        (b().max_connections(0), "max_connections", "0"),
        (b().backoff(zero, second), "backoff initial", "0ns"),
        (b().backoff(second * 2, second), "backoff max", "1s"),
    ];
    for (builder, field, value) in cases {
        let e = config_error(builder.connect().await.unwrap_err());
        assert_eq!((e.field(), e.value()), (field, value), "{e}");
        assert!(e.to_string().contains(&format!("{field} {value}")), "{e}");
    }
    // The smallest working values are accepted.
    let ms = Duration::from_millis(1);
    b().poll_interval(ms)
        .fallback_poll(ms)
        .acquire_timeout(second)
        .max_connections(1)
        .backoff(ms, ms)
        .connect()
        .await
        .unwrap();
}

#[test]
fn lease_config() {
    let cases = [
        (
            LeaseConfig::builder().grace(Duration::from_secs(u64::MAX)),
            "grace",
        ),
        (
            LeaseConfig::builder().self_preservation(f64::NAN, 4),
            "self_preservation max_share",
        ),
        (
            LeaseConfig::builder().self_preservation(2.0, 4),
            "self_preservation max_share",
        ),
        (
            LeaseConfig::builder().retain_revisions(Some(0)),
            "retain_revisions",
        ),
        (
            LeaseConfig::builder().sweep_interval(Duration::ZERO),
            "sweep_interval",
        ),
    ];
    for (builder, field) in cases {
        let e = builder.build().unwrap_err();
        assert_eq!(e.field(), field, "{e}");
    }
    let config = LeaseConfig::builder()
        .grace(Duration::ZERO)
        .self_preservation(1.0, 0)
        .retain_revisions(None)
        .build()
        .unwrap();
    assert_eq!(config.grace(), Duration::ZERO);
    assert_eq!(config.self_preservation(), Some((1.0, 0)));
}

#[tokio::test]
async fn cached_options() {
    let e = config_error(
        Cached::with_options(
            MemoryRegistry::new(),
            CachedOptions::default().log_retention(0),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.field(), e.value()), ("log_retention", "0"));
    // A zero write wait is allowed: writes then do not wait for their own change.
    let cache = Cached::with_options(
        MemoryRegistry::new(),
        CachedOptions::default()
            .log_retention(1)
            .write_wait(Duration::ZERO),
    )
    .await
    .unwrap();
    cache
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
}

#[test]
fn memory_registry_retention() {
    let e = MemoryRegistry::with_options(Default::default(), 0).unwrap_err();
    assert_eq!((e.field(), e.value()), ("retention", "0"));
    assert!(MemoryRegistry::with_options(Default::default(), 1).is_ok());
}
