use std::time::Duration;

use super::*;
use crate::instance::Instance;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The field and the message of a refused check.
fn refused(b: CheckBuilder) -> (Field, String) {
    let e = b.build().expect_err("the check should be refused");
    (e.field(), e.to_string())
}

#[test]
fn defaults_are_resolved_at_build() {
    let c = Check::http("/healthz").build().unwrap();
    assert_eq!(c.interval(), secs(10));
    assert_eq!(c.jitter(), secs(1));
    assert_eq!(c.timeout(), secs(2));
    assert_eq!(c.unhealthy_interval(), secs(10));
    assert_eq!((c.healthy_threshold(), c.unhealthy_threshold()), (2, 3));
    assert_eq!(c.port(), None);
    let CheckKind::Http(h) = c.kind() else {
        panic!("{c:?}")
    };
    assert_eq!(h.method(), http::Method::GET);
    assert_eq!(h.path().as_str(), "/healthz");
    assert_eq!(h.statuses().len(), 1);
    assert_eq!(h.statuses()[0].to_string(), "200-299");
    assert_eq!(h.body(), None);
    assert!(h.accepts(200) && h.accepts(299) && !h.accepts(300) && !h.accepts(199));

    // A short interval brings the default timeout and jitter down with it.
    let c = Check::tcp().interval(ms(1000)).build().unwrap();
    assert_eq!((c.timeout(), c.jitter()), (ms(500), ms(100)));
    let c = Check::tcp().interval(ms(5)).build().unwrap();
    assert_eq!((c.timeout(), c.jitter()), (ms(2), ms(0)));
    assert_eq!(c.interval_for(true), ms(5));
    let c = Check::tcp().interval(ms(2)).build().unwrap();
    assert_eq!((c.timeout(), c.jitter()), (ms(1), ms(0)));
    // ... and so does a short unhealthy interval.
    let c = Check::tcp().unhealthy_interval(ms(1000)).build().unwrap();
    assert_eq!((c.timeout(), c.jitter()), (ms(500), ms(100)));
}

#[test]
fn every_knob_is_kept() {
    let c = Check::http("/status?full=1")
        .method(http::Method::HEAD)
        .statuses([200..=204, 304..=304])
        .body("ready")
        .port(9090)
        .interval(secs(5))
        .jitter(ms(250))
        .timeout(ms(1500))
        .unhealthy_interval(secs(2))
        .healthy_threshold(1)
        .unhealthy_threshold(5)
        .build()
        .unwrap();
    assert_eq!(c.port(), Some(9090));
    assert_eq!(c.interval_for(false), secs(5));
    assert_eq!(c.interval_for(true), secs(2));
    assert_eq!(c.jitter(), ms(250));
    assert_eq!(c.timeout(), ms(1500));
    assert_eq!((c.healthy_threshold(), c.unhealthy_threshold()), (1, 5));
    let CheckKind::Http(h) = c.kind() else {
        panic!("{c:?}")
    };
    assert_eq!(h.method(), http::Method::HEAD);
    assert_eq!(h.path().query(), Some("full=1"));
    assert!(h.accepts(204) && h.accepts(304) && !h.accepts(205));
    assert_eq!(h.body(), Some("ready"));
    assert_eq!(c.to_builder().build().unwrap(), c);

    let g = Check::grpc("orders.v1.Orders").build().unwrap();
    assert!(matches!(g.kind(), CheckKind::Grpc(s) if s.service() == "orders.v1.Orders"));
    assert_eq!(g.kind().as_str(), "grpc");
    let whole = Check::grpc("").build().unwrap();
    assert!(matches!(whole.kind(), CheckKind::Grpc(s) if s.service().is_empty()));
    assert_eq!(Check::tcp().build().unwrap().kind(), &CheckKind::Tcp);
}

#[test]
fn bad_timing_names_the_field_and_value() {
    let cases: Vec<(CheckBuilder, Field, &str)> = vec![
        (
            Check::tcp().interval(ms(0)),
            Field::CheckInterval,
            "invalid check interval 0ns: must be more than zero",
        ),
        (
            Check::tcp().interval(ms(1)),
            Field::CheckInterval,
            "invalid check interval 1ms: must be at least 2ms, to leave room for a timeout of at least 1ms",
        ),
        (
            Check::tcp().interval(Duration::from_micros(1500)),
            Field::CheckInterval,
            "invalid check interval 1.5ms: must be a whole number of milliseconds",
        ),
        (
            Check::tcp().interval(secs(86_401)),
            Field::CheckInterval,
            "invalid check interval 86401s: must be at most 24h",
        ),
        (
            Check::tcp().unhealthy_interval(ms(0)),
            Field::CheckUnhealthyInterval,
            "invalid check unhealthy_interval 0ns: must be more than zero",
        ),
        (
            Check::tcp().interval(secs(1)).timeout(secs(1)),
            Field::CheckTimeout,
            "invalid check timeout 1s: must be less than the check interval",
        ),
        (
            Check::tcp().unhealthy_interval(secs(1)).timeout(secs(1)),
            Field::CheckTimeout,
            "invalid check timeout 1s: must be less than the check unhealthy_interval",
        ),
        (
            Check::tcp().timeout(ms(0)),
            Field::CheckTimeout,
            "invalid check timeout 0ns: must be more than zero",
        ),
        (
            Check::tcp().timeout(Duration::from_nanos(10)),
            Field::CheckTimeout,
            "invalid check timeout 10ns: must be a whole number of milliseconds",
        ),
        (
            Check::tcp().interval(secs(2)).jitter(secs(2)),
            Field::CheckJitter,
            "invalid check jitter 2s: must be less than the check interval and unhealthy_interval",
        ),
        (
            Check::tcp().unhealthy_interval(secs(3)).jitter(secs(4)),
            Field::CheckJitter,
            "invalid check jitter 4s: must be less than the check interval and unhealthy_interval",
        ),
        (
            Check::tcp().healthy_threshold(0),
            Field::CheckHealthyThreshold,
            "invalid check healthy_threshold 0: must be in 1..=1000",
        ),
        (
            Check::tcp().unhealthy_threshold(1001),
            Field::CheckUnhealthyThreshold,
            "invalid check unhealthy_threshold 1001: must be in 1..=1000",
        ),
        (
            Check::tcp().port(0),
            Field::CheckPort,
            "invalid check port 0: must be in 1..=65535",
        ),
        (
            Check::tcp().port(70_000),
            Field::CheckPort,
            "invalid check port 70000: must be in 1..=65535",
        ),
    ];
    for (builder, field, message) in cases {
        assert_eq!(refused(builder), (field, message.to_owned()));
    }
}

#[test]
fn bad_http_and_grpc_fields_name_the_field_and_value() {
    let long_path = format!("/{}", "a".repeat(MAX_CHECK_PATH_LEN));
    let cases: Vec<(CheckBuilder, Field, &str)> = vec![
        (
            Check::http("healthz"),
            Field::CheckPath,
            r#"invalid check path "healthz": must start with '/'"#,
        ),
        (
            Check::http(""),
            Field::CheckPath,
            r#"invalid check path "": must start with '/'"#,
        ),
        (
            Check::http("/health z"),
            Field::CheckPath,
            r#"invalid check path "/health z": is not a valid path and query (spaces and control characters are not allowed)"#,
        ),
        (
            Check::http("/h#top"),
            Field::CheckPath,
            r#"invalid check path "/h#top": must not have a fragment"#,
        ),
        (
            Check::http(long_path),
            Field::CheckPath,
            "must be at most 1024 bytes",
        ),
        (
            Check::http("/").statuses([]),
            Field::CheckStatus,
            "invalid check status range none: must accept at least one status range",
        ),
        (
            Check::http("/").statuses([200..=299, 600..=700]),
            Field::CheckStatus,
            "invalid check status range 600-700: statuses must be in 100..=599",
        ),
        (
            Check::http("/").statuses([99..=200]),
            Field::CheckStatus,
            "invalid check status range 99-200: statuses must be in 100..=599",
        ),
        (
            Check::http("/").statuses([std::ops::RangeInclusive::new(300, 200)]),
            Field::CheckStatus,
            "invalid check status range 300-200: the first status must not be above the last",
        ),
        (
            Check::http("/").statuses((0..17).map(|i| 200 + i..=200 + i)),
            Field::CheckStatus,
            "invalid check status range 17 ranges: must have at most 16 ranges",
        ),
        (
            Check::http("/").body(""),
            Field::CheckBody,
            r#"invalid check body substring "": must not be empty"#,
        ),
        (
            Check::http("/").body("x".repeat(MAX_CHECK_BODY_LEN + 1)),
            Field::CheckBody,
            "must be at most 1024 bytes",
        ),
        (
            Check::http("/").method(http::Method::CONNECT),
            Field::CheckMethod,
            r#"invalid check method "CONNECT": must not be CONNECT"#,
        ),
        (
            Check::grpc("orders v1"),
            Field::CheckService,
            r#"invalid check grpc service "orders v1": must not contain whitespace or control characters"#,
        ),
        (
            Check::grpc("s".repeat(MAX_GRPC_SERVICE_LEN + 1)),
            Field::CheckService,
            "must be at most 256 bytes",
        ),
    ];
    for (builder, field, message) in cases {
        let (f, m) = refused(builder);
        assert_eq!(f, field, "{m}");
        if message.starts_with("invalid") {
            assert_eq!(m, message);
        } else {
            assert!(m.ends_with(message), "{m}");
        }
    }
    // A valid path at the limit is fine.
    Check::http(format!("/{}", "a".repeat(MAX_CHECK_PATH_LEN - 1)))
        .build()
        .unwrap();
}

#[test]
fn serialized_form_is_flat_with_milliseconds() {
    let c = Check::http("/healthz").body("ok").build().unwrap();
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "kind": "http", "method": "GET", "path": "/healthz", "statuses": ["200-299"],
            "body": "ok", "interval_ms": 10000, "jitter_ms": 1000, "timeout_ms": 2000,
            "unhealthy_interval_ms": 10000, "healthy_threshold": 2, "unhealthy_threshold": 3
        })
    );
    assert_eq!(serde_json::from_value::<Check>(json).unwrap(), c);

    let g = Check::grpc("orders").port(9000).build().unwrap();
    let back: Check = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
    assert_eq!(back, g);

    // Written by hand: omitted values take the defaults, then are written out.
    let tcp: Check = serde_json::from_str(r#"{"kind":"tcp","interval_ms":3000}"#).unwrap();
    assert_eq!(tcp, Check::tcp().interval(secs(3)).build().unwrap());
    let statuses: Check =
        serde_json::from_str(r#"{"kind":"http","path":"/","statuses":["204","500-503"]}"#).unwrap();
    let CheckKind::Http(h) = statuses.kind() else {
        panic!()
    };
    assert!(h.accepts(204) && h.accepts(502) && !h.accepts(200));
}

#[test]
fn deserializing_validates() {
    for (json, needle) in [
        (
            r#"{"kind":"tcp","interval_ms":0}"#,
            "invalid check interval 0ns",
        ),
        (
            r#"{"kind":"tcp","path":"/healthz"}"#,
            r#"invalid check path "/healthz": only an http check has a path"#,
        ),
        (
            r#"{"kind":"grpc","statuses":["200"]}"#,
            "invalid check status range 200: only an http check has statuses",
        ),
        (
            r#"{"kind":"http","path":"/","service":"x"}"#,
            "only a grpc check has a service",
        ),
        (
            r#"{"kind":"http"}"#,
            r#"invalid check path "": is required for an http check"#,
        ),
        (
            r#"{"kind":"http","path":"/","method":"GE T"}"#,
            r#"invalid check method "GE T": is not a valid HTTP method"#,
        ),
        (
            r#"{"kind":"http","path":"/","statuses":["2xx"]}"#,
            r#"invalid check status range "2xx": must be a status like 204 or a range like 200-299"#,
        ),
        (r#"{"kind":"udp"}"#, "unknown variant `udp`"),
    ] {
        let err = serde_json::from_str::<Check>(json).unwrap_err().to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn status_ranges_parse_and_print() {
    let r: StatusRange = "200-299".parse().unwrap();
    assert_eq!((r.lo(), r.hi()), (200, 299));
    assert_eq!(r.to_string(), "200-299");
    let one: StatusRange = "204".parse().unwrap();
    assert_eq!(one.to_string(), "204");
    assert!(one.contains(204) && !one.contains(205));
    for bad in [
        "",
        "-",
        "200-",
        "-299",
        "+200",
        "2xx",
        "200-299-300",
        "70000",
    ] {
        let e = bad.parse::<StatusRange>().unwrap_err();
        assert_eq!(e.field(), Field::CheckStatus, "{bad}");
    }
    assert_eq!(
        "599-100".parse::<StatusRange>().unwrap_err().reason(),
        "the first status must not be above the last"
    );
}

#[test]
fn an_instance_carries_its_check_and_last_check() {
    let check = Check::http("/healthz").build().unwrap();
    let i = Instance::builder("orders", "orders-1")
        .port(8080)
        .check(check.clone())
        .build()
        .unwrap();
    assert_eq!(i.check(), Some(&check));
    assert_eq!(i.last_check(), None);
    let i = i.with_last_check(Some(LastCheck::new("HTTP 200 OK", 1_800_000_000_000)));
    assert_eq!(i.last_check().unwrap().output(), "HTTP 200 OK");
    assert_eq!(
        i.last_check().unwrap().checked_at(),
        std::time::UNIX_EPOCH + secs(1_800_000_000)
    );
    // A check or its output is not a change in how the instance is reached.
    let plain = Instance::builder("orders", "orders-1")
        .port(8080)
        .build()
        .unwrap();
    assert!(!i.differs_besides_health(&plain));
    assert_eq!(i.to_builder().build().unwrap(), i);
    assert_eq!(i.to_builder().no_check().build().unwrap().check(), None);

    let json = serde_json::to_string(&i).unwrap();
    assert!(json.contains(r#""check":{"kind":"http""#), "{json}");
    assert!(
        json.contains(r#""last_check":{"output":"HTTP 200 OK""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Instance>(&json).unwrap(), i);
    // Without either, the serialized form is as before.
    assert!(!serde_json::to_string(&plain).unwrap().contains("check"));
    // A bad check in an instance's JSON refuses the instance.
    let bad = json.replace(r#""path":"/healthz""#, r#""path":"healthz""#);
    let err = serde_json::from_str::<Instance>(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains(r#"invalid check path "healthz""#), "{err}");
}

#[test]
fn last_check_output_is_bounded() {
    let at_limit = LastCheck::new("a".repeat(MAX_CHECK_OUTPUT), 1);
    assert_eq!(at_limit.output().len(), MAX_CHECK_OUTPUT);
    assert!(!at_limit.output().ends_with("..."));
    // Cut at a character boundary: 'é' is two bytes.
    let long = LastCheck::new("é".repeat(MAX_CHECK_OUTPUT), 1);
    assert!(long.output().len() <= MAX_CHECK_OUTPUT);
    assert!(
        long.output().ends_with("é..."),
        "{}",
        &long.output()[4080..]
    );
    // A stored one past the bound is refused, not cut.
    let json = format!(
        r#"{{"output":"{}","checked_at_ms":1}}"#,
        "a".repeat(MAX_CHECK_OUTPUT + 1)
    );
    let err = serde_json::from_str::<LastCheck>(&json).unwrap_err();
    assert!(err.to_string().contains("invalid check output"), "{err}");
    assert_eq!(
        LastCheck::new("x", -1_000).checked_at(),
        std::time::UNIX_EPOCH - secs(1)
    );
}
