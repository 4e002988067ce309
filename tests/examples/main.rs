//! Runs every mesh example as a process and checks that it exits 0 and prints its summary
//! line.
//!
//! The examples are built once, by a `cargo build --all-features --examples` that the first
//! test runs (a no-op when they are up to date; `cargo test --test examples` alone does not
//! build them), then run from the target directory next to this test's binary, one at a
//! time (they measure how traffic spreads, which a loaded machine would blur). The
//! `shared_postgres` example needs `TOWER_MESH_TEST_POSTGRES`: its test fails without it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::{Mutex, OnceCell};

/// How long one example may run.
const DEADLINE: Duration = Duration::from_secs(120);

/// One example at a time.
static RUNNING: Mutex<()> = Mutex::const_new(());

/// The outcome of `cargo build --examples`, run once.
static BUILT: OnceCell<Result<(), String>> = OnceCell::const_new();

async fn build_examples() {
    let built = BUILT
        .get_or_init(|| async {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--quiet", "--all-features", "--examples"]);
            if profile_dir().ends_with("release") {
                cargo.arg("--release");
            }
            let status = cargo
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .await
                .map_err(|e| format!("could not run cargo: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!(
                    "cargo build --all-features --examples failed: {status}"
                ))
            }
        })
        .await;
    if let Err(e) = built {
        panic!("{e}");
    }
}

/// `<target>/<profile>`, from this test's own path (`<target>/<profile>/deps/examples-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_owned()
}

/// `<target>/<profile>/examples/NAME`.
fn example_path(name: &str) -> PathBuf {
    profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Runs example `name` and returns its standard output; panics, with its output, unless it
/// exits 0 within the deadline and printed `line`.
async fn run_example(name: &str, line: &str) -> String {
    let _one_at_a_time = RUNNING.lock().await;
    build_examples().await;
    let path = example_path(name);
    assert!(
        path.exists(),
        "example {name} is not built at {} (cargo build --all-features --examples)",
        path.display()
    );
    let child = Command::new(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", path.display()));
    let output = match tokio::time::timeout(DEADLINE, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for the example"),
        // Dropping the child kills it.
        Err(_) => panic!("example {name} ran longer than {DEADLINE:?} and was killed"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown = format!("--- stdout\n{stdout}--- stderr\n{stderr}---");
    assert!(
        output.status.success(),
        "example {name} failed ({})\n{shown}",
        output.status
    );
    assert!(
        stdout.lines().any(|l| l == line),
        "example {name} did not print {line:?}\n{shown}"
    );
    println!("{stdout}");
    stdout
}

#[tokio::test]
async fn hyper_client() {
    run_example(
        "hyper_client",
        "hyper_client: 1200 calls, 0 failed; b took no call after it was killed",
    )
    .await;
}

#[tokio::test]
async fn axum_upstream() {
    run_example(
        "axum_upstream",
        "axum_upstream: 200, 504, 503 and 503 with retry-after, as the greeter changed",
    )
    .await;
}

#[tokio::test]
async fn tonic_client() {
    run_example(
        "tonic_client",
        "tonic_client: 120 calls through mesh.grpc(\"echo\"), 0 failed; b took none once stopped",
    )
    .await;
}

#[tokio::test]
async fn weighted_canary() {
    run_example(
        "weighted_canary",
        "weighted_canary: the split followed the weights, 90/10 then 50/50",
    )
    .await;
}

#[tokio::test]
async fn shared_postgres() {
    // CI always sets it; without it the example would only print that it skipped.
    let url = std::env::var("TOWER_MESH_TEST_POSTGRES").unwrap_or_default();
    assert!(
        !url.is_empty(),
        "TOWER_MESH_TEST_POSTGRES is not set: the shared_postgres example needs a PostgreSQL \
         server (CI sets it; see .ci/run)"
    );
    run_example(
        "shared_postgres",
        "shared_postgres: both meshes saw the leased instance and stopped calling the critical one",
    )
    .await;
}

#[tokio::test]
async fn seed_api() {
    run_example("seed_api", "seed_api: every step did what it says").await;
}
