//! Calls through `Mesh::client`: spread, retries elsewhere, breakers, timeouts, waiting for
//! the first instance, and a strategy changed while requests are in flight.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use tower_mesh::mesh::policy::{MeshConfig, StrategyPolicy};
use tower_mesh::mesh::{Client, Error, Mesh, RequestBody};

use crate::{get, refusing, send, server, service, tally};

async fn mesh(config: &str) -> Mesh {
    let config: MeshConfig = toml::from_str(config).unwrap();
    Mesh::builder()
        .registry_url("memory:")
        .config(config)
        .build()
        .await
        .unwrap()
}

/// The client, once all of `n` instances are ready in its balancer.
async fn ready_client(mesh: &Mesh, name: &str, n: usize) -> Client {
    let client = mesh.client(name).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // A request makes the balancer poll its endpoints.
            let _ = send(&client, get("/warm", 0)).await;
            if client.balance().ready_len() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("instances discovered");
    client
}

fn assert_send_sync_static<T: Send + Sync + Clone + 'static>(_: &T) {}
fn assert_send_static<T: Send + 'static>(_: &T) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_stack_per_service_spreads_calls_from_spawned_tasks() {
    let (a, b, c) = (server("a").await, server("b").await, server("c").await);
    let mesh = mesh(r#"defaults = { strategy = { name = "round_robin" } }"#).await;
    mesh.register_service(&service("orders", &[&a, &b, &c]))
        .await
        .unwrap();
    let client = ready_client(&mesh, "orders", 3).await;
    assert_send_sync_static(&client);

    // Every clone, and every later `client(...)`, is the same stack.
    let again = mesh.client("orders").unwrap();
    assert_eq!(again.balance().len(), 3);

    let mut tasks = Vec::new();
    for i in 0..30 {
        let client = if i % 2 == 0 {
            client.clone()
        } else {
            again.clone()
        };
        let fut = tower::ServiceExt::oneshot(client, get("/orders/42", i));
        assert_send_static(&fut);
        tasks.push(tokio::spawn(fut));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let rsp = t.await.unwrap().expect("answered");
        assert_eq!(rsp.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(rsp.into_body())
            .await
            .unwrap()
            .to_bytes();
        bodies.push(String::from_utf8(body.to_vec()).unwrap());
    }
    let counts = tally(&bodies);
    for name in ["a", "b", "c"] {
        assert!(counts[name] >= 8, "round robin spreads: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_get_is_retried_on_another_server_and_a_post_is_not() {
    let (a, b, c) = (server("a").await, server("b").await, server("c").await);
    b.fail_with(503);
    // Breakers and outlier detection out of the way: only retries are at work.
    let mesh = mesh(
        r#"
        [defaults]
        strategy = { name = "round_robin" }
        endpoint_breaker = { consecutive_failures = 1000 }
        service_breaker = { consecutive_failures = 1000 }
        outlier = { consecutive_5xx = 1000, enforcing_success_rate = 0 }
        retry = { max_retries = 2, min_per_sec = 100 }
        "#,
    )
    .await;
    mesh.register_service(&service("orders", &[&a, &b, &c]))
        .await
        .unwrap();
    let client = ready_client(&mesh, "orders", 3).await;

    let mut bodies = Vec::new();
    for i in 1..=30 {
        let (status, body) = send(&client, get("/orders/42", i)).await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i} retried elsewhere");
        bodies.push(body);
    }
    let counts = tally(&bodies);
    assert!(!counts.contains_key("b"), "b never answers 200: {counts:?}");
    let failed_on_b = b.seen();
    assert!(!failed_on_b.is_empty(), "round robin sent requests to b");
    // Each request b failed was answered by a or c, and b saw it only once.
    for id in &failed_on_b {
        if id == "0" {
            continue;
        }
        let elsewhere = a.seen().contains(id) || c.seen().contains(id);
        assert!(elsewhere, "request {id} went on to another server");
        assert_eq!(failed_on_b.iter().filter(|x| *x == id).count(), 1);
    }

    // POST is not idempotent: b's 503 comes back as it is.
    let mut post_statuses = Vec::new();
    for i in 100..106 {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/orders")
            .header("x-id", i.to_string())
            .body(RequestBody::from("new order"))
            .unwrap();
        post_statuses.push(send(&client, req).await.unwrap().0);
    }
    assert!(post_statuses.contains(&StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_service_breaker_fails_fast_as_503_with_retry_after() {
    let (a, b) = (server("a").await, server("b").await);
    a.fail_with(500);
    b.fail_with(500);
    let mesh = mesh(
        r#"
        [services.orders]
        service_breaker = { consecutive_failures = 3, open_duration = "30s" }
        "#,
    )
    .await;
    mesh.register_service(&service("orders", &[&a, &b]))
        .await
        .unwrap();
    let client = mesh.client("orders").unwrap();
    for i in 0..3 {
        // 500 is a response: the caller gets it, the breaker counts it.
        let (status, _) = send(&client, get("/orders/42", i)).await.unwrap();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let seen = a.seen().len() + b.seen().len();
    let err = send(&client, get("/orders/42", 9)).await.unwrap_err();
    assert!(err.is_circuit_open(), "{err:?}");
    assert_eq!(err.service(), "orders");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    let after = err.retry_after().expect("open until a known time");
    assert!(after <= Duration::from_secs(30) && after > Duration::from_secs(20));
    assert_eq!(
        a.seen().len() + b.seen().len(),
        seen,
        "rejected without a call"
    );
    assert_eq!(client.breaker().state(), tower_mesh::breaker::State::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlives_the_timeout_is_a_504() {
    let a = server("a").await;
    a.hold.store(true, Ordering::SeqCst);
    let mesh = mesh(
        r#"
        [services.orders]
        timeout = "300ms"
        "#,
    )
    .await;
    mesh.register_service(&service("orders", &[&a]))
        .await
        .unwrap();
    let client = ready_client_holding(&mesh, &a).await;
    let err = send(&client, get("/slow", 1)).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    match err {
        Error::Timeout { after, .. } => assert_eq!(after, Some(Duration::from_millis(300))),
        other => panic!("{other:?}"),
    }
    a.gate.add_permits(100);
}

/// The client of `orders` once `a` (which holds requests) is ready.
async fn ready_client_holding(mesh: &Mesh, a: &crate::Server) -> Client {
    a.hold.store(false, Ordering::SeqCst);
    let client = ready_client(mesh, "orders", 1).await;
    a.hold.store(true, Ordering::SeqCst);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_a_502_with_the_cause() {
    let addr = refusing().await;
    let mesh = mesh("").await;
    mesh.register_service(
        &tower_mesh::instance::Microservice::new("orders", "1").endpoint(format!("http://{addr}")),
    )
    .await
    .unwrap();
    let client = mesh.client("orders").unwrap();
    let err = send(&client, get("/orders/42", 1)).await.unwrap_err();
    assert!(err.is_upstream(), "{err:?}");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_of_a_service_nobody_registered_waits_then_fails_with_no_endpoints() {
    let mesh = mesh(
        r#"
        [services.orders]
        timeout = "2s"
        "#,
    )
    .await;
    let client = mesh.client("orders").unwrap();
    let started = tokio::time::Instant::now();
    let err = send(&client, get("/orders/42", 1)).await.unwrap_err();
    assert!(err.is_no_endpoints(), "{err:?}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "waited its timeout"
    );
    assert!(err.to_string().contains("\"orders\""));
}

/// A mesh whose `orders` breaker opens after two failures, and its client after `n` calls
/// that each waited `timeout` and found no endpoint (checked).
async fn calls_finding_no_endpoint(timeout: &str, n: usize) -> (Mesh, Client) {
    let mesh = mesh(&format!(
        r#"
        [services.orders]
        timeout = "{timeout}"
        service_breaker = {{ consecutive_failures = 2, open_duration = "60s" }}
        "#
    ))
    .await;
    let client = mesh.client("orders").unwrap();
    for i in 0..n {
        let err = send(&client, get("/orders/42", i)).await.unwrap_err();
        assert!(err.is_no_endpoints(), "call {i}: {err:?}");
    }
    (mesh, client)
}

/// A call that reaches no endpoint says nothing of the service's health: it fails as
/// `NoEndpoints` however many came before, and the service breaker counts it neither way
/// (it would otherwise open, report `CircuitOpen`, and keep failing calls once an instance
/// registers).
#[tokio::test(start_paused = true)]
async fn calls_that_find_no_endpoint_do_not_open_the_service_breaker() {
    let (_mesh, client) = calls_finding_no_endpoint("1s", 5).await;
    assert_eq!(client.breaker().state(), tower_mesh::breaker::State::Closed);
    let counters = client.breaker().counters();
    assert_eq!(
        (counters.failures, counters.ignored),
        (0, 5),
        "{counters:?}"
    );
}

/// After calls that found no endpoint, the first instance to register is served at once:
/// no breaker opened in the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_instance_after_calls_that_found_none_is_served_at_once() {
    let a = server("a").await;
    let (mesh, _) = calls_finding_no_endpoint("100ms", 3).await;
    mesh.register_service(&service("orders", &[&a]))
        .await
        .unwrap();
    let client = ready_client(&mesh, "orders", 1).await;
    let (status, body) = send(&client, get("/orders/42", 9)).await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(client.breaker().state(), tower_mesh::breaker::State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_made_before_the_first_instance_is_served_once_it_registers() {
    let a = server("a").await;
    let mesh = mesh("").await;
    let client = mesh.client("orders").unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        async move { send(&client, get("/orders/42", 1)).await }
    });
    tokio::task::yield_now().await;
    mesh.register_service(&service("orders", &[&a]))
        .await
        .unwrap();
    let (status, body) = call.await.unwrap().expect("served once registered");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_strategy_switches_without_dropping_requests_in_flight() {
    let (a, b, c) = (server("a").await, server("b").await, server("c").await);
    let mesh = mesh(r#"defaults = { strategy = { name = "round_robin" } }"#).await;
    mesh.register_service(&service("orders", &[&a, &b, &c]))
        .await
        .unwrap();
    let client = ready_client(&mesh, "orders", 3).await;

    for s in [&a, &b, &c] {
        s.hold.store(true, Ordering::SeqCst);
    }
    let in_flight: Vec<_> = (0..9)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { send(&client, get("/orders/42", 100 + i)).await })
        })
        .collect();
    // Wait until all nine reached the servers.
    tokio::time::timeout(Duration::from_secs(10), async {
        let arrived = || {
            [&a, &b, &c]
                .iter()
                .flat_map(|s| s.seen())
                .filter(|id| id.parse::<u32>().unwrap() >= 100)
                .count()
        };
        while arrived() < 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("requests in flight");

    mesh.set_strategy(
        "orders",
        StrategyPolicy {
            name: "ring_hash".into(),
            hash_header: Some("x-user".into()),
        },
    )
    .unwrap();
    for s in [&a, &b, &c] {
        s.hold.store(false, Ordering::SeqCst);
        s.gate.add_permits(100);
    }
    for call in in_flight {
        let (status, _) = call.await.unwrap().expect("in flight across the switch");
        assert_eq!(status, StatusCode::OK);
    }

    let mut bodies = Vec::new();
    for i in 0..12 {
        let req = http::Request::get("/orders/42")
            .header("x-user", "user-7")
            .header("x-id", (200 + i).to_string())
            .body(RequestBody::empty())
            .unwrap();
        bodies.push(send(&client, req).await.unwrap().1);
    }
    assert_eq!(tally(&bodies).len(), 1, "one user, one server: {bodies:?}");
    assert_eq!(
        mesh.policies("orders").unwrap().strategy.name,
        "ring_hash",
        "clients made later use it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_flowing_through_two_thousand_instances_churned() {
    use tower_mesh::instance::Instance;
    use tower_mesh::registry::{Registration, Registry};

    let servers = [server("a").await, server("b").await, server("c").await];
    let mesh = mesh(r#"defaults = { strategy = { name = "least_requests" } }"#).await;
    let registry = mesh.registry().clone();
    let pod = |n: usize| -> Registration {
        let s = &servers[n % 3];
        Instance::builder("orders", format!("pod-{n}"))
            .host("127.0.0.1")
            .port(u32::from(s.addr.port()))
            .build()
            .unwrap()
            .into()
    };
    registry.register(pod(0)).await.unwrap();
    let client = ready_client(&mesh, "orders", 1).await;

    // Pods come and go, 2,000 of them, ten alive at a time, while calls flow.
    let mut failed = 0;
    for n in 1..=2000 {
        registry.register(pod(n)).await.unwrap();
        if n > 10 {
            registry
                .deregister(
                    &"orders".parse().unwrap(),
                    &format!("pod-{}", n - 10).parse().unwrap(),
                )
                .await
                .unwrap();
        }
        if n % 20 == 0 && send(&client, get("/orders/42", n)).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "no call failed during the churn");
    // Everything that left is released: the balancer and the outlier detector hold the
    // pods alive now (pod-0 and the last ten), nothing more.
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.balance().len() != 11
            || client.outlier().endpoints() != 11
            || client.endpoint_breakers().len() != 11
        {
            let _ = send(&client, get("/orders/42", 0)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "balancer {}, detector {} and breakers {} shrink to the eleven pods alive",
            client.balance().len(),
            client.outlier().endpoints(),
            client.endpoint_breakers().len()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_passed_through_and_sent_once() {
    let a = server("a").await;
    let mesh = mesh(
        r#"
        [defaults]
        endpoint_breaker = { consecutive_failures = 1000 }
        outlier = { consecutive_5xx = 1000 }
        "#,
    )
    .await;
    mesh.register_service(&service("orders", &[&a]))
        .await
        .unwrap();
    let client = ready_client(&mesh, "orders", 1).await;

    // Three chunks arrive as one body.
    let chunks =
        futures_util::stream::iter(["one ", "two ", "three"].map(|c| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(c)))
        }));
    let req = Request::put("/orders/42")
        .header("x-id", "1")
        .body(RequestBody::stream(http_body_util::StreamBody::new(chunks)))
        .unwrap();
    let (status, body) = send(&client, req).await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a one two three"));

    // A failed PUT with a whole body is tried again (here on the only server); a streamed
    // one cannot be, and is sent once.
    a.fail_with(503);
    let whole = Request::put("/orders/42")
        .header("x-id", "2")
        .body(RequestBody::from("whole"))
        .unwrap();
    assert_eq!(
        send(&client, whole).await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let chunks = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(bytes::Bytes::from("streamed")),
    )]);
    let streamed = Request::put("/orders/42")
        .header("x-id", "3")
        .body(RequestBody::stream(http_body_util::StreamBody::new(chunks)))
        .unwrap();
    assert_eq!(
        send(&client, streamed).await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let seen = a.seen();
    assert_eq!(
        seen.iter().filter(|id| *id == "2").count(),
        3,
        "1 + 2 retries"
    );
    assert_eq!(seen.iter().filter(|id| *id == "3").count(), 1, "sent once");
}
