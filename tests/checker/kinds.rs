//! Each kind of check against a real server on loopback: HTTP (status, body, a hanging target),
//! TCP, gRPC health; unreachable targets and DNS failures; writes only on transitions.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tower_mesh::health::HealthChecker;
use tower_mesh::instance::{Check, Health, Instance};
use tower_mesh::registry::{MemoryRegistry, Registry};

use crate::counting::Counting;
use crate::servers::{closed_port, grpc_health, Answer, HttpServer};
use crate::{health_of, instance, quick, until_health};

#[tokio::test(start_paused = true)]
async fn http_turns_critical_on_503_and_back_writing_only_transitions() {
    let server = HttpServer::start(Answer::ok("ok")).await;
    let registry = Counting::new();
    let check = quick(Check::http("/healthz").body("ok"));
    registry
        .register(instance("o-1", server.addr.port(), check).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();

    // Ten passing checks of an instance registered passing: no write at all.
    tokio::time::sleep(Duration::from_millis(9_500)).await;
    assert!(checker.stats().checks >= 9, "{:?}", checker.stats());
    assert_eq!(registry.writes(), 0);

    server.set(Answer::status(503));
    let output = until_health(&registry, "o-1", Health::Critical).await;
    assert_eq!(output.as_deref(), Some("HTTP 503 Service Unavailable"));
    tokio::time::sleep(Duration::from_secs(10)).await; // ten more failures
    assert_eq!(registry.writes(), 1);

    // Accepted status, but the body lacks the substring: still failing, no write.
    server.set(Answer::ok("degraded"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(registry.writes(), 1);

    server.set(Answer::ok("all ok"));
    let output = until_health(&registry, "o-1", Health::Passing).await;
    assert_eq!(output.as_deref(), Some("HTTP 200 OK"));
    tokio::time::sleep(Duration::from_secs(10)).await;

    let stats = checker.stats();
    assert_eq!(
        registry.writes(),
        2,
        "two transitions, {} checks",
        stats.checks
    );
    assert_eq!(stats.writes, 2);
    assert!(stats.checks >= 35, "{stats:?}");
    // All checks went over one kept-alive connection's worth of requests (one per check).
    assert_eq!(server.requests(), stats.checks);
    checker.shutdown().await;
}

/// Outlier detection publishes an ejection as `Warning`; the next successful check clears
/// it with one write, and the checker does not write again while nothing changes.
#[tokio::test(start_paused = true)]
async fn a_successful_check_clears_a_published_warning() {
    let server = HttpServer::start(Answer::ok("ok")).await;
    let registry = Counting::new();
    registry
        .register(instance("o-1", server.addr.port(), quick(Check::http("/"))).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(registry.writes(), 0);

    // What `health::outlier::PublishToRegistry` writes for an ejection.
    registry
        .set_health(&crate::svc(), &"o-1".parse().unwrap(), Health::Warning)
        .await
        .unwrap();
    let published = registry.writes();
    let output = until_health(&registry, "o-1", Health::Passing).await;
    assert_eq!(output.as_deref(), Some("HTTP 200 OK"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(registry.writes(), published + 1, "one write clears it");
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Passing);
    checker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn http_body_is_read_up_to_the_limit() {
    // The substring sits past the first 64 KiB: not found.
    let far = format!("{}ok", "x".repeat(64 * 1024));
    let server = HttpServer::start(Answer::ok(&far)).await;
    let registry = MemoryRegistry::new();
    let check = quick(Check::http("/").body("ok"));
    registry
        .register(instance("o-1", server.addr.port(), check).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    let output = until_health(&registry, "o-1", Health::Critical)
        .await
        .unwrap();
    assert_eq!(
        output,
        "HTTP 200 OK: body does not contain \"ok\" in its first 65536 bytes"
    );
    checker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hanging_target_is_cut_at_the_timeout() {
    let server = HttpServer::start(Answer::hang()).await;
    let registry = MemoryRegistry::new();
    let check = quick(Check::http("/"));
    registry
        .register(instance("o-1", server.addr.port(), check).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    let started = tokio::time::Instant::now();
    let output = until_health(&registry, "o-1", Health::Critical).await;
    assert_eq!(output.as_deref(), Some("timed out after 500ms"));
    // Two failures at 0 s and 1 s, each cut at 500 ms.
    assert!(
        started.elapsed() < Duration::from_millis(1_600),
        "{:?}",
        started.elapsed()
    );
    checker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn tcp_turns_critical_when_the_listener_closes_and_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = MemoryRegistry::new();
    registry
        .register(instance("o-1", addr.port(), quick(Check::tcp())).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Passing);
    assert!(checker.stats().checks >= 3);

    drop(listener);
    let output = until_health(&registry, "o-1", Health::Critical)
        .await
        .unwrap();
    assert!(
        output.starts_with(&format!("TCP connect {addr}: ")) && output.contains("refused"),
        "{output}"
    );

    let _listener = TcpListener::bind(addr).await.unwrap();
    let output = until_health(&registry, "o-1", Health::Passing)
        .await
        .unwrap();
    assert_eq!(output, format!("TCP connect {addr}: success"));
    assert_eq!(checker.stats().writes, 2);
    checker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn grpc_turns_critical_on_not_serving_and_back() {
    let (addr, reporter) = grpc_health().await;
    reporter
        .set_service_status("orders.v1.Orders", ServingStatus::Serving)
        .await;
    let registry = MemoryRegistry::new();
    let check = quick(Check::grpc("orders.v1.Orders"));
    registry
        .register(instance("o-1", addr.port(), check).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Passing);
    assert!(checker.stats().checks >= 3);
    assert_eq!(checker.stats().failures, 0);

    reporter
        .set_service_status("orders.v1.Orders", ServingStatus::NotServing)
        .await;
    let output = until_health(&registry, "o-1", Health::Critical).await;
    assert_eq!(output.as_deref(), Some("gRPC health NOT_SERVING"));

    reporter
        .set_service_status("orders.v1.Orders", ServingStatus::Serving)
        .await;
    let output = until_health(&registry, "o-1", Health::Passing).await;
    assert_eq!(output.as_deref(), Some("gRPC health SERVING"));
    checker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn grpc_unknown_service_is_critical_with_the_status() {
    let (addr, _reporter) = grpc_health().await;
    let registry = MemoryRegistry::new();
    registry
        .register(instance("o-1", addr.port(), quick(Check::grpc("no.such.Service"))).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    let output = until_health(&registry, "o-1", Health::Critical)
        .await
        .unwrap();
    assert!(
        output.starts_with("gRPC health check: NotFound"),
        "{output}"
    );
    checker.shutdown().await;
}

/// Real time: the resolver runs on a blocking thread, which a paused clock does not wait for.
#[tokio::test]
async fn unreachable_and_unresolvable_targets_are_critical_with_the_reason() {
    let port = closed_port().await;
    let registry = MemoryRegistry::new();
    let check = || {
        Check::http("/")
            .interval(Duration::from_millis(200))
            .jitter(Duration::ZERO)
            .timeout(Duration::from_millis(150))
            .unhealthy_threshold(1)
            .build()
            .unwrap()
    };
    registry
        .register(instance("refused", port, check()).into())
        .await
        .unwrap();
    let nowhere = Instance::builder("orders", "nowhere")
        .host("no-such-host.invalid")
        .port(80)
        .check(check())
        .build()
        .unwrap();
    registry.register(nowhere.into()).await.unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    let output = until_health(&registry, "refused", Health::Critical)
        .await
        .unwrap();
    assert!(output.contains("Connection refused"), "{output}");
    let output = until_health(&registry, "nowhere", Health::Critical)
        .await
        .unwrap();
    eprintln!("unresolvable host: {output}");
    assert!(
        output.contains("dns error") || output.starts_with("timed out"),
        "{output}"
    );
    checker.shutdown().await;
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_count_checks_by_result_and_latency() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A recorder for this thread only (a current-thread runtime): other tests do not count.
    let _local = metrics::set_default_local_recorder(&recorder);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = MemoryRegistry::new();
    let port = listener.local_addr().unwrap().port();
    registry
        .register(instance("up", port, quick(Check::tcp())).into())
        .await
        .unwrap();
    registry
        .register(instance("down", closed_port().await, quick(Check::tcp())).into())
        .await
        .unwrap();
    let checker = HealthChecker::builder("c-1")
        .standalone()
        .spawn(registry.clone())
        .unwrap();
    until_health(&registry, "down", Health::Critical).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    checker.shutdown().await;
    let recorded = {
        let mut passes = 0;
        let mut fails = 0;
        let mut latencies = 0;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let label = |name: &str| {
                key.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
            };
            match (key.name(), value) {
                ("tower_mesh_health_checks_total", DebugValue::Counter(n)) => {
                    assert_eq!(label("kind").as_deref(), Some("tcp"));
                    match label("result").as_deref() {
                        Some("pass") => passes += n,
                        Some("fail") => fails += n,
                        other => panic!("unexpected result {other:?}"),
                    }
                }
                ("tower_mesh_health_check_duration_seconds", DebugValue::Histogram(v)) => {
                    assert_eq!(label("kind").as_deref(), Some("tcp"));
                    latencies += v.len() as u64;
                }
                (name, _) => panic!("unexpected metric {name}"),
            }
        }
        assert!(
            passes >= 3 && fails >= 3,
            "{passes} passes, {fails} failures"
        );
        assert_eq!(latencies, passes + fails);
        passes + fails
    };
    assert!(recorded >= 6);
}
