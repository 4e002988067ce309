//! The operator CLI, `tower-mesh registry …`: list, show, register, deregister and set the
//! health of instances in a registry, with a table or `--json` output.
//!
//! The registry is the one `--registry URL` names, else `TOWER_MESH_REGISTRY`, else the
//! `[registry]` table of the gateway configuration `--config FILE` (with its `password_env`
//! applied); naming one both ways is refused rather than guessed. Each command opens the
//! registry with [`AnyRegistry::connect`] (no cache, nothing in the background), does one
//! thing and returns.
//!
//! | command | does |
//! | --- | --- |
//! | `list` | every service, with its instances counted by health |
//! | `show NAME` | one service's instances |
//! | `register NAME ID --host H --port P [--scheme --version --weight --zone --metadata K=V… --ttl 10s]` | registers (or replaces) an instance |
//! | `deregister NAME ID` | removes an instance |
//! | `health NAME [ID]` | a service's (or one instance's) health, with each check's last output |
//! | `health NAME ID --set STATUS [--output TEXT]` | sets an instance's health |
//!
//! A bad value is refused with [`CliError::Invalid`] naming the field and the value
//! (`invalid port "0": must be in 1..=65535`); a password in the registry URL never appears in
//! an output or an error.
//!
//! # Output
//!
//! Tables have a header and aligned columns:
//!
//! ```text
//! $ tower-mesh registry list
//! SERVICE  INSTANCES  PASSING  WARNING  CRITICAL  MAINTENANCE
//! orders           2        1        0         1            0
//! $ tower-mesh registry show orders
//! ID        ADDRESS        SCHEME  VERSION  WEIGHT  ZONE        HEALTH    METADATA
//! orders-1  10.0.0.7:8080  http    1.4.2       100  eu-west-1a  passing   team=payments
//! orders-2  10.0.0.8:8080  http    1.4.2       100  -           critical  -
//! $ tower-mesh registry health orders
//! service orders: 2 instances, 1 passing, 0 warning, 1 critical, 0 maintenance (revision 7)
//! ID        ADDRESS        HEALTH    CHECK  CHECKED               OUTPUT
//! orders-1  10.0.0.7:8080  passing   -      -                     -
//! orders-2  10.0.0.8:8080  critical  -      2026-11-30T23:41:07Z  HTTP 503 Service Unavailable
//! ```
//!
//! Stored records that do not decode are listed after a table as `warning: …` lines. With
//! `--json` each command writes one JSON document (pretty-printed), with these fields:
//!
//! - `list`: `{"services": [{"service", "instances", "passing", "warning", "critical",
//!   "maintenance", "corrupt"}]}`, `corrupt` being the messages of records that do not decode.
//! - `show`: `{"service", "revision", "instances", "corrupt"}`, each instance as
//!   [`Instance`] serializes: `{"service", "id", "host", "port",
//!   "scheme", "version", "weight", "zone", "metadata", "health"}` and, when present,
//!   `"check"` and `"last_check"`.
//! - `health NAME`: the [`ServiceHealth`](crate::health::report::ServiceHealth) report, `{"service", "revision", "stale", "counts",
//!   "instances", "corrupt"}`; `health NAME ID`: that instance's entry of it, `{"id",
//!   "authority", "health", "check", "output", "checked_at_ms"}` (absent fields left out).
//! - `register`: `{"service", "id", "address", "revision", "replaced", "ttl_ms"}`
//!   (`ttl_ms` is `null` without a lease).
//! - `deregister`: `{"service", "id", "revision"}`.
//! - `health NAME ID --set`: `{"service", "id", "health", "output", "revision"}`.
//!
//! # Example
//!
//! `run` takes the arguments as clap parses them; [`run_on`] runs a command against a
//! registry already open, here an in-memory one:
//!
//! ```
//! use clap::Parser;
//! use tower_mesh::gateway::cli::{run, run_on, RegistryArgs};
//! use tower_mesh::registry::MemoryRegistry;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     registry: RegistryArgs,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let register = Cli::try_parse_from([
//!     "registry", "--registry", "memory:", "register", "orders", "orders-1",
//!     "--host", "10.0.0.7", "--port", "8080", "--ttl", "30s",
//! ])?;
//! let mut out = Vec::new();
//! run(register.registry, &mut out).await?;
//! assert!(String::from_utf8(out)?.starts_with("registered orders/orders-1 at http://10.0.0.7:8080"));
//!
//! // Several commands against one registry.
//! let registry = MemoryRegistry::new();
//! for argv in [
//!     &["registry", "register", "orders", "orders-1", "--host", "10.0.0.7", "--port", "8080"][..],
//!     &["registry", "health", "orders", "orders-1", "--set", "critical", "--output", "HTTP 503"],
//! ] {
//!     let cli = Cli::try_parse_from(argv)?;
//!     run_on(&registry, cli.registry.command, false, &mut std::io::sink()).await?;
//! }
//! let mut out = Vec::new();
//! let list = Cli::try_parse_from(["registry", "list", "--json"])?;
//! run_on(&registry, list.registry.command, true, &mut out).await?;
//! let list: serde_json::Value = serde_json::from_slice(&out)?;
//! assert_eq!(list["services"][0]["critical"], 1);
//!
//! // Bad input names the field and the value.
//! let bad = Cli::try_parse_from([
//!     "registry", "register", "orders", "orders-2", "--host", "10.0.0.8", "--port", "0",
//! ])?;
//! let err = run_on(&registry, bad.registry.command, false, &mut out).await.unwrap_err();
//! assert_eq!(err.to_string(), r#"invalid port "0": must be in 1..=65535"#);
//! # Ok(())
//! # }
//! ```

mod error;
mod output;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::gateway::config::Config;
use crate::health::report::service_health;
use crate::instance::{Health, Instance, InstanceId, LastCheck, Scheme, ServiceName};
use crate::registry::{AnyRegistry, HealthUpdate, Registration, Registry};

use self::error::from_registry;
pub use self::error::CliError;
use self::output::Table;

/// Inspects and changes the registry: `list`, `show`, `register`, `deregister`, `health`.
///
/// The arguments of `tower-mesh registry`: where the registry is, the output format, and the
/// command.
#[derive(clap::Args)]
pub struct RegistryArgs {
    /// The registry URL (`sqlite://mesh.db?mode=rwc`, `postgres://mesh@db.internal/mesh`,
    /// ...); without it, the `[registry]` of --config. A password is better given through the
    /// configuration's `password_env` than on a command line.
    #[arg(
        long,
        env = "TOWER_MESH_REGISTRY",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    pub registry: Option<String>,
    /// A gateway configuration file whose `[registry]` to use (its `password_env` applies).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// JSON output instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

// By hand: the URL may hold a password.
impl fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryArgs")
            .field("registry", &self.registry.as_deref().map(redact))
            .field("config", &self.config)
            .field("json", &self.json)
            .field("command", &self.command)
            .finish()
    }
}

impl RegistryArgs {
    /// The registry URL: `--registry` (or `TOWER_MESH_REGISTRY`), else the `[registry]` of
    /// `--config` with its password from `password_env`. [`CliError::NoRegistry`] without
    /// either, [`CliError::TwoRegistries`] with both.
    pub fn registry_url(&self) -> Result<String, CliError> {
        match (&self.registry, &self.config) {
            (Some(_), Some(config)) => Err(CliError::TwoRegistries {
                config: config.clone(),
            }),
            (Some(url), None) => Ok(url.clone()),
            (None, Some(config)) => Ok(Config::load(config)?.registry.resolved_url()?),
            (None, None) => Err(CliError::NoRegistry),
        }
    }
}

/// A `tower-mesh registry` command.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum RegistryCommand {
    /// Every service, with its instances counted by health.
    List,
    /// One service's instances: address, scheme, version, weight, zone, health, metadata.
    Show {
        /// The service.
        name: String,
    },
    /// Registers an instance, replacing one with the same service and id.
    ///
    /// With --ttl the instance is leased: it turns critical unless something heartbeats it
    /// within each TTL, and is then deregistered by the reaper of a running gateway. Without
    /// --ttl it stays until deregistered.
    #[command(disable_version_flag = true)]
    Register(Box<RegisterArgs>),
    /// Deregisters one instance.
    Deregister {
        /// The service.
        name: String,
        /// The instance.
        id: String,
    },
    /// Shows a service's health (the counts, and each instance's last check output), or one
    /// instance's; with --set, sets one instance's health.
    Health(HealthArgs),
}

/// The arguments of `register`.
#[derive(Debug, clap::Args)]
#[non_exhaustive]
pub struct RegisterArgs {
    /// The service: lowercase DNS labels (`orders`, `payments.eu`).
    pub name: String,
    /// The instance's id, unique in its service: letters, digits, `.`, `_`, `-`, `:`.
    pub id: String,
    /// The host: an IP address or a DNS name.
    #[arg(long)]
    pub host: String,
    /// The port, 1..=65535.
    #[arg(long)]
    pub port: u32,
    /// How to speak to it: http, https or grpc.
    #[arg(long, default_value = "http")]
    pub scheme: String,
    /// The version it runs.
    #[arg(long, default_value = "0.0.0")]
    pub version: String,
    /// Its weight, 0 (draining: no new traffic) ..= 1000000.
    #[arg(long, default_value_t = crate::instance::DEFAULT_WEIGHT)]
    pub weight: u32,
    /// The zone it runs in.
    #[arg(long)]
    pub zone: Option<String>,
    /// A metadata entry, KEY=VALUE; repeat for more.
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// A lease (`10s`, `1m`; 1ms ..= 24h): the instance lapses (turns critical, then is
    /// deregistered) unless heartbeated within each TTL. Nothing heartbeats an instance this
    /// command registers, so leave it out for an instance that should stay.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
}

/// The arguments of `health`.
#[derive(Debug, clap::Args)]
#[non_exhaustive]
pub struct HealthArgs {
    /// The service.
    pub name: String,
    /// One instance: show only it, or set its health with --set.
    pub id: Option<String>,
    /// Sets the instance's health: passing, warning, critical or maintenance.
    #[arg(long, value_name = "STATUS", requires = "id")]
    pub set: Option<String>,
    /// With --set: the check output to record with the health (otherwise the last output is
    /// cleared).
    #[arg(long, value_name = "TEXT", requires = "set")]
    pub output: Option<String>,
}

/// Runs `args`: opens the registry it names, runs its command, and writes the result to
/// `out` (a table, or JSON with `--json`).
///
/// An `out` closed by its reader (`tower-mesh registry list | head -1`, a broken pipe) ends
/// the command quietly, as other command-line tools do; other write failures are
/// [`CliError::Io`].
pub async fn run(args: RegistryArgs, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let url = args.registry_url()?;
    let registry = AnyRegistry::connect(&url).await.map_err(|e| match e {
        // Already names the URL, redacted.
        crate::registry::Error::Config(_) => CliError::Registry(e),
        source => CliError::Connect {
            url: redact(&url),
            source,
        },
    })?;
    let result = run_on(&registry, args.command, args.json, out).await;
    if let Some(sql) = registry.as_sql() {
        sql.close().await;
    }
    match result {
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

/// Runs `command` against `registry`, writing a table to `out`, or JSON if `json`.
pub async fn run_on<R: Registry>(
    registry: &R,
    command: RegistryCommand,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match command {
        RegistryCommand::List => list(registry, json, out).await,
        RegistryCommand::Show { name } => show(registry, &name, json, out).await,
        RegistryCommand::Register(args) => register(registry, *args, json, out).await,
        RegistryCommand::Deregister { name, id } => {
            deregister(registry, &name, &id, json, out).await
        }
        RegistryCommand::Health(args) => health(registry, args, json, out).await,
    }
}

async fn list<R: Registry>(
    registry: &R,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut services = Vec::new();
    for name in registry.services().await.map_err(from_registry)? {
        let report = service_health(registry, &name, ())
            .await
            .map_err(from_registry)?;
        services.push(output::ServiceCounts::new(&report));
    }
    if json {
        return Ok(output::json(out, &output::ListJson { services })?);
    }
    if services.is_empty() {
        writeln!(out, "no services registered")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        "SERVICE",
        "INSTANCES>",
        "PASSING>",
        "WARNING>",
        "CRITICAL>",
        "MAINTENANCE>",
    ]);
    for s in &services {
        table.row(s.cells());
    }
    table.write(out)?;
    for s in &services {
        for message in &s.corrupt {
            writeln!(out, "warning: {message}")?;
        }
    }
    Ok(())
}

async fn show<R: Registry>(
    registry: &R,
    name: &str,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let name = ServiceName::new(name)?;
    let snapshot = registry.snapshot(&name).await.map_err(from_registry)?;
    if snapshot.instances().is_empty() && snapshot.corrupt().is_empty() {
        return Err(CliError::UnknownService(name));
    }
    if json {
        return Ok(output::json(
            out,
            &output::ShowJson {
                service: name.to_string(),
                revision: snapshot.revision().get(),
                instances: snapshot.instances(),
                corrupt: output::messages(snapshot.corrupt()),
            },
        )?);
    }
    let mut table = Table::new(&[
        "ID", "ADDRESS", "SCHEME", "VERSION", "WEIGHT>", "ZONE", "HEALTH", "METADATA",
    ]);
    for instance in snapshot.instances() {
        table.row(output::show_cells(instance));
    }
    table.write(out)?;
    Ok(output::corrupt_lines(out, snapshot.corrupt())?)
}

async fn register<R: Registry>(
    registry: &R,
    args: RegisterArgs,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let scheme: Scheme = args.scheme.parse()?;
    let mut builder = Instance::builder(&args.name, &args.id)
        .host(&args.host)
        .port(args.port)
        .scheme(scheme)
        .version(&args.version)
        .weight(args.weight);
    if let Some(zone) = &args.zone {
        builder = builder.zone(zone);
    }
    let mut seen = std::collections::BTreeSet::new();
    for entry in &args.metadata {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(CliError::invalid("metadata", entry, "must be KEY=VALUE"));
        };
        if !seen.insert(key) {
            return Err(CliError::invalid(
                "metadata",
                entry,
                "the key is given twice",
            ));
        }
        builder = builder.metadata(key, value);
    }
    let instance = builder.build()?;
    let ttl = args.ttl.as_deref().map(parse_ttl).transpose()?;
    let mut registration = Registration::new(instance.clone());
    if let (Some(ttl), Some(text)) = (ttl, &args.ttl) {
        registration = registration
            .with_ttl(ttl)
            .map_err(|e| CliError::invalid("ttl", text, e.reason()))?;
    }
    let before = registry
        .snapshot(instance.service())
        .await
        .map_err(from_registry)?;
    let replaced = before.instances().iter().any(|i| i.id() == instance.id());
    let revision = registry
        .register(registration)
        .await
        .map_err(from_registry)?;
    let address = format!("{}://{}", instance.scheme(), instance.authority());
    if json {
        return Ok(output::json(
            out,
            &output::RegisterJson {
                service: instance.service().to_string(),
                id: instance.id().to_string(),
                address,
                revision: revision.get(),
                replaced,
                ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            },
        )?);
    }
    write!(
        out,
        "registered {}/{} at {address} (revision {revision})",
        instance.service(),
        instance.id()
    )?;
    if replaced {
        write!(out, ", replacing the instance registered before")?;
    }
    writeln!(out)?;
    if let Some(text) = &args.ttl {
        writeln!(
            out,
            "lease {text}: the instance turns critical unless heartbeated within each {text}, then is deregistered"
        )?;
    }
    Ok(())
}

/// A TTL such as `10s` or `1m 30s`.
fn parse_ttl(text: &str) -> Result<Duration, CliError> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| {
        CliError::invalid(
            "ttl",
            text,
            format!("not a duration such as 10s or 1m ({e})"),
        )
    })
}

async fn deregister<R: Registry>(
    registry: &R,
    name: &str,
    id: &str,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let name = ServiceName::new(name)?;
    let id = InstanceId::new(id)?;
    let revision = registry
        .deregister(&name, &id)
        .await
        .map_err(from_registry)?;
    if json {
        return Ok(output::json(
            out,
            &output::DeregisterJson {
                service: name.to_string(),
                id: id.to_string(),
                revision: revision.get(),
            },
        )?);
    }
    writeln!(out, "deregistered {name}/{id} (revision {revision})")?;
    Ok(())
}

async fn health<R: Registry>(
    registry: &R,
    args: HealthArgs,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let name = ServiceName::new(&args.name)?;
    let id = args.id.as_deref().map(InstanceId::new).transpose()?;
    if let Some(status) = &args.set {
        let health: Health = status.parse()?;
        let Some(id) = id else {
            return Err(CliError::invalid(
                "instance id",
                "",
                "--set needs the instance: health NAME ID --set STATUS",
            ));
        };
        return set_health(registry, name, id, health, args.output, json, out).await;
    }
    if args.output.is_some() {
        return Err(CliError::invalid(
            "output",
            args.output.unwrap_or_default(),
            "is only recorded with --set",
        ));
    }
    let report = service_health(registry, &name, ())
        .await
        .map_err(from_registry)?;
    if report.instances().is_empty() && report.corrupt().is_empty() {
        return Err(CliError::UnknownService(name));
    }
    let header = ["ID", "ADDRESS", "HEALTH", "CHECK", "CHECKED", "OUTPUT"];
    if let Some(id) = id {
        let Some(instance) = report.instances().iter().find(|i| *i.id() == id) else {
            return Err(CliError::UnknownInstance { service: name, id });
        };
        if json {
            return Ok(output::json(out, instance)?);
        }
        let mut table = Table::new(&header);
        table.row(output::health_cells(instance));
        return Ok(table.write(out)?);
    }
    if json {
        return Ok(output::json(out, &report)?);
    }
    writeln!(out, "{}", output::health_summary(&report))?;
    let mut table = Table::new(&header);
    for instance in report.instances() {
        table.row(output::health_cells(instance));
    }
    table.write(out)?;
    Ok(output::corrupt_lines(out, report.corrupt())?)
}

async fn set_health<R: Registry>(
    registry: &R,
    name: ServiceName,
    id: InstanceId,
    health: Health,
    text: Option<String>,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut update = HealthUpdate::new(health);
    if let Some(text) = &text {
        update = update.with_last_check(LastCheck::new(text.clone(), registry.clock().now_ms()));
    }
    let revision = registry
        .set_health_with(&name, &id, update)
        .await
        .map_err(from_registry)?;
    if json {
        return Ok(output::json(
            out,
            &output::SetHealthJson {
                service: name.to_string(),
                id: id.to_string(),
                health,
                output: text,
                revision: revision.get(),
            },
        )?);
    }
    writeln!(out, "set {name}/{id} to {health} (revision {revision})")?;
    Ok(())
}

/// A URL as the CLI shows it: its password and secret parameters replaced by `***`.
fn redact(url: &str) -> String {
    crate::registry::sql::redact_url(url)
}
