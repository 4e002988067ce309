//! `tower-mesh demo`: the mesh at work, with nothing to set up.
//!
//! An embedded SQLite registry in a temporary folder (or `--registry URL`), four HTTP
//! backends on loopback that register themselves with a lease and a health check, a health
//! checker, the gateway in front of them and a load generator. Over `--duration` (20 s by
//! default) it prints a table every second (per instance: requests, p50/p99, errors, the
//! endpoint breaker's state, health) through five phases: an even spread; `b2` ten times
//! slower and traffic moving away from it; `b3` failing, its breaker opening and its health
//! check marking it critical; `b3` healed and readmitted; `b4` stopped and deregistered. It
//! ends with a summary.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_mesh::gateway::demo::{run, DemoArgs};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower_mesh::gateway::demo::DemoError> {
//! let args = DemoArgs { duration: Duration::from_secs(5), registry: None };
//! run(args, &mut std::io::stdout()).await?;
//! # Ok(())
//! # }
//! ```

mod backend;
mod stats;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::backend::Backend;
use self::stats::{Observed, Stats};
use crate::gateway::config::Config;
use crate::gateway::proxy::Gateway;
use crate::mesh::Mesh;
use crate::registry::{AnyRegistry, Registry};

/// `tower-mesh demo` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the demo runs, split into five phases (at least 5s).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The registry (default: SQLite in a temporary folder); with a PostgreSQL URL the demo
    /// runs the same on a shared registry.
    #[arg(long)]
    pub registry: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (write it like \"20s\")"))
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// `--duration` is too short for five phases.
    #[error("invalid duration {value:?}: must be at least 5s")]
    Duration {
        /// The value given.
        value: Duration,
    },
    /// The registry could not be used.
    #[error("registry")]
    Registry(#[from] crate::registry::Error),
    /// A backend's instance or check is invalid.
    #[error(transparent)]
    Instance(#[from] crate::instance::InvalidInput),
    /// A background part could not start.
    #[error(transparent)]
    Config(#[from] crate::registry::ConfigError),
    /// The mesh could not be built.
    #[error("mesh")]
    Mesh(#[from] crate::mesh::BuildError),
    /// The health checker could not start.
    #[error("health checker")]
    Checker(#[from] crate::health::HealthCheckerError),
    /// The gateway's configuration was refused.
    #[error(transparent)]
    Gateway(#[from] crate::gateway::config::ConfigError),
    /// A policy was refused.
    #[error(transparent)]
    Policy(#[from] crate::mesh::policy::PolicyError),
    /// A socket or the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const NAMES: [&str; 4] = ["b1", "b2", "b3", "b4"];
const PHASES: [&str; 5] = [
    "even spread",
    "b2 ten times slower",
    "b3 failing",
    "b3 healed",
    "b4 stopped and deregistered",
];

/// Runs the demo, writing the live table and the summary to `out`.
pub async fn run(args: DemoArgs, out: &mut (dyn Write + Send)) -> Result<(), DemoError> {
    if args.duration < Duration::from_secs(5) {
        return Err(DemoError::Duration {
            value: args.duration,
        });
    }
    let temp = std::env::temp_dir().join(format!("tower-mesh-demo-{}", std::process::id()));
    let url = match &args.registry {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&temp)?;
            format!("sqlite://{}?mode=rwc", temp.join("registry.db").display())
        }
    };
    let result = demo(&url, args.duration, out).await;
    if args.registry.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}

async fn demo(
    url: &str,
    duration: Duration,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    let phase_len = duration / PHASES.len() as u32;
    writeln!(
        out,
        "tower-mesh demo: registry {}, {} phases of {:?}",
        crate::gateway::redact_url(url),
        PHASES.len(),
        phase_len
    )?;

    // The gateway's mesh: one registry watch; p2c (peak EWMA) moves load off slow hosts.
    let config = Config::from_toml(
        r#"
        registry = { url = "unused" }
        [[routes]]
        prefix = "/api"
        service = "demo"
        timeout = "2s"
        [mesh.defaults]
        strategy = { name = "p2c" }
        endpoint_breaker = { consecutive_failures = 5, open_duration = "1s", max_open_duration = "2s" }
        service_breaker = { consecutive_failures = 1000 }
        outlier = { consecutive_5xx = 1000, enforcing_success_rate = 0 }
        "#,
    )?;
    let mesh = Mesh::builder()
        .registry_url(url)
        .config(config.mesh.clone())
        .reaper(crate::registry::LeaseConfig::default())
        .build()
        .await?;
    let registry = AnyRegistry::connect(url).await?;
    let mut backends = Vec::new();
    for name in NAMES {
        backends.push(Backend::start(name, registry.clone(), Duration::from_secs(5)).await?);
    }
    let checker = crate::health::HealthChecker::builder("demo-checker")
        .standalone()
        .spawn(registry.clone())?;
    let gateway = Gateway::new(mesh.clone(), &config)?;
    let client = mesh.client("demo")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        axum::Router::new().fallback_service(gateway),
    )));
    writeln!(
        out,
        "gateway on http://{addr}/api, backends {}",
        backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.addr))
            .collect::<Vec<_>>()
            .join(" ")
    )?;

    let stats = Arc::new(Stats::new(&NAMES, PHASES.len()));
    let phase = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(stats::generate(
                addr,
                stats.clone(),
                phase.clone(),
                done.clone(),
            ))
        })
        .collect();

    let start = Instant::now();
    let mut observed = Observed::default();
    // Sampled ten times a second (a breaker may open and its endpoint leave within one),
    // printed once a second.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.tick().await;
    let mut current = 0;
    let mut samples = 0u32;
    writeln!(out, "\nphase 1/{}: {}", PHASES.len(), PHASES[0])?;
    loop {
        tick.tick().await;
        samples += 1;
        let elapsed = start.elapsed();
        let breakers = stats::breakers(&client);
        let health = stats::health(&mesh).await;
        observed.note(current, &health, &breakers);
        if !samples.is_multiple_of(10) && elapsed < duration {
            continue;
        }
        stats.print_tick(out, elapsed, &health, &breakers)?;
        if elapsed >= duration {
            break;
        }
        let next =
            ((elapsed.as_secs_f64() / phase_len.as_secs_f64()) as usize).min(PHASES.len() - 1);
        if next != current {
            current = next;
            phase.store(current, Ordering::SeqCst);
            writeln!(
                out,
                "\nphase {}/{}: {}",
                current + 1,
                PHASES.len(),
                PHASES[current]
            )?;
            match current {
                1 => backends[1].slow_down(10),
                2 => backends[2].set_failing(true),
                3 => backends[2].set_failing(false),
                4 => backends[3].stop().await,
                _ => {}
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    for task in load {
        let _ = task.await;
    }
    let gone = registry
        .snapshot(&"demo".parse().expect("a valid name"))
        .await
        .map(|s| !s.instances().iter().any(|i| i.id().as_str() == "b4"))
        .unwrap_or(false);
    stats.print_summary(out, &PHASES, &observed, gone)?;
    let _ = checker.shutdown().await;
    for mut b in backends {
        b.stop().await;
    }
    server.abort();
    Ok(())
}
