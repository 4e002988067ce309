//! Who may change things: loopback is open without a token, a token is required wherever it
//! is given (401 without, 403 wrong), and a public address without one is refused.

use std::sync::Arc;

use http::{Method, StatusCode};
use tower_mesh::gateway::admin::{self, AdminAuth, AdminError};

use crate::Admin;

const REGISTER: &str = r#"{"id": "orders-9", "host": "10.0.0.9", "port": 8080}"#;

#[test]
fn a_public_admin_address_without_a_token_is_refused() {
    for addr in ["0.0.0.0:9090", "192.0.2.10:9090", "[::]:9090"] {
        let err = admin::auth_for(addr.parse().unwrap(), None).unwrap_err();
        assert!(
            matches!(err, AdminError::PublicWithoutToken { addr: a } if a == addr.parse().unwrap()),
            "{addr}: {err:?}"
        );
        assert!(err.to_string().contains(addr), "{err}");
        // With a token it starts, and the token is not shown.
        let auth = admin::auth_for(addr.parse().unwrap(), Some("s3cret".into())).unwrap();
        assert!(matches!(auth, AdminAuth::Token(_)));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}

#[tokio::test]
async fn loopback_is_open_without_a_token_by_default() {
    let default = tower_mesh::gateway::config::ListenConfig::default().admin;
    let auth = admin::auth_for(default, None).unwrap();
    assert!(matches!(auth, AdminAuth::Open), "{auth:?}");

    let admin = Admin::start(auth).await;
    let rsp = admin
        .open(Method::POST, "/services/orders/instances", REGISTER)
        .await;
    assert_eq!(rsp.status, StatusCode::CREATED, "{}", rsp.text);
    let rsp = admin
        .open(Method::DELETE, "/services/orders/instances/orders-9", "")
        .await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
}

#[tokio::test]
async fn mutating_routes_need_the_bearer_token() {
    let admin = Admin::start(AdminAuth::Token(Arc::from("s3cret"))).await;
    // In an order where each succeeds once authorized (the heartbeat is a 409: no lease).
    let mutations = [
        (Method::POST, "/services/orders/instances", REGISTER),
        (
            Method::POST,
            "/services/orders/instances/orders-1/heartbeat",
            "",
        ),
        (
            Method::PUT,
            "/services/orders/instances/orders-1/health",
            r#"{"health": "warning"}"#,
        ),
        (
            Method::POST,
            "/services/orders/breaker",
            r#"{"state": "open"}"#,
        ),
        (
            Method::POST,
            "/services/orders/endpoints/orders-1/breaker",
            r#"{"state": "open"}"#,
        ),
        (Method::DELETE, "/services/orders/instances/orders-9", ""),
    ];
    for (method, path, body) in &mutations {
        let rsp = admin.open(method.clone(), path, body).await;
        assert_eq!(rsp.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        let challenge = rsp.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(rsp.json["error"].is_string(), "{}", rsp.text);

        let rsp = admin
            .send(
                method.clone(),
                path,
                Some("Bearer s3cre7"),
                body.to_string(),
            )
            .await;
        assert_eq!(rsp.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert!(rsp.json["error"].is_string(), "{}", rsp.text);
    }
    // Nothing changed.
    let breakers = admin.get("/breakers").await;
    assert_eq!(breakers.json[0]["state"], "closed", "{}", breakers.text);
    assert_eq!(
        admin
            .get("/services/orders")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Another scheme is no bearer token.
    let rsp = admin
        .send(
            Method::POST,
            "/services/orders/instances",
            Some("Basic czNjcmV0"),
            REGISTER,
        )
        .await;
    assert_eq!(rsp.status, StatusCode::UNAUTHORIZED);

    // With the token, each goes through.
    for (method, path, body) in &mutations {
        let rsp = admin
            .send(
                method.clone(),
                path,
                Some("Bearer s3cret"),
                body.to_string(),
            )
            .await;
        assert!(
            rsp.status.is_success() || rsp.status == StatusCode::CONFLICT,
            "{method} {path}: {} {}",
            rsp.status,
            rsp.text
        );
    }

    // Reads need none.
    for path in ["/services", "/services/orders", "/breakers", "/metrics"] {
        assert_eq!(admin.get(path).await.status, StatusCode::OK, "{path}");
    }
}
