//! The JSON routes: what they list, what they change, and how they refuse.

use http::{Method, StatusCode};
use serde_json::json;
use tower_mesh::gateway::admin::AdminAuth;
use tower_mesh::instance::Health;

use crate::{Admin, MAX_BODY};

#[tokio::test]
async fn validation_errors_are_400_naming_the_field_and_the_value() {
    let admin = Admin::start(AdminAuth::Open).await;
    let register = "/services/orders/instances";
    let cases: &[(&str, &str, &str, &str)] = &[
        // (path, body, field, value)
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 0}"#,
            "port",
            "0",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 70000}"#,
            "port",
            "70000",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": "80"}"#,
            "port",
            "80",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": -1}"#,
            "port",
            "-1",
        ),
        (
            register,
            r#"{"id": "o 1", "host": "10.0.0.1", "port": 80}"#,
            "id",
            "o 1",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "bad host!", "port": 80}"#,
            "host",
            "bad host!",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80, "scheme": "ftp"}"#,
            "scheme",
            "ftp",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80, "weight": 2000000}"#,
            "weight",
            "2000000",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80, "ttl": "soon"}"#,
            "ttl",
            "soon",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80, "ttl": "48h"}"#,
            "ttl",
            "172800s",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80, "metadata": {"a": 1}}"#,
            "metadata.a",
            "1",
        ),
        (
            register,
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80, "colour": "red"}"#,
            "colour",
            "red",
        ),
        (register, r#"{"id": "o-1", "port": 80}"#, "host", ""),
        (register, r#"[1, 2]"#, "body", "[1,2]"),
        (register, r#"{"id": "o-1", "#, "body", r#"{"id": "o-1", "#),
        (
            "/services/Orders!/instances",
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80}"#,
            "service",
            "Orders!",
        ),
    ];
    for (path, body, field, value) in cases {
        let rsp = admin.open(Method::POST, path, body).await;
        assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{body}: {}", rsp.text);
        assert_eq!(rsp.blames(), (*field, *value), "{body}: {}", rsp.text);
        assert!(
            rsp.json["error"].as_str().unwrap().contains(field),
            "{}",
            rsp.text
        );
    }

    let rsp = admin
        .open(
            Method::PUT,
            "/services/orders/instances/orders-1/health",
            r#"{"health": "sick"}"#,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{}", rsp.text);
    assert_eq!(rsp.blames(), ("health", "sick"));

    let rsp = admin
        .open(
            Method::POST,
            "/services/orders/breaker",
            r#"{"state": "ajar"}"#,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{}", rsp.text);
    assert_eq!(rsp.blames(), ("state", "ajar"));

    let rsp = admin
        .open(Method::DELETE, "/services/orders/instances/bad%20id", "")
        .await;
    assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{}", rsp.text);
    assert_eq!(rsp.blames(), ("id", "bad id"));

    let rsp = admin.get("/services/NOPE!").await;
    assert_eq!(rsp.status, StatusCode::BAD_REQUEST, "{}", rsp.text);
    assert_eq!(rsp.blames(), ("service", "NOPE!"));

    // Nothing was registered.
    assert_eq!(
        admin.get("/services").await.json,
        json!([{
            "service": "orders", "instances": 2,
            "passing": 2, "warning": 0, "critical": 0, "maintenance": 0,
        }])
    );
}

#[tokio::test]
async fn unknown_services_and_instances_are_404() {
    let admin = Admin::start(AdminAuth::Open).await;
    for rsp in [
        admin.get("/services/payments").await,
        admin.get("/services/payments/instances").await,
        admin.get("/services/payments/health").await,
        admin
            .open(
                Method::POST,
                "/services/payments/breaker",
                r#"{"state": "open"}"#,
            )
            .await,
        admin
            .open(
                Method::POST,
                "/services/payments/endpoints/p-1/breaker",
                r#"{"state": "open"}"#,
            )
            .await,
    ] {
        assert_eq!(rsp.status, StatusCode::NOT_FOUND, "{}", rsp.text);
        assert_eq!(rsp.blames(), ("service", "payments"), "{}", rsp.text);
        assert!(rsp.json["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown service"));
    }
    for rsp in [
        admin
            .open(Method::DELETE, "/services/orders/instances/orders-7", "")
            .await,
        admin
            .open(
                Method::POST,
                "/services/orders/instances/orders-7/heartbeat",
                "",
            )
            .await,
        admin
            .open(
                Method::PUT,
                "/services/orders/instances/orders-7/health",
                r#"{"health": "passing"}"#,
            )
            .await,
    ] {
        assert_eq!(rsp.status, StatusCode::NOT_FOUND, "{}", rsp.text);
        assert_eq!(rsp.blames(), ("id", "orders-7"), "{}", rsp.text);
    }
    let rsp = admin
        .open(
            Method::POST,
            "/services/orders/endpoints/orders-7/breaker",
            r#"{"state": "open"}"#,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::NOT_FOUND, "{}", rsp.text);
    assert_eq!(rsp.blames(), ("id", "orders-7"));

    // A heartbeat for an instance registered without a lease conflicts with how it was
    // registered.
    let rsp = admin
        .open(
            Method::POST,
            "/services/orders/instances/orders-1/heartbeat",
            "",
        )
        .await;
    assert_eq!(rsp.status, StatusCode::CONFLICT, "{}", rsp.text);
    assert_eq!(rsp.blames(), ("id", "orders-1"));

    let rsp = admin.get("/services/orders/instances/orders-7").await;
    assert_eq!(rsp.status, StatusCode::NOT_FOUND, "{}", rsp.text);
    assert_eq!(rsp.blames(), ("id", "orders-7"));

    let rsp = admin.get("/no/such/route").await;
    assert_eq!(rsp.status, StatusCode::NOT_FOUND, "{}", rsp.text);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let admin = Admin::start(AdminAuth::Open).await;
    let metadata: serde_json::Map<_, _> = (0..200)
        .map(|i| (format!("key-{i}"), json!("some value")))
        .collect();
    let body =
        json!({"id": "o-1", "host": "10.0.0.1", "port": 80, "metadata": metadata}).to_string();
    assert!(body.len() > MAX_BODY);
    let rsp = admin
        .open(Method::POST, "/services/orders/instances", &body)
        .await;
    assert_eq!(rsp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", rsp.text);
    assert!(rsp.json["error"].is_string(), "{}", rsp.text);

    let big_state = format!(r#"{{"state": "{}"}}"#, "x".repeat(MAX_BODY));
    let rsp = admin
        .open(Method::POST, "/services/orders/breaker", &big_state)
        .await;
    assert_eq!(rsp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", rsp.text);

    // Under the limit, the same route works.
    let rsp = admin
        .open(
            Method::POST,
            "/services/orders/instances",
            r#"{"id": "o-1", "host": "10.0.0.1", "port": 80}"#,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::CREATED, "{}", rsp.text);
}

#[tokio::test]
async fn lists_services_instances_and_health() {
    let admin = Admin::start(AdminAuth::Open).await;
    let rsp = admin
        .open(
            Method::POST,
            "/services/payments/instances",
            r#"{"id": "pay-1", "host": "10.0.0.5", "port": 9000, "scheme": "grpc", "version": "2.0.0",
                "weight": 50, "zone": "eu-1b", "metadata": {"canary": "true"}, "ttl": "30s"}"#,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::CREATED, "{}", rsp.text);
    assert_eq!(
        (&rsp.json["service"], &rsp.json["id"]),
        (&json!("payments"), &json!("pay-1"))
    );
    assert!(rsp.json["revision"].as_u64().unwrap() > 0);

    let rsp = admin
        .open(
            Method::PUT,
            "/services/orders/instances/orders-2/health",
            r#"{"health": "critical", "output": "connect: connection refused"}"#,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);

    let rsp = admin.get("/services").await;
    assert_eq!(
        rsp.json,
        json!([
            {"service": "orders", "instances": 2, "passing": 1, "warning": 0, "critical": 1, "maintenance": 0},
            {"service": "payments", "instances": 1, "passing": 1, "warning": 0, "critical": 0, "maintenance": 0},
        ]),
        "{}",
        rsp.text
    );

    let rsp = admin.get("/services/payments").await;
    assert_eq!(rsp.status, StatusCode::OK);
    let pay = &rsp.json[0];
    for (key, value) in [
        ("service", json!("payments")),
        ("id", json!("pay-1")),
        ("host", json!("10.0.0.5")),
        ("port", json!(9000)),
        ("scheme", json!("grpc")),
        ("version", json!("2.0.0")),
        ("weight", json!(50)),
        ("zone", json!("eu-1b")),
        ("metadata", json!({"canary": "true"})),
        ("health", json!("passing")),
    ] {
        assert_eq!(pay[key], value, "{key}: {}", rsp.text);
    }
    let one = admin.get("/services/payments/instances/pay-1").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(&one.json, pay);

    // A lease: heartbeats are accepted.
    let rsp = admin
        .open(
            Method::POST,
            "/services/payments/instances/pay-1/heartbeat",
            "",
        )
        .await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
    assert!(rsp.json.get("revision").is_some(), "{}", rsp.text);

    let rsp = admin.get("/services/orders/health").await;
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(rsp.json["service"], "orders");
    assert_eq!(rsp.json["counts"]["passing"], 1, "{}", rsp.text);
    assert_eq!(rsp.json["counts"]["critical"], 1, "{}", rsp.text);
    assert!(
        rsp.text.contains("connect: connection refused"),
        "{}",
        rsp.text
    );

    // Deregistered, it is gone.
    let rsp = admin
        .open(Method::DELETE, "/services/payments/instances/pay-1", "")
        .await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
    assert_eq!(
        admin.get("/services/payments").await.status,
        StatusCode::NOT_FOUND
    );
    let orders = admin.mesh.discover_service("orders").await.unwrap();
    assert_eq!(orders[1].health(), Health::Critical);
}

#[tokio::test]
async fn breakers_are_listed_and_forced() {
    let admin = Admin::start(AdminAuth::Open).await;
    let rsp = admin.get("/breakers").await;
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(rsp.json[0]["service"], "orders", "{}", rsp.text);
    assert_eq!(rsp.json[0]["state"], "closed");
    let endpoints = rsp.json[0]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{}", rsp.text);
    for (endpoint, id) in endpoints.iter().zip(["orders-1", "orders-2"]) {
        assert_eq!(endpoint["instance"], id);
        assert_eq!(endpoint["state"], "closed");
        assert_eq!(endpoint["ready"], true);
        assert_eq!(endpoint["ejected"], json!(null));
    }

    let force = |state: &'static str| format!(r#"{{"state": "{state}"}}"#);
    for (asked, state) in [
        ("open", "forced_open"),
        ("disabled", "disabled"),
        ("closed", "closed"),
    ] {
        let rsp = admin
            .open(Method::POST, "/services/orders/breaker", &force(asked))
            .await;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
        assert_eq!(rsp.json["state"], state);
        assert_eq!(
            admin
                .mesh
                .client("orders")
                .unwrap()
                .breaker()
                .state()
                .as_str(),
            state
        );
        assert_eq!(admin.get("/breakers").await.json[0]["state"], state);
    }

    let rsp = admin
        .open(
            Method::POST,
            "/services/orders/endpoints/orders-2/breaker",
            &force("open"),
        )
        .await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
    assert_eq!(rsp.json["state"], "forced_open");
    let rsp = admin.get("/breakers").await;
    let endpoints = &rsp.json[0]["endpoints"];
    assert_eq!(endpoints[0]["state"], "closed", "{}", rsp.text);
    assert_eq!(endpoints[1]["state"], "forced_open", "{}", rsp.text);

    let rsp = admin
        .open(
            Method::POST,
            "/services/orders/endpoints/orders-2/breaker",
            &force("closed"),
        )
        .await;
    assert_eq!(rsp.json["state"], "closed", "{}", rsp.text);
}
