//! The operator CLI, `tower-mesh registry …`, run in process with arguments parsed by clap as
//! the binary parses them: the whole lifecycle of an instance against SQLite and PostgreSQL,
//! bad input refused by field and value, passwords kept out of errors; and the real binary.

mod binary;
mod input;
mod lifecycle;
mod secrets;
#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tower_mesh::gateway::cli::{run, CliError, RegistryArgs};

/// The binary's shape: `tower-mesh registry …` (with a `--version` of its own, as binaries
/// have).
#[derive(Parser)]
#[command(name = "tower-mesh", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    Registry(RegistryArgs),
}

#[test]
fn the_arguments_are_well_formed() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

/// `tower-mesh registry ARGV…` parsed.
fn parse(argv: &[&str]) -> Result<RegistryArgs, clap::Error> {
    let argv = ["tower-mesh", "registry"].iter().chain(argv);
    Cli::try_parse_from(argv).map(|cli| match cli.command {
        Top::Registry(args) => args,
    })
}

/// Runs `tower-mesh registry --registry URL ARGV…` and returns what it wrote.
async fn cli(url: &str, argv: &[&str]) -> Result<String, CliError> {
    let mut full = vec!["--registry", url];
    full.extend_from_slice(argv);
    let args = parse(&full).unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"));
    let mut out = Vec::new();
    run(args, &mut out).await?;
    Ok(String::from_utf8(out).expect("the output is UTF-8"))
}

/// As [`cli`], for a command that must succeed.
async fn ok(url: &str, argv: &[&str]) -> String {
    match cli(url, argv).await {
        Ok(out) => out,
        Err(e) => panic!("{argv:?} failed: {e}"),
    }
}

/// As [`cli`], for a command that must fail.
async fn fails(url: &str, argv: &[&str]) -> CliError {
    match cli(url, argv).await {
        Ok(out) => panic!("{argv:?} succeeded, printing {out:?}"),
        Err(e) => e,
    }
}

/// As [`ok`] with `--json`, parsed.
async fn json(url: &str, argv: &[&str]) -> serde_json::Value {
    let mut full = argv.to_vec();
    full.push("--json");
    let out = ok(url, &full).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{argv:?}: not JSON ({e}): {out}"))
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "tower-mesh-cli-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A SQLite registry URL for a file in the directory, created on first use.
    fn sqlite_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.0.join("mesh.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error and its sources, one message per line, and its `Debug`.
fn everything_shown(e: &CliError) -> String {
    let mut text = format!("{e:?}\n{e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!("\n{s}"));
        source = s.source();
    }
    text
}
