//! Each rule on its own, on endpoints made with `layer_keyed` and driven by hand.

use std::time::Duration;

use tokio::time::{sleep, Instant};
use tower_mesh::breaker::HttpClassifier;
use tower_mesh::health::outlier::{HttpGateway, OutlierLayer, Reason, Rule};

use super::{calls, is_ready, settle, Backend, TICK};

const INTERVAL: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_ejects_at_the_threshold_and_a_success_ends_the_run() {
    let layer = OutlierLayer::builder()
        .name("orders")
        .classifier(HttpClassifier::server_errors())
        .consecutive_5xx(3)
        .base_ejection_time(Duration::from_secs(30))
        .max_ejection_percent(100)
        .build::<&str>()
        .unwrap();
    let handle = layer.handle();
    let backend = Backend::new();
    let mut svc = layer.layer_keyed(backend.clone(), "a");

    backend.answer(500);
    calls(&mut svc, 2).await;
    backend.answer(404); // not a failure for `server_errors`: ends the run
    calls(&mut svc, 1).await;
    backend.answer(0); // a transport error is a failure
    calls(&mut svc, 1).await;
    backend.answer(502);
    calls(&mut svc, 1).await;
    assert!(!handle.is_ejected(&"a"), "two in a row so far");
    assert!(is_ready(&mut svc));

    let now = Instant::now();
    calls(&mut svc, 1).await;
    let ejection = handle
        .ejection(&"a")
        .expect("ejected on the third in a row");
    assert_eq!(ejection.reason, Reason::Consecutive5xx { failures: 3 });
    assert_eq!(ejection.reason.to_string(), "3 consecutive failures");
    assert_eq!(
        (ejection.since, ejection.until),
        (now, now + Duration::from_secs(30))
    );
    assert_eq!(ejection.times, 1);
    assert!(!is_ready(&mut svc), "an ejected endpoint is not ready");
    let counters = handle.counters();
    assert_eq!(counters.detected.get(Rule::Consecutive5xx), 1);
    assert_eq!(counters.enforced.get(Rule::Consecutive5xx), 1);
    assert_eq!(counters.enforced.total(), 1);
    assert_eq!(handle.ejected(), vec![ejection]);
}

#[tokio::test(start_paused = true)]
async fn consecutive_gateway_failures_count_502_503_504_and_errors_only() {
    let layer = OutlierLayer::builder()
        .classifier(HttpClassifier::server_errors())
        .gateway(HttpGateway)
        .without_consecutive_5xx()
        .consecutive_gateway_failure(3)
        .enforcing_consecutive_gateway_failure(100)
        .max_ejection_percent(100)
        .build::<&str>()
        .unwrap();
    let handle = layer.handle();
    let backend = Backend::new();
    let mut svc = layer.layer_keyed(backend.clone(), "a");

    for (status, run) in [
        (503, 1),
        (502, 2),
        (500, 0),
        (504, 1),
        (0, 2),
        (404, 0),
        (503, 1),
        (503, 2),
    ] {
        backend.answer(status);
        calls(&mut svc, 1).await;
        assert!(
            !handle.is_ejected(&"a"),
            "status {status}: the run is {run}"
        );
    }
    calls(&mut svc, 1).await;
    let ejection = handle
        .ejection(&"a")
        .expect("three gateway failures in a row");
    assert_eq!(
        ejection.reason,
        Reason::ConsecutiveGatewayFailure { failures: 3 }
    );
    assert_eq!(ejection.reason.rule(), Rule::ConsecutiveGatewayFailure);
    assert!(!is_ready(&mut svc));
    let counters = handle.counters();
    assert_eq!(
        counters.detected.get(Rule::Consecutive5xx),
        0,
        "the rule is off"
    );
    assert_eq!(counters.enforced.get(Rule::ConsecutiveGatewayFailure), 1);
}

/// Five endpoints with 100 requests each; one succeeds half the time. Rates 100, 100, 100,
/// 100, 50: mean 90, standard deviation 20, threshold 90 − 1.9 × 20 = 52.
#[tokio::test(start_paused = true)]
async fn success_rate_below_mean_minus_factor_stdevs_with_minimum_hosts() {
    let layer = OutlierLayer::builder()
        .classifier(HttpClassifier::server_errors())
        .interval(INTERVAL)
        .without_consecutive_5xx()
        .without_failure_percentage()
        .max_ejection_percent(100)
        .build::<usize>()
        .unwrap();
    let handle = layer.handle();
    let backends: Vec<Backend> = (0..5).map(|_| Backend::new()).collect();
    let mut svcs: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| layer.layer_keyed(b.clone(), i))
        .collect();
    settle().await;

    for svc in &mut svcs[..4] {
        calls(svc, 100).await;
    }
    backends[4].answer(500);
    calls(&mut svcs[4], 50).await;
    backends[4].answer(200);
    calls(&mut svcs[4], 50).await;
    assert!(
        handle.ejected().is_empty(),
        "evaluated on the interval only"
    );

    sleep(INTERVAL + TICK).await;
    let ejected = handle.ejected();
    assert_eq!(ejected.len(), 1, "{ejected:?}");
    assert_eq!(ejected[0].key, 4);
    match ejected[0].reason {
        Reason::SuccessRate {
            success_rate,
            threshold,
            requests,
        } => {
            assert_eq!((success_rate, requests), (50.0, 100));
            assert!((threshold - 52.0).abs() < 1e-9, "{threshold}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!is_ready(&mut svcs[4]));

    // The next interval: four endpoints have the volume (the fifth is ejected), fewer than
    // `success_rate_minimum_hosts`, so the rule does not run, however bad one of them is.
    backends[3].answer(500);
    for svc in &mut svcs[..4] {
        calls(svc, 100).await;
    }
    sleep(INTERVAL).await;
    assert_eq!(handle.ejected().len(), 1);
    assert_eq!(handle.counters().detected.get(Rule::SuccessRate), 1);
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_above_threshold_with_minimum_hosts_and_volume() {
    let layer = OutlierLayer::builder()
        .classifier(HttpClassifier::server_errors())
        .interval(INTERVAL)
        .without_consecutive_5xx()
        .without_success_rate()
        .failure_percentage_threshold(50)
        .failure_percentage_minimum_hosts(3)
        .failure_percentage_request_volume(10)
        .enforcing_failure_percentage(100)
        .max_ejection_percent(100)
        .build::<usize>()
        .unwrap();
    let handle = layer.handle();
    let backends: Vec<Backend> = (0..4).map(|_| Backend::new()).collect();
    let mut svcs: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| layer.layer_keyed(b.clone(), i))
        .collect();
    settle().await;

    // 0: no failures; 1: exactly 50% (not above); 2: 60%; 3: all failed, below the volume.
    for (i, failures, successes) in [(0, 0, 10), (1, 5, 5), (2, 6, 4), (3, 9, 0)] {
        backends[i].answer(503);
        calls(&mut svcs[i], failures).await;
        backends[i].answer(200);
        calls(&mut svcs[i], successes).await;
    }
    sleep(INTERVAL + TICK).await;
    let ejected = handle.ejected();
    assert_eq!(ejected.len(), 1, "{ejected:?}");
    assert_eq!(ejected[0].key, 2);
    assert_eq!(
        ejected[0].reason,
        Reason::FailurePercentage {
            failure_percent: 60.0,
            threshold: 50,
            requests: 10
        }
    );
    assert_eq!(
        ejected[0].reason.to_string(),
        "failure percentage 60.00% above 50% over 10 requests"
    );

    // Only two endpoints with the volume next time: below the minimum hosts.
    for i in [0, 1] {
        backends[i].answer(503);
        calls(&mut svcs[i], 10).await;
    }
    sleep(INTERVAL).await;
    assert_eq!(handle.ejected().len(), 1);
}

/// Enforcing 0%: outliers are found, logged and counted, and nothing is ejected.
#[tokio::test(start_paused = true)]
async fn enforcing_zero_is_a_dry_run() {
    let layer = OutlierLayer::builder()
        .classifier(HttpClassifier::server_errors())
        .gateway(HttpGateway)
        .interval(INTERVAL)
        .consecutive_5xx(3)
        .enforcing_consecutive_5xx(0)
        // The consecutive gateway rule's enforcing default is 0, as in Envoy.
        .consecutive_gateway_failure(2)
        .enforcing_success_rate(0)
        .max_ejection_percent(100)
        .build::<usize>()
        .unwrap();
    let handle = layer.handle();
    let backends: Vec<Backend> = (0..5).map(|_| Backend::new()).collect();
    let mut svcs: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| layer.layer_keyed(b.clone(), i))
        .collect();
    settle().await;

    for svc in &mut svcs[..4] {
        calls(svc, 100).await;
    }
    backends[4].answer(503);
    calls(&mut svcs[4], 100).await;
    sleep(INTERVAL + TICK).await;

    let counters = handle.counters();
    assert_eq!(counters.detected.get(Rule::ConsecutiveGatewayFailure), 1);
    assert_eq!(counters.detected.get(Rule::Consecutive5xx), 1);
    assert_eq!(counters.detected.get(Rule::SuccessRate), 1);
    // On by default with enforcing 0, as in Envoy: 100% failures is above 85%.
    assert_eq!(counters.detected.get(Rule::FailurePercentage), 1);
    assert_eq!(counters.not_enforced, 4);
    assert_eq!(counters.enforced.total(), 0);
    assert!(handle.ejected().is_empty());
    assert!(is_ready(&mut svcs[4]), "a dry run leaves the endpoint in");
}

/// A partial enforcing percentage ejects about that share of the outliers found (seeded).
#[tokio::test(start_paused = true)]
async fn partial_enforcing_ejects_about_that_share() {
    let layer = OutlierLayer::builder()
        .consecutive_5xx(1)
        .enforcing_consecutive_5xx(30)
        .max_ejection_percent(100)
        .seed(7)
        .build::<usize>()
        .unwrap();
    let handle = layer.handle();
    let backend = Backend::new();
    backend.answer(0);
    let mut svcs: Vec<_> = (0..1_000)
        .map(|i| layer.layer_keyed(backend.clone(), i))
        .collect();
    for svc in &mut svcs {
        calls(svc, 1).await;
    }
    let counters = handle.counters();
    let ejected = counters.enforced.get(Rule::Consecutive5xx);
    assert_eq!(counters.detected.get(Rule::Consecutive5xx), 1_000);
    assert_eq!(counters.not_enforced + ejected, 1_000);
    assert!((250..=350).contains(&ejected), "{ejected} of 1,000 at 30%");
    assert_eq!(handle.ejected().len() as u64, ejected);
}
