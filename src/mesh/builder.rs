//! [`MeshBuilder`]: the registry, the policies, and what the mesh runs in the background.

use std::time::Duration;

use hyper_util::rt::TokioExecutor;

use crate::mesh::client::HyperClient;
use crate::mesh::policy::{MeshConfig, Policies, PolicyError, PolicyOverrides};
use crate::mesh::Mesh;
use crate::registry::{self, AnyRegistry, Cached, LeaseConfig, Reaper, Registry};

/// Why a [`Mesh`] could not be built; each variant names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No registry was given: [`MeshBuilder::registry_url`] or [`MeshBuilder::registry`].
    #[error("no registry: give Mesh::builder() a registry URL (sqlite://mesh.db, postgres://…, mysql://…, memory:) or a registry")]
    NoRegistry,
    /// The registry URL was refused or the registry is unreachable (passwords hidden).
    #[error("registry")]
    Registry(#[source] registry::Error),
    /// A policy is invalid; the error names the field by its path
    /// (`services.orders.retry.max_retries`).
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Builds a [`Mesh`]: a registry (required), default policies, per-service overrides, and
/// options; see [`Mesh::builder`].
///
/// The registry is a URL ([`registry_url`](MeshBuilder::registry_url), connected at
/// [`build`](MeshBuilder::build)) or any [`Registry`] value
/// ([`registry`](MeshBuilder::registry)). The mesh puts it behind one [`Cached`], so the
/// whole process keeps one registry watch however many services it calls.
#[must_use]
pub struct MeshBuilder<R = AnyRegistry> {
    registry: Option<Source<R>>,
    config: MeshConfig,
    reaper: Option<LeaseConfig>,
    http: Option<HyperClient>,
    grpc_max_request: usize,
}

type Connect<R> = Box<
    dyn FnOnce() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<R, registry::Error>> + Send>,
        > + Send,
>;

enum Source<R> {
    /// Connects to the URL given (kept out of `Debug`: it may hold a password).
    Url(Connect<R>),
    Value(R),
}

impl<R> std::fmt::Debug for MeshBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshBuilder")
            .field(
                "registry",
                &match &self.registry {
                    None => "none",
                    Some(Source::Url(_)) => "url (hidden: it may hold a password)",
                    Some(Source::Value(_)) => "value",
                },
            )
            .field("config", &self.config)
            .field("reaper", &self.reaper)
            .finish_non_exhaustive()
    }
}

/// The largest gRPC request body the mesh buffers by default (tonic's default message
/// limit): 4 MiB.
pub const DEFAULT_GRPC_MAX_REQUEST: usize = 4 * 1024 * 1024;

impl MeshBuilder<AnyRegistry> {
    pub(crate) fn new() -> Self {
        MeshBuilder {
            registry: None,
            config: MeshConfig::default(),
            reaper: None,
            http: None,
            grpc_max_request: DEFAULT_GRPC_MAX_REQUEST,
        }
    }

    /// The registry by URL, connected at [`build`](MeshBuilder::build): `sqlite://mesh.db`
    /// (the embedded default backend; `?mode=rwc` creates the file), `postgres://…`,
    /// `mysql://…`, or `memory:` (this process only). See
    /// [`AnyRegistry`](crate::registry::AnyRegistry).
    pub fn registry_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.registry = Some(Source::Url(Box::new(move || {
            Box::pin(async move { AnyRegistry::connect(&url).await })
        })));
        self
    }
}

impl<R> MeshBuilder<R> {
    /// Any registry value: a [`MemoryRegistry`](crate::registry::MemoryRegistry), a
    /// configured SQL registry, your own [`Registry`] implementation.
    pub fn registry<R2: Registry>(self, registry: R2) -> MeshBuilder<R2> {
        MeshBuilder {
            registry: Some(Source::Value(registry)),
            config: self.config,
            reaper: self.reaper,
            http: self.http,
            grpc_max_request: self.grpc_max_request,
        }
    }

    /// The whole policy configuration: defaults and per-service overrides (for example read
    /// from TOML). Replaces what [`defaults`](Self::defaults) and
    /// [`service`](Self::service) set before.
    pub fn config(mut self, config: MeshConfig) -> Self {
        self.config = config;
        self
    }

    /// The policies of every service without overrides, and the base of the overrides.
    pub fn defaults(mut self, defaults: Policies) -> Self {
        self.config.defaults = defaults;
        self
    }

    /// Overrides for `service`, merged field by field over the defaults.
    pub fn service(mut self, service: impl Into<String>, overrides: PolicyOverrides) -> Self {
        self.config.services.insert(service.into(), overrides);
        self
    }

    /// Runs a [`Reaper`] over the registry with `config`: instances whose lease lapsed turn
    /// `Critical`, then are deregistered. Off by default (one reaper per registry is enough;
    /// several are safe).
    pub fn reaper(mut self, config: LeaseConfig) -> Self {
        self.reaper = Some(config);
        self
    }

    /// The hyper-util client HTTP services are called through (its pool, timeouts and
    /// HTTP version settings). The default is a plain-HTTP client on tokio; instances whose
    /// scheme is `https` need a client with a TLS connector, which this option cannot take:
    /// with the default they fail to connect.
    pub fn http_client(
        mut self,
        client: hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            super::RequestBody,
        >,
    ) -> Self {
        self.http = Some(client);
        self
    }

    /// The largest request body a gRPC client buffers (default
    /// [`DEFAULT_GRPC_MAX_REQUEST`]); a larger one fails with
    /// [`Error::Request`](super::Error::Request) before anything is sent.
    pub fn grpc_max_request(mut self, bytes: usize) -> Self {
        self.grpc_max_request = bytes;
        self
    }
}

impl<R: Registry> MeshBuilder<R> {
    /// Checks the policies (the error names the field), connects to the registry and puts
    /// it behind a cache (one watch for the whole process), and starts the reaper if asked.
    /// Must be called within a tokio runtime, which runs the mesh's background tasks.
    pub async fn build(self) -> Result<Mesh<R>, BuildError> {
        self.config.check()?;
        let registry = match self.registry {
            None => return Err(BuildError::NoRegistry),
            Some(Source::Value(r)) => r,
            Some(Source::Url(connect)) => connect().await.map_err(BuildError::Registry)?,
        };
        let reaper = self
            .reaper
            .map(|config| Reaper::new(registry.clone(), config).spawn());
        let registry = Cached::new(registry).await.map_err(BuildError::Registry)?;
        let http = self.http.unwrap_or_else(|| {
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
        });
        let grpc = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build_http();
        Ok(Mesh::new(
            registry,
            self.config,
            http,
            grpc,
            reaper,
            self.grpc_max_request,
        ))
    }
}
