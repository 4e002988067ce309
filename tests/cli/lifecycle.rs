//! register → list → show → health → health --set → deregister, against SQLite and
//! PostgreSQL.

use serde_json::json;
use tower_mesh::gateway::cli::CliError;

use crate::{fails, json, ok, support, TempDir};

#[tokio::test]
async fn lifecycle_sqlite() {
    let dir = TempDir::new("lifecycle");
    lifecycle(&dir.sqlite_url()).await;
}

#[tokio::test]
async fn lifecycle_postgres() {
    let base = std::env::var("TOWER_MESH_TEST_POSTGRES")
        .expect("TOWER_MESH_TEST_POSTGRES must be set (CI sets it; see .ci/run)");
    lifecycle(&support::fresh_database(&base).await).await;
}

/// The cells of each line of a table.
fn cells(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

async fn lifecycle(url: &str) {
    // An empty registry.
    assert_eq!(ok(url, &["list"]).await, "no services registered\n");
    assert_eq!(json(url, &["list"]).await, json!({ "services": [] }));

    // register
    let out = ok(
        url,
        &[
            "register",
            "orders",
            "orders-1",
            "--host",
            "10.0.0.7",
            "--port",
            "8080",
            "--version",
            "1.4.2",
            "--zone",
            "eu-west-1a",
            "--metadata",
            "team=payments",
            "--metadata",
            "tier=gold",
        ],
    )
    .await;
    assert!(
        out.starts_with("registered orders/orders-1 at http://10.0.0.7:8080 (revision "),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "no lease, no lease line: {out}");
    let reg = json(
        url,
        &[
            "register", "orders", "orders-2", "--host", "10.0.0.8", "--port", "9090", "--scheme",
            "grpc", "--weight", "50", "--ttl", "1h",
        ],
    )
    .await;
    assert_eq!(reg["service"], "orders");
    assert_eq!(reg["id"], "orders-2");
    assert_eq!(reg["address"], "grpc://10.0.0.8:9090");
    assert_eq!(reg["replaced"], false);
    assert_eq!(reg["ttl_ms"], 3_600_000);
    let first = reg["revision"].as_u64().unwrap();
    // Registering again replaces, and says so; the lease is explained.
    let out = ok(
        url,
        &[
            "register", "orders", "orders-2", "--host", "10.0.0.8", "--port", "9090", "--scheme",
            "grpc", "--weight", "50", "--ttl", "1h",
        ],
    )
    .await;
    assert!(
        out.contains("replacing the instance registered before"),
        "{out}"
    );
    assert!(
        out.contains("lease 1h: the instance turns critical unless heartbeated"),
        "{out}"
    );
    ok(
        url,
        &[
            "register",
            "users",
            "users-1",
            "--host",
            "users.internal",
            "--port",
            "80",
        ],
    )
    .await;

    // list
    let table = ok(url, &["list"]).await;
    assert_eq!(
        table.lines().next().unwrap(),
        "SERVICE  INSTANCES  PASSING  WARNING  CRITICAL  MAINTENANCE"
    );
    assert_eq!(
        cells(&table)[1..],
        [
            vec!["orders", "2", "2", "0", "0", "0"],
            vec!["users", "1", "1", "0", "0", "0"]
        ]
    );
    // Aligned: the numbers end under the ends of their headers.
    let header_end = table.lines().next().unwrap().find("INSTANCES").unwrap() + "INSTANCES".len();
    for line in table.lines().skip(1) {
        assert_ne!(line.as_bytes()[header_end - 1], b' ', "{table}");
        assert_eq!(line.as_bytes()[header_end], b' ', "{table}");
    }
    let list = json(url, &["list"]).await;
    assert_eq!(
        list,
        json!({ "services": [
            { "service": "orders", "instances": 2, "passing": 2, "warning": 0, "critical": 0,
              "maintenance": 0, "corrupt": [] },
            { "service": "users", "instances": 1, "passing": 1, "warning": 0, "critical": 0,
              "maintenance": 0, "corrupt": [] },
        ] })
    );

    // show
    let table = ok(url, &["show", "orders"]).await;
    assert_eq!(
        cells(&table),
        [
            vec!["ID", "ADDRESS", "SCHEME", "VERSION", "WEIGHT", "ZONE", "HEALTH", "METADATA"],
            vec![
                "orders-1",
                "10.0.0.7:8080",
                "http",
                "1.4.2",
                "100",
                "eu-west-1a",
                "passing",
                "team=payments,tier=gold"
            ],
            vec![
                "orders-2",
                "10.0.0.8:9090",
                "grpc",
                "0.0.0",
                "50",
                "-",
                "passing",
                "-"
            ],
        ]
    );
    let show = json(url, &["show", "orders"]).await;
    assert_eq!(show["service"], "orders");
    assert!(show["revision"].as_u64().unwrap() > first);
    assert_eq!(show["corrupt"], json!([]));
    let o1 = &show["instances"][0];
    assert_eq!(
        (
            &o1["id"],
            &o1["host"],
            &o1["port"],
            &o1["scheme"],
            &o1["version"]
        ),
        (
            &json!("orders-1"),
            &json!("10.0.0.7"),
            &json!(8080),
            &json!("http"),
            &json!("1.4.2")
        )
    );
    assert_eq!(o1["zone"], "eu-west-1a");
    assert_eq!(
        o1["metadata"],
        json!({ "team": "payments", "tier": "gold" })
    );
    assert_eq!(o1["health"], "passing");
    assert_eq!(show["instances"][1]["weight"], 50);

    // health, before any check
    let out = ok(url, &["health", "orders"]).await;
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "service orders: 2 instances, 2 passing, 0 warning, 0 critical, 0 maintenance (revision "
            .to_owned()
            + &show["revision"].to_string()
            + ")"
    );
    assert_eq!(
        cells(&lines.collect::<Vec<_>>().join("\n")),
        [
            vec!["ID", "ADDRESS", "HEALTH", "CHECK", "CHECKED", "OUTPUT"],
            vec!["orders-1", "10.0.0.7:8080", "passing", "-", "-", "-"],
            vec!["orders-2", "10.0.0.8:9090", "passing", "-", "-", "-"],
        ]
    );

    // health --set, with and without check output
    let out = ok(
        url,
        &[
            "health",
            "orders",
            "orders-2",
            "--set",
            "critical",
            "--output",
            "HTTP 503 Service Unavailable",
        ],
    )
    .await;
    assert!(
        out.starts_with("set orders/orders-2 to critical (revision "),
        "{out}"
    );
    let set = json(url, &["health", "orders", "orders-1", "--set", "warning"]).await;
    assert_eq!(
        (&set["service"], &set["id"], &set["health"], &set["output"]),
        (
            &json!("orders"),
            &json!("orders-1"),
            &json!("warning"),
            &json!(null)
        )
    );

    let report = json(url, &["health", "orders"]).await;
    assert_eq!(report["service"], "orders");
    assert_eq!(report["stale"], false);
    assert_eq!(report["revision"], set["revision"]);
    assert_eq!(
        report["counts"],
        json!({ "passing": 0, "warning": 1, "critical": 1, "maintenance": 0, "ejected": 0 })
    );
    assert_eq!(report["instances"][1]["id"], "orders-2");
    assert_eq!(report["instances"][1]["health"], "critical");
    assert_eq!(
        report["instances"][1]["output"],
        "HTTP 503 Service Unavailable"
    );
    assert!(report["instances"][1]["checked_at_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(report["instances"][0].get("output"), None);

    let out = ok(url, &["health", "orders"]).await;
    assert!(
        out.starts_with(
            "service orders: 2 instances, 0 passing, 1 warning, 1 critical, 0 maintenance"
        ),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with("orders-2")).unwrap();
    assert!(row.ends_with("  HTTP 503 Service Unavailable"), "{row}");
    let checked = row.split_whitespace().nth(4).unwrap();
    assert!(
        checked.starts_with("20") && checked.ends_with('Z') && checked.len() == 20,
        "{row}"
    );

    // One instance.
    let one = json(url, &["health", "orders", "orders-2"]).await;
    assert_eq!(one["id"], "orders-2");
    assert_eq!(one["authority"], "10.0.0.8:9090");
    assert_eq!(one["health"], "critical");
    let out = ok(url, &["health", "orders", "orders-1"]).await;
    assert_eq!(
        cells(&out)[1],
        ["orders-1", "10.0.0.7:8080", "warning", "-", "-", "-"]
    );

    let list = json(url, &["list"]).await;
    assert_eq!(
        (
            &list["services"][0]["warning"],
            &list["services"][0]["critical"]
        ),
        (&json!(1), &json!(1))
    );

    // deregister
    let out = ok(url, &["deregister", "orders", "orders-2"]).await;
    assert!(
        out.starts_with("deregistered orders/orders-2 (revision "),
        "{out}"
    );
    let err = fails(url, &["deregister", "orders", "orders-2"]).await;
    assert!(
        matches!(&err, CliError::UnknownInstance { service, id } if service == "orders" && id == "orders-2"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"instance "orders-2" of service "orders" not found"#
    );
    let err = fails(url, &["health", "orders", "orders-2", "--set", "passing"]).await;
    assert!(matches!(err, CliError::UnknownInstance { .. }), "{err:?}");
    let err = fails(url, &["health", "orders", "orders-2"]).await;
    assert!(matches!(err, CliError::UnknownInstance { .. }), "{err:?}");
    let gone = json(url, &["deregister", "orders", "orders-1"]).await;
    assert_eq!(
        (&gone["service"], &gone["id"]),
        (&json!("orders"), &json!("orders-1"))
    );
    assert!(gone["revision"].as_u64().unwrap() > set["revision"].as_u64().unwrap());

    // An unknown service.
    for argv in [&["show", "orders"][..], &["health", "orders"]] {
        let err = fails(url, argv).await;
        assert!(
            matches!(&err, CliError::UnknownService(s) if s == "orders"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            r#"service "orders" not found: it has no instances in the registry"#
        );
    }
    assert_eq!(
        cells(&ok(url, &["list"]).await)[1..],
        [vec!["users", "1", "1", "0", "0", "0"]]
    );
}
