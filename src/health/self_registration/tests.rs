//! Settings refused by name and value; the defaults that follow from the heartbeat interval.

use std::time::Duration;

use super::*;

fn builder() -> SelfRegistrationBuilder {
    let instance = Instance::builder("orders", "orders-1")
        .port(8080)
        .build()
        .unwrap();
    SelfRegistration::builder(instance)
}

#[test]
fn bad_settings_are_refused_by_name_and_value() {
    let ms = Duration::from_millis;
    let b = builder;
    let cases = [
        (b().ttl(Duration::ZERO), "ttl", "0ns"),
        (b().ttl(MAX_TTL + ms(1)), "ttl", "86400.001s"),
        (b().heartbeat_fraction(0.0), "heartbeat_fraction", "0"),
        (b().heartbeat_fraction(1.0), "heartbeat_fraction", "1"),
        (b().heartbeat_fraction(-0.5), "heartbeat_fraction", "-0.5"),
        (b().heartbeat_fraction(1.5), "heartbeat_fraction", "1.5"),
        (
            b().heartbeat_fraction(f64::NAN),
            "heartbeat_fraction",
            "NaN",
        ),
        (
            b().heartbeat_fraction(f64::INFINITY),
            "heartbeat_fraction",
            "inf",
        ),
        (
            b().ttl(ms(1)).heartbeat_fraction(1e-12),
            "heartbeat_fraction",
            "0.000000000001",
        ),
        (b().heartbeat_jitter(1.0), "heartbeat_jitter", "1"),
        (b().heartbeat_jitter(-0.1), "heartbeat_jitter", "-0.1"),
        (b().heartbeat_jitter(f64::NAN), "heartbeat_jitter", "NaN"),
        (
            b().backoff(Duration::ZERO, ms(10)),
            "backoff initial",
            "0ns",
        ),
        (b().backoff(ms(100), ms(10)), "backoff max", "10ms"),
        (b().call_timeout(Duration::ZERO), "call_timeout", "0ns"),
        (
            b().shutdown_timeout(Duration::ZERO),
            "shutdown_timeout",
            "0ns",
        ),
    ];
    for (builder, field, value) in cases {
        let err = builder.heartbeat_interval().unwrap_err();
        assert_eq!((err.field(), err.value()), (field, value), "{err}");
    }
    let err = b()
        .heartbeat_fraction(1.5)
        .heartbeat_interval()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid heartbeat_fraction 1.5: must be a number strictly between 0 and 1"
    );
}

#[test]
fn defaults_follow_the_heartbeat_interval() {
    let s = builder().settings().unwrap();
    assert_eq!(s.ttl, Duration::from_secs(10));
    assert_eq!(s.interval, Duration::from_secs(10).mul_f64(1.0 / 3.0));
    assert_eq!(s.backoff_initial, Duration::from_millis(100));
    assert_eq!((s.backoff_max, s.call_timeout), (s.interval, s.interval));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(5));

    // A short lease: the first pause is no longer than the interval.
    let s = builder().ttl(Duration::from_millis(90)).settings().unwrap();
    assert_eq!(s.interval, Duration::from_millis(30));
    assert_eq!(s.backoff_initial, Duration::from_millis(30));

    // The edges are accepted.
    assert!(builder().ttl(Duration::from_millis(1)).settings().is_ok());
    assert!(builder()
        .ttl(MAX_TTL)
        .heartbeat_fraction(0.999)
        .settings()
        .is_ok());
    let d = Duration::from_millis(7);
    let s = builder().backoff(d, d).call_timeout(d).settings().unwrap();
    assert_eq!(
        (s.backoff_initial, s.backoff_max, s.call_timeout),
        (d, d, d)
    );
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter_down_to_half() {
    let mut b = task::Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
    for step in [100, 200, 350, 350] {
        let pause = b.next();
        let step = Duration::from_millis(step);
        assert!(
            pause >= step / 2 && pause <= step,
            "{pause:?} for a step of {step:?}"
        );
    }
    b.reset();
    assert!(b.next() <= Duration::from_millis(100));
}
