//! The real binary: `tower-mesh registry …` wired to the CLI, its output on stdout, its errors
//! on stderr with a failing status and no password.

use tokio::process::Command;

use crate::{ok, TempDir};

const SECRET: &str = "hunter2-very-secret";

fn tower_mesh() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tower-mesh"));
    command.env_remove("TOWER_MESH_REGISTRY").kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_binary_lists_as_json() {
    let dir = TempDir::new("binary");
    let url = dir.sqlite_url();
    ok(
        &url,
        &[
            "register", "orders", "orders-1", "--host", "10.0.0.7", "--port", "8080",
        ],
    )
    .await;
    ok(
        &url,
        &[
            "register", "orders", "orders-2", "--host", "10.0.0.8", "--port", "8080",
        ],
    )
    .await;
    ok(&url, &["health", "orders", "orders-2", "--set", "critical"]).await;

    let run = tower_mesh()
        .args(["registry", "--registry", &url, "list", "--json"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{:?}: {stderr}", run.status);
    let list: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&run.stdout)));
    assert_eq!(
        list,
        serde_json::json!({ "services": [{
            "service": "orders", "instances": 2, "passing": 1, "warning": 0, "critical": 1,
            "maintenance": 0, "corrupt": [],
        }] })
    );

    // The registry from the environment, a table out.
    let run = tower_mesh()
        .args(["registry", "show", "orders"])
        .env("TOWER_MESH_REGISTRY", &url)
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let table = String::from_utf8(run.stdout).unwrap();
    assert!(table.starts_with("ID  "), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");

    // An error: a failing status, the message on stderr, no password anywhere.
    let run = tower_mesh()
        .args([
            "registry",
            "--registry",
            &format!("redis://mesh:{SECRET}@127.0.0.1:1/0"),
            "list",
        ])
        .output()
        .await
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        stderr.matches("invalid registry url").count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains(SECRET) && !stdout.contains(SECRET),
        "{stdout}{stderr}"
    );
}
