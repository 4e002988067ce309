//! Unit tests: settings validation and the ejection-time arithmetic. The rules, readiness and
//! the worker are tested end to end in `tests/outlier`.

use std::time::Duration;

use super::config::Policy;
use super::error::BuildError;
use super::OutlierLayer;

fn refused(builder: super::Builder) -> BuildError {
    builder.build_pair::<u32>().map(|_| ()).unwrap_err()
}

#[test]
fn bad_settings_are_refused_with_the_setting_and_value() {
    let b = OutlierLayer::builder;
    assert_eq!(
        refused(b().interval(Duration::ZERO)),
        BuildError::ZeroDuration {
            setting: "interval"
        }
    );
    assert_eq!(
        refused(b().base_ejection_time(Duration::ZERO)),
        BuildError::ZeroDuration {
            setting: "base_ejection_time"
        }
    );
    let err = refused(
        b().base_ejection_time(Duration::from_secs(60))
            .max_ejection_time(Duration::from_secs(30)),
    );
    assert_eq!(
        err.to_string(),
        "invalid outlier detection ejection times: max_ejection_time 30s is below base_ejection_time 60s"
    );
    for (builder, setting, value) in [
        (b().max_ejection_percent(101), "max_ejection_percent", 101),
        (
            b().enforcing_consecutive_5xx(200),
            "enforcing_consecutive_5xx",
            200,
        ),
        (
            b().enforcing_consecutive_gateway_failure(101),
            "enforcing_consecutive_gateway_failure",
            101,
        ),
        (
            b().enforcing_success_rate(150),
            "enforcing_success_rate",
            150,
        ),
        (
            b().failure_percentage_threshold(101),
            "failure_percentage_threshold",
            101,
        ),
        (
            b().enforcing_failure_percentage(1000),
            "enforcing_failure_percentage",
            1000,
        ),
    ] {
        assert_eq!(
            refused(builder),
            BuildError::PercentOutOfRange { setting, value }
        );
    }
    for (builder, setting) in [
        (b().consecutive_5xx(0), "consecutive_5xx"),
        (
            b().consecutive_gateway_failure(0),
            "consecutive_gateway_failure",
        ),
        (
            b().success_rate_minimum_hosts(0),
            "success_rate_minimum_hosts",
        ),
        (
            b().success_rate_request_volume(0),
            "success_rate_request_volume",
        ),
        (
            b().failure_percentage_minimum_hosts(0),
            "failure_percentage_minimum_hosts",
        ),
        (
            b().failure_percentage_request_volume(0),
            "failure_percentage_request_volume",
        ),
    ] {
        let err = refused(builder);
        assert_eq!(err, BuildError::ZeroCount { setting });
        assert_eq!(
            err.to_string(),
            format!("invalid outlier detection setting {setting}: 0 (must be at least 1)")
        );
    }
    for factor in [f64::NAN, f64::INFINITY, -0.5] {
        let err = refused(b().success_rate_stdev_factor(factor));
        assert!(
            matches!(err, BuildError::InvalidFactor { value } if value.to_bits() == factor.to_bits()),
            "{err}"
        );
        assert!(
            err.to_string().contains("success_rate_stdev_factor"),
            "{err}"
        );
    }
    // A rule that is off is not validated; turning it on again with a setter starts from
    // its defaults.
    assert!(b()
        .without_success_rate()
        .without_failure_percentage()
        .without_consecutive_5xx()
        .without_consecutive_gateway_failure()
        .build_pair::<u32>()
        .is_ok());
    assert!(b()
        .without_success_rate()
        .success_rate_stdev_factor(1.0)
        .build_pair::<u32>()
        .is_ok());
}

#[test]
fn ejection_time_grows_linearly_and_is_capped() {
    let policy = Policy {
        base_ejection_time: Duration::from_secs(30),
        max_ejection_time: Duration::from_secs(100),
        ..Policy::default()
    };
    let times: Vec<_> = (1..=5).map(|n| policy.ejection_time(n).as_secs()).collect();
    assert_eq!(times, [30, 60, 90, 100, 100]);
    assert_eq!(policy.ejection_time(u32::MAX), Duration::from_secs(100));
}
