//! Builder validation: every invalid setting is refused with its name and value.

use std::time::Duration;

use super::*;

#[test]
fn build_errors_name_the_value() {
    let e = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        error::BuildError::ZeroCount {
            setting: "consecutive_failures"
        }
    );
    let e = CircuitBreakerLayer::builder()
        .failure_rate(1.5)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("1.5"), "{e}");
    let e = CircuitBreakerLayer::builder()
        .open_duration(Duration::from_secs(10))
        .max_open_duration(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert!(matches!(e, error::BuildError::MaxBelowBase { .. }));
    let e = CircuitBreakerLayer::builder()
        .without_consecutive_failures()
        .build()
        .unwrap_err();
    assert_eq!(e, error::BuildError::NoTripCondition);
    let e = CircuitBreakerLayer::builder()
        .half_open_probes(1 << 20)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("1048576"), "{e}");
    let e = CircuitBreakerLayer::builder()
        .jitter(2.0)
        .build()
        .unwrap_err();
    assert_eq!(e, error::BuildError::InvalidJitter { value: 2.0 });
    let e = CircuitBreakerLayer::builder()
        .backoff_multiplier(0.5)
        .build()
        .unwrap_err();
    assert_eq!(e, error::BuildError::InvalidMultiplier { value: 0.5 });
    let e = CircuitBreakerLayer::builder()
        .open_duration(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        error::BuildError::ZeroDuration {
            setting: "open_duration"
        }
    );
}

/// Every invalid setting, one at a time, with the error naming it and its value; nothing is
/// clamped.
#[test]
fn each_invalid_setting_is_refused() {
    use error::BuildError as E;
    let b = CircuitBreakerLayer::builder;
    let secs = Duration::from_secs;
    let cases: Vec<(Builder, E, &str)> = vec![
        (
            b().window(Window::Count(0)).failure_rate(0.5),
            E::ZeroCount { setting: "window" },
            "window: 0",
        ),
        (
            b().window(Window::Time(0)),
            E::ZeroCount { setting: "window" },
            "window: 0",
        ),
        (
            b().minimum_calls(0),
            E::ZeroCount {
                setting: "minimum_calls",
            },
            "minimum_calls: 0",
        ),
        (
            b().success_threshold(0),
            E::ZeroCount {
                setting: "success_threshold",
            },
            "success_threshold: 0",
        ),
        (
            b().half_open_probes(0),
            E::ZeroCount {
                setting: "half_open_probes",
            },
            "half_open_probes: 0",
        ),
        (
            b().slow_call_duration(Duration::ZERO),
            E::ZeroDuration {
                setting: "slow_call_duration",
            },
            "slow_call_duration: 0s",
        ),
        (
            b().slow_calls(Duration::ZERO, 0.5),
            E::ZeroDuration {
                setting: "slow_call_duration",
            },
            "slow_call_duration: 0s",
        ),
        (
            b().open_duration(Duration::ZERO),
            E::ZeroDuration {
                setting: "open_duration",
            },
            "open_duration: 0s",
        ),
        (
            b().max_open_duration(Duration::ZERO),
            E::MaxBelowBase {
                base: secs(5),
                max: Duration::ZERO,
            },
            "max_open_duration: 0ns",
        ),
        (
            b().failure_rate(f64::NAN),
            E::InvalidRate {
                setting: "failure_rate",
                value: f64::NAN,
            },
            "failure_rate: NaN",
        ),
        (
            b().slow_calls(secs(1), 0.0),
            E::InvalidRate {
                setting: "slow_call_rate",
                value: 0.0,
            },
            "slow_call_rate: 0",
        ),
        (
            b().backoff_multiplier(f64::INFINITY),
            E::InvalidMultiplier {
                value: f64::INFINITY,
            },
            "backoff_multiplier: inf",
        ),
        (
            b().jitter(-0.1),
            E::InvalidJitter { value: -0.1 },
            "jitter: -0.1",
        ),
        (
            b().window(Window::Count(1 << 21)),
            E::CountTooLarge {
                setting: "window",
                value: 1 << 21,
                max: 1 << 20,
            },
            "window: 2097152",
        ),
    ];
    for (builder, expected, shown) in cases {
        let e = builder.build().unwrap_err();
        // NaN is not equal to itself: compare the messages as well as the variants.
        if !matches!(expected, E::InvalidRate { value, .. } if value.is_nan()) {
            assert_eq!(e, expected);
        }
        assert_eq!(e.to_string(), expected.to_string());
        assert!(e.to_string().contains(shown), "{e} should show {shown:?}");
    }
}

/// A rate over a count window smaller than `minimum_calls` could never open the breaker:
/// refused, naming both. The same values are fine without a rate (the window is unused), over
/// a time window (which holds any number of calls), and at the window's size.
#[test]
fn minimum_calls_above_a_count_window_is_refused() {
    let e = CircuitBreakerLayer::builder()
        .failure_rate(0.5)
        .window(Window::Count(10))
        .minimum_calls(11)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        error::BuildError::MinimumCallsAboveWindow {
            minimum_calls: 11,
            window: 10
        }
    );
    assert!(e.to_string().contains("minimum_calls: 11"), "{e}");
    assert!(e.to_string().contains("10 calls"), "{e}");
    // The default minimum (20) over a smaller window, through a slow-call rate.
    let e = CircuitBreakerLayer::builder()
        .slow_calls(Duration::from_secs(1), 0.5)
        .window(Window::Count(5))
        .build_endpoint()
        .unwrap_err();
    assert_eq!(
        e,
        error::BuildError::MinimumCallsAboveWindow {
            minimum_calls: 20,
            window: 5
        }
    );
    for ok in [
        CircuitBreakerLayer::builder()
            .window(Window::Count(5))
            .minimum_calls(11),
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .window(Window::Time(2))
            .minimum_calls(1000),
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .window(Window::Count(10))
            .minimum_calls(10),
    ] {
        ok.build().unwrap();
    }
}

/// An opening too long for the clock (the base, the maximum, or the maximum lengthened by
/// the jitter) is refused, naming the setting; [`MAX_OPEN_DURATION`] itself is accepted, and
/// a breaker opening for that long reports when it may half-open.
#[tokio::test(start_paused = true)]
async fn open_durations_that_overflow_are_refused() {
    use error::BuildError as E;
    let too_long = |setting, value, jitter| E::OpenDurationTooLong {
        setting,
        value,
        jitter,
        max: MAX_OPEN_DURATION,
    };
    let e = CircuitBreakerLayer::builder()
        .open_duration(Duration::MAX)
        .max_open_duration(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(e, too_long("open_duration", Duration::MAX, 0.0));
    assert!(e.to_string().contains("open_duration: "), "{e}");
    let e = CircuitBreakerLayer::builder()
        .max_open_duration(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(e, too_long("max_open_duration", Duration::MAX, 0.0));
    // Within the bound alone, past it with the jitter.
    let e = CircuitBreakerLayer::builder()
        .max_open_duration(MAX_OPEN_DURATION)
        .jitter(0.01)
        .build_endpoint()
        .unwrap_err();
    assert_eq!(e, too_long("max_open_duration", MAX_OPEN_DURATION, 0.01));
    assert!(e.to_string().contains("jitter 0.01"), "{e}");
    // A huge multiplier is capped by the maximum, so it cannot overflow.
    let (_, handle) = quick()
        .open_duration(MAX_OPEN_DURATION)
        .max_open_duration(MAX_OPEN_DURATION)
        .backoff_multiplier(f64::MAX)
        .build_with_handle()
        .unwrap();
    for _ in 0..3 {
        let g = handle.shared_generation();
        handle.shared.transition(g, State::Closed, State::Open);
        assert_eq!(
            handle.open_until().unwrap() - tokio::time::Instant::now(),
            MAX_OPEN_DURATION
        );
        handle.reset();
    }
}
