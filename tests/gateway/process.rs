//! The `tower-mesh` binary as a process: a 50 MiB body streamed through with bounded
//! memory, and graceful shutdown on SIGTERM with a request in flight.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use tower_mesh::registry::{AnyRegistry, Registry};

use crate::{backend, get, http_client, sqlite_url};

struct Gateway {
    child: Child,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tower-mesh serve` with `toml`; waits for its "listening" line for the address.
fn start(tag: &str, toml: &str) -> Gateway {
    let path = std::env::temp_dir().join(format!("tm-gw-{tag}-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tower-mesh"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the tower-mesh binary runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[gateway] {line}");
            if !sent {
                if let Some(at) = line.find("gateway=") {
                    let addr: String = line[at + 8..].split_whitespace().next().unwrap().to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway says where it listens");
    Gateway { child, addr }
}

/// The peak resident memory of `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_body_streams_through_without_being_held_whole() {
    let sink = backend("sink").await;
    let toml = format!(
        r#"
        [registry]
        url = "{url}"
        [listen]
        gateway = "127.0.0.1:0"
        admin = "127.0.0.1:0"
        [[routes]]
        prefix = "/upload"
        service = "sink"
        max_body_bytes = 104857600
        [[register]]
        name = "sink"
        version = "1"
        endpoints = ["http://{sink}"]
        "#,
        url = sqlite_url("upload"),
        sink = sink.addr,
    );
    let gw = start("upload", &toml);
    // Warm up (connections, the client stack), then read the peak so far.
    assert_eq!(
        get(&format!("http://{}/upload/x", gw.addr), None).await.0,
        200
    );
    let before = peak_rss_kib(gw.child.id());

    const MIB: usize = 1024 * 1024;
    let chunks = futures_util::stream::iter((0..50 * 16).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![7u8; MIB / 16])))
    }));
    let req = Request::put(format!("http://{}/upload/big", gw.addr))
        .body(StreamBody::new(chunks))
        .unwrap();
    let rsp = http_client().request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let _ = rsp.into_body().collect().await.unwrap();
    assert_eq!(sink.bytes.load(Ordering::SeqCst), 50 * MIB as u64);

    let after = peak_rss_kib(gw.child.id());
    let grew = after.saturating_sub(before);
    println!(
        "gateway peak RSS {before} KiB before, {after} KiB after a 50 MiB upload (+{grew} KiB)"
    );
    assert!(
        grew < 16 * 1024,
        "the peak grew by {grew} KiB for a 50 MiB body: it was buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_and_deregisters() {
    let slow = backend("slow").await;
    slow.delay_ms.store(1_000, Ordering::SeqCst);
    let url = sqlite_url("shutdown");
    let toml = format!(
        r#"
        [registry]
        url = "{url}"
        [listen]
        gateway = "127.0.0.1:0"
        admin = "127.0.0.1:0"
        [shutdown]
        drain = "10s"
        [[routes]]
        prefix = "/slow"
        service = "slow"
        [[register]]
        name = "slow"
        version = "1"
        endpoints = ["http://{slow}"]
        ttl = "30s"
        "#,
        slow = slow.addr,
    );
    let gw = start("shutdown", &toml);
    let registry = AnyRegistry::connect(&url).await.unwrap();
    let name = "slow".parse().unwrap();
    assert_eq!(registry.snapshot(&name).await.unwrap().instances().len(), 1);

    let in_flight = tokio::spawn({
        let url = format!("http://{}/slow/work", gw.addr);
        async move { get(&url, None).await }
    });
    // Let it reach the backend, then ask the gateway to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the request in flight finished: {body}");
    let mut gw = gw;
    let exit = tokio::task::spawn_blocking(move || {
        let status = gw.child.wait().unwrap();
        (status, gw)
    })
    .await
    .unwrap()
    .0;
    assert!(exit.success(), "exits 0 after draining: {exit:?}");
    assert!(
        registry
            .snapshot(&name)
            .await
            .unwrap()
            .instances()
            .is_empty(),
        "what it registered is deregistered"
    );
}

#[test]
fn the_demo_runs_its_five_phases_and_summarizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_tower-mesh"))
        .args(["demo", "--duration", "5s"])
        .env("RUST_LOG", "error")
        .output()
        .expect("the tower-mesh binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in 1..=5 {
        assert!(stdout.contains(&format!("phase {phase}/5")), "{stdout}");
    }
    assert!(stdout.contains("b4 stopped: deregistered: yes"), "{stdout}");
    assert!(
        stdout.contains("b3 failing: endpoint breaker opened: yes"),
        "{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("demo finished: "), "{stdout}");
    let requests: u64 = last["demo finished: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(requests > 100, "{last}");

    // Too short for five phases: a clear error, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_tower-mesh"))
        .args(["demo", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 5s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_same_on_a_shared_postgres_registry() {
    let base = std::env::var("TOWER_MESH_TEST_POSTGRES")
        .expect("TOWER_MESH_TEST_POSTGRES is set (CI sets it; see .ci/run)");
    let url = crate::support::fresh_database(&base).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tower-mesh"))
            .args(["demo", "--duration", "5s", "--registry", &url])
            .env("RUST_LOG", "error")
            .output()
            .expect("the tower-mesh binary runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("registry postgres://"), "{stdout}");
    assert!(stdout.contains("b4 stopped: deregistered: yes"), "{stdout}");
    assert!(stdout
        .lines()
        .last()
        .unwrap_or_default()
        .starts_with("demo finished: "));
}
