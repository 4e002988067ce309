//! `tower-mesh`: the API gateway (`serve`), the demo (`demo`) and the operator CLI
//! (`registry …`), built from the crate's parts (feature `gateway`).
//!
//! Logs go to stderr through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`;
//! the access log is the `tower_mesh::access` target).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tower_mesh::gateway::{self, cli::RegistryArgs, config::Config};

/// A client-side service mesh from tower middleware: gateway, registry CLI, demo.
#[derive(Debug, Parser)]
#[command(name = "tower-mesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API gateway and its admin API from a TOML configuration, until SIGINT or
    /// SIGTERM (then drain requests in flight and deregister what it registered).
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Operate on the registry: list, show, register, deregister, health.
    Registry(RegistryArgs),
    /// Show the mesh at work: an embedded registry, four backends, health checks, the
    /// gateway and a load generator, with a live table; exits 0.
    Demo(gateway::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => {
                let config = Config::load(&config)?;
                gateway::serve(config, gateway::signal(), |_| {}).await?;
            }
            Command::Demo(args) => {
                let mut out = std::io::stdout();
                gateway::demo::run(args, &mut out).await?;
            }
            Command::Registry(args) => {
                let mut out = std::io::stdout();
                gateway::cli::run(args, &mut out).await?;
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
