//! The gateway's TOML configuration: registry, listeners, admin API, routes, mesh policies,
//! shutdown, and the services the process registers.
//!
//! ```toml
//! [registry]
//! url = "postgres://mesh@db.internal/mesh"
//! password_env = "MESH_DB_PASSWORD"        # the password, from the environment
//!
//! [listen]
//! gateway = "0.0.0.0:8080"
//! admin = "127.0.0.1:9090"
//!
//! [admin]
//! token_env = "TOWER_MESH_ADMIN_TOKEN"     # required when `admin` is not loopback
//!
//! [[routes]]
//! prefix = "/orders"
//! service = "orders"
//! timeout = "5s"
//! max_body_bytes = 1048576
//!
//! [[routes]]
//! prefix = "/"
//! host = "users.example.com"
//! service = "users"
//! strip_prefix = false
//!
//! [mesh.defaults]
//! strategy = { name = "p2c" }
//! [mesh.services.orders]
//! service_breaker = { consecutive_failures = 10, open_duration = "30s" }
//! ```
//!
//! Unknown keys are errors; every error names the key and, where the file has it, the line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::instance::{Microservice, ServiceName};
use crate::mesh::policy::MeshConfig;

/// Why a configuration was refused. Each names the key and, when it comes from a file, the
/// file and the line; secrets never appear.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the configuration (bad syntax, an unknown key, a value
    /// of the wrong type, a bad duration).
    #[error("{}line {line}: {message}", file_prefix(path))]
    Parse {
        /// The file, if read from one.
        path: Option<PathBuf>,
        /// The line (1-based).
        line: usize,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value parsed but cannot work.
    #[error("{}line {line}: invalid {key} {value:?}: {reason}", file_prefix(path))]
    Invalid {
        /// The file, if read from one.
        path: Option<PathBuf>,
        /// The line (1-based) of the value or of its table.
        line: usize,
        /// The key, by its path (`routes[1].prefix`, `mesh.services.orders.timeout`).
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// An environment variable the configuration names is not set.
    #[error("environment variable {var} (named by {key}) is not set")]
    MissingEnv {
        /// The variable.
        var: String,
        /// The key that names it.
        key: &'static str,
    },
}

fn file_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

/// The whole configuration of `tower-mesh serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the registry is.
    pub registry: RegistryConfig,
    /// The listeners.
    #[serde(default)]
    pub listen: ListenConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Routes, matched by host (if given) and the longest path prefix.
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// The mesh's policies: defaults and per-service overrides.
    #[serde(default)]
    pub mesh: MeshConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Services this process registers at start (with a lease it keeps alive) and
    /// deregisters on shutdown.
    #[serde(default)]
    pub register: Vec<Spanned<RegisterConfig>>,
}

/// The registry's URL, and where its password comes from.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `sqlite://…`, `postgres://…`, `mysql://…` or `memory:`; put no password here, name
    /// an environment variable in `password_env`.
    pub url: String,
    /// The environment variable holding the database password, put into the URL at start.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &crate::gateway::redact_url(&self.url))
            .field("password_env", &self.password_env)
            .finish()
    }
}

impl RegistryConfig {
    /// The URL with the password from `password_env` in it (percent-encoded).
    pub fn resolved_url(&self) -> Result<String, ConfigError> {
        let Some(var) = &self.password_env else {
            return Ok(self.url.clone());
        };
        let password = std::env::var(var).map_err(|_| ConfigError::MissingEnv {
            var: var.clone(),
            key: "registry.password_env",
        })?;
        let mut url = url::Url::parse(&self.url).map_err(|e| ConfigError::Invalid {
            path: None,
            line: 0,
            key: "registry.url".into(),
            value: crate::gateway::redact_url(&self.url),
            reason: e.to_string(),
        })?;
        url.set_password(Some(&password))
            .map_err(|()| ConfigError::Invalid {
                path: None,
                line: 0,
                key: "registry.url".into(),
                value: crate::gateway::redact_url(&self.url),
                reason: "this URL cannot hold a password".into(),
            })?;
        Ok(url.to_string())
    }
}

/// The listeners' addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// The gateway (default `127.0.0.1:8080`).
    pub gateway: SocketAddr,
    /// The admin API and `/metrics` (default `127.0.0.1:9090`, loopback only).
    pub admin: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            gateway: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// The admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The environment variable holding the bearer token its mutating routes require. The
    /// gateway refuses to start with a non-loopback admin address and no token.
    pub token_env: Option<String>,
    /// The largest request body it reads (default 64 KiB).
    pub max_body_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_env: None,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl AdminConfig {
    /// The token from `token_env`, if one is named.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        match &self.token_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Ok(Some(t)),
                _ => Err(ConfigError::MissingEnv {
                    var: var.clone(),
                    key: "admin.token_env",
                }),
            },
        }
    }
}

/// One route: requests whose host (if given) and path prefix match go to `service`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The path prefix, starting with `/`; matched on whole segments (`/orders` matches
    /// `/orders` and `/orders/42`, not `/ordersx`).
    pub prefix: String,
    /// The `Host` (without port) the route is for; any host if absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The service called.
    pub service: String,
    /// Whether the prefix is removed before the request goes on (default `true`).
    #[serde(default = "yes")]
    pub strip_prefix: bool,
    /// The route's deadline, from the request to the response head (default `"30s"`).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The largest request body passed on; a larger one is refused with 413 (default
    /// 10 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_body() -> u64 {
    10 * 1024 * 1024
}

/// Graceful shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long requests in flight may take to finish after a signal (default `"10s"`).
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(10),
        }
    }
}

/// A service this process registers (the seed's `Microservice` shape) with a lease.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// The service name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Endpoint URLs (`http://host:port`, `grpc://host:port`).
    pub endpoints: Vec<String>,
    /// Metadata of every endpoint.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The lease (default `"10s"`), renewed at a third of it.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(10)
}

impl RegisterConfig {
    /// As the mesh registers it.
    pub fn microservice(&self) -> Microservice {
        let mut m = Microservice::new(self.name.clone(), self.version.clone());
        m.endpoints = self.endpoints.clone();
        m.metadata = self.metadata.clone();
        m
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// Parses and checks `text`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, None)
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.map(Path::to_owned),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_owned(),
        })?;
        config.check(text, path)?;
        Ok(config)
    }

    fn check(&self, text: &str, path: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |line: usize, key: String, value: &dyn fmt::Display, reason: &str| {
            ConfigError::Invalid {
                path: path.map(Path::to_owned),
                line,
                key,
                value: value.to_string(),
                reason: reason.to_owned(),
            }
        };
        let mut seen = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let line = line_of(text, route.span().start);
            let r = route.get_ref();
            if !r.prefix.starts_with('/') {
                return Err(invalid(
                    line,
                    format!("routes[{i}].prefix"),
                    &r.prefix,
                    "must start with /",
                ));
            }
            if r.service.parse::<ServiceName>().is_err() {
                return Err(invalid(
                    line,
                    format!("routes[{i}].service"),
                    &r.service,
                    "must be a service name (lowercase letters, digits and -)",
                ));
            }
            if r.timeout.is_zero() {
                return Err(invalid(
                    line,
                    format!("routes[{i}].timeout"),
                    &"0s",
                    "must be positive",
                ));
            }
            if r.max_body_bytes == 0 {
                return Err(invalid(
                    line,
                    format!("routes[{i}].max_body_bytes"),
                    &0,
                    "must be positive",
                ));
            }
            if !seen.insert((r.host.clone(), normalize(&r.prefix).to_owned())) {
                return Err(invalid(
                    line,
                    format!("routes[{i}].prefix"),
                    &r.prefix,
                    "another route has the same host and prefix",
                ));
            }
        }
        if let Err(e) = self.mesh.check() {
            let key = format!("mesh.{}", e.path());
            let line = line_of_key(text, &key);
            // The policy error's source says what the value is and what is expected.
            let reason = std::error::Error::source(&e).map_or_else(String::new, |s| s.to_string());
            return Err(invalid(line, key, &"(see reason)", &reason));
        }
        for (i, reg) in self.register.iter().enumerate() {
            let line = line_of(text, reg.span().start);
            if let Err(e) = reg.get_ref().microservice().into_instances() {
                return Err(invalid(
                    line,
                    format!("register[{i}]"),
                    &e,
                    "is not a valid service",
                ));
            }
            if reg.get_ref().ttl < Duration::from_secs(1) {
                return Err(invalid(
                    line,
                    format!("register[{i}].ttl"),
                    &format!("{:?}", reg.get_ref().ttl),
                    "must be at least 1s",
                ));
            }
        }
        Ok(())
    }
}

/// A prefix without its trailing `/` (but `/` stays `/`).
pub(crate) fn normalize(prefix: &str) -> &str {
    match prefix.trim_end_matches('/') {
        "" => "/",
        p => p,
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where the key at the end of `path` (`mesh.services.orders.retry.max_retries`)
/// is set, looking from its table's header on; 0 if not found (set by default).
fn line_of_key(text: &str, path: &str) -> usize {
    let parts: Vec<&str> = path.split('.').collect();
    let last = parts.last().copied().unwrap_or_default();
    // The deepest table header of the path that the file has.
    let mut from = 0;
    for n in (1..parts.len()).rev() {
        let header = format!("[{}]", parts[..n].join("."));
        if let Some(at) = text.find(&header) {
            from = at;
            break;
        }
    }
    match text[from..].find(last) {
        Some(at) => line_of(text, from + at),
        None => 0,
    }
}
