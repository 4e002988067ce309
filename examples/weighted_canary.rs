//! A canary release: a 90/10 split of traffic between two versions of a service, moved to
//! 50/50 at run time by changing the instances' weights in the registry.
//!
//! `checkout` runs as a `stable` instance (version 1.0.0, weight 90) and a `canary` instance
//! (version 2.0.0, weight 10); its strategy is `weighted` (smooth weighted round robin),
//! set in the mesh's TOML configuration. Both instances are then registered again with
//! weight 50; the mesh's client picks the new weights up from the registry's watch, with no
//! restart. Each phase prints the split observed over 1000 calls and checks it is within
//! 3 points of the weights.
//!
//! The registry is an embedded SQLite file in the temporary directory, removed at the end.
//!
//! Run it with `cargo run --example weighted_canary --features mesh`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tower::{BoxError, ServiceExt};
use tower_mesh::instance::Instance;
use tower_mesh::mesh::policy::MeshConfig;
use tower_mesh::mesh::{Client, Mesh};
use tower_mesh::registry::{Registration, Registry};

/// An HTTP server on loopback answering every `GET /` with its version.
async fn server(version: &'static str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { version }));
    tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener, app,
    )));
    Ok(addr)
}

fn instance(id: &str, addr: SocketAddr, version: &str, weight: u32) -> Result<Instance, BoxError> {
    Ok(Instance::builder("checkout", id)
        .port(u32::from(addr.port()))
        .version(version)
        .weight(weight)
        .build()?)
}

async fn call(client: &Client) -> Result<String, BoxError> {
    let rsp = client
        .clone()
        .oneshot(Request::get("/").body(tower_mesh::mesh::RequestBody::empty())?)
        .await?;
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

/// Calls until the client's balancer holds `weights` (it takes discovery's changes when it
/// is next asked for an endpoint), for at most 5 s.
async fn wait_for_weights(client: &Client, weights: &[(&str, u32)]) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let held: BTreeMap<String, u32> = client
            .balance()
            .endpoints()
            .into_iter()
            .map(|e| (e.key.to_string(), e.weight))
            .collect();
        let want: BTreeMap<String, u32> = weights.iter().map(|&(k, w)| (k.to_owned(), w)).collect();
        if held == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the balancer holds {held:?}, not {want:?}").into());
        }
        call(client).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` calls; the share of each version, in percent.
async fn split(client: &Client, n: usize) -> Result<BTreeMap<String, f64>, BoxError> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(call(client).await?).or_default() += 1;
    }
    let shares = counts
        .iter()
        .map(|(v, &c)| (v.clone(), 100.0 * c as f64 / n as f64))
        .collect::<BTreeMap<_, _>>();
    Ok(shares)
}

fn check(phase: &str, shares: &BTreeMap<String, f64>, want: [(&str, f64); 2]) {
    let shown: Vec<String> = want
        .iter()
        .map(|(v, w)| {
            let got = shares.get(*v).copied().unwrap_or(0.0);
            format!("{v} {got:>4.1}% (weight {w})")
        })
        .collect();
    println!("{phase:<22} {}", shown.join(", "));
    for (version, weight) in want {
        let got = shares.get(version).copied().unwrap_or(0.0);
        assert!(
            (got - weight).abs() <= 3.0,
            "{version} took {got:.1}% of the calls, not {weight}% ± 3"
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let db = std::env::temp_dir().join(format!(
        "tower-mesh-weighted-canary-{}.db",
        std::process::id()
    ));
    // Removed when dropped, also when a check below fails and panics.
    let db = TempDb(db);
    run(&db.0).await
}

async fn run(db: &std::path::Path) -> Result<(), BoxError> {
    let stable_addr = server("1.0.0").await?;
    let canary_addr = server("2.0.0").await?;

    let config: MeshConfig = toml::from_str(
        r#"
        [services.checkout]
        strategy = { name = "weighted" }
        "#,
    )?;
    let mesh = Mesh::builder()
        .registry_url(format!("sqlite://{}?mode=rwc", db.display()))
        .config(config)
        .build()
        .await?;

    // 90/10.
    let registry = mesh.registry();
    registry
        .register(Registration::from(instance(
            "stable",
            stable_addr,
            "1.0.0",
            90,
        )?))
        .await?;
    registry
        .register(Registration::from(instance(
            "canary",
            canary_addr,
            "2.0.0",
            10,
        )?))
        .await?;
    let client = mesh.client("checkout")?;
    println!(
        "checkout: stable 1.0.0 and canary 2.0.0, strategy {}",
        mesh.policies("checkout")?.strategy.name
    );
    wait_for_weights(&client, &[("stable", 90), ("canary", 10)]).await?;
    let first = split(&client, 1000).await?;
    check(
        "1. weights 90/10",
        &first,
        [("1.0.0", 90.0), ("2.0.0", 10.0)],
    );

    // 50/50: the same instances, registered again with new weights.
    for (id, addr, version) in [
        ("stable", stable_addr, "1.0.0"),
        ("canary", canary_addr, "2.0.0"),
    ] {
        registry
            .register(Registration::from(instance(id, addr, version, 50)?))
            .await?;
    }
    wait_for_weights(&client, &[("stable", 50), ("canary", 50)]).await?;
    let second = split(&client, 1000).await?;
    check(
        "2. weights 50/50",
        &second,
        [("1.0.0", 50.0), ("2.0.0", 50.0)],
    );

    println!("weighted_canary: the split followed the weights, 90/10 then 50/50");
    Ok(())
}

/// The SQLite file, removed with its WAL companions when dropped.
struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
