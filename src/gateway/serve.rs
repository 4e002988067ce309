//! `tower-mesh serve`: the gateway and the admin API from a configuration, until a signal.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::gateway::admin::{self, AdminAuth, AdminError};
use crate::gateway::config::{Config, ConfigError};
use crate::gateway::metrics::{Metrics, MetricsError};
use crate::gateway::proxy::Gateway;
use crate::mesh::policy::PolicyError;
use crate::mesh::{BuildError, Mesh, ServiceRegistration};
use crate::registry::LeaseConfig;

/// Why the gateway could not start, or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The admin listener is public and has no token, or another admin setting is wrong.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The mesh could not be built (registry unreachable, bad policy).
    #[error("mesh")]
    Mesh(#[from] BuildError),
    /// A route's policies are invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A service the configuration registers could not be registered.
    #[error("registering service {service:?}")]
    Register {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: crate::health::SelfRegistrationError,
    },
}

/// The addresses a running gateway listens on (the configured ones, with port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The gateway.
    pub gateway: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
}

/// Runs the gateway of `config` until `shutdown` completes: builds the mesh (with a reaper),
/// registers the configured services, serves the gateway and the admin API, then stops
/// accepting, lets requests in flight finish for up to `shutdown.drain`, and deregisters
/// what it registered. `ready` is told the bound addresses once both listeners are up.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Bound) + Send,
) -> Result<(), ServeError> {
    let token = config.admin.token()?;
    let auth: AdminAuth = admin::auth_for(config.listen.admin, token)?;
    // Before any client is built: the breakers attach their series when they are made.
    let metrics = Metrics::install()?;
    let upkeep = tokio::spawn(metrics.upkeep_every(std::time::Duration::from_secs(5)));
    let url = config.registry.resolved_url()?;
    let mesh = Mesh::builder()
        .registry_url(url)
        .config(config.mesh.clone())
        .reaper(LeaseConfig::default())
        .build()
        .await?;
    let gateway = Gateway::new(mesh.clone(), &config)?;

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let gateway_listener = bind(config.listen.gateway).await?;
    let admin_listener = bind(config.listen.admin).await?;
    let bound = Bound {
        gateway: gateway_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: config.listen.gateway,
                source,
            })?,
        admin: admin_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: config.listen.admin,
                source,
            })?,
    };

    let mut registrations: Vec<ServiceRegistration> = Vec::new();
    for reg in &config.register {
        let reg = reg.get_ref();
        let held = mesh
            .register_service_with_ttl(&reg.microservice(), reg.ttl)
            .await
            .map_err(|source| ServeError::Register {
                service: reg.name.clone(),
                source,
            })?;
        registrations.push(held);
    }

    let app = axum::Router::new().fallback_service(gateway);
    let admin_app = admin::router(
        mesh.clone(),
        auth,
        Some(metrics),
        config.admin.max_body_bytes,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let gateway_task = tokio::spawn(
        axum::serve(
            gateway_listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal(stop_rx.clone()))
        .into_future(),
    );
    let admin_task = tokio::spawn(
        axum::serve(admin_listener, admin_app)
            .with_graceful_shutdown(signal(stop_rx))
            .into_future(),
    );
    tracing::info!(gateway = %bound.gateway, admin = %bound.admin, routes = config.routes.len(), "tower-mesh gateway listening");
    ready(bound);

    shutdown.await;
    tracing::info!(drain = ?config.shutdown.drain, "shutting down: no new connections, draining requests in flight");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.shutdown.drain, async {
        let _ = gateway_task.await;
        let _ = admin_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(drain = ?config.shutdown.drain, "requests still in flight at the drain deadline: closing them");
    }
    for held in registrations {
        if let Err(e) = held.shutdown().await {
            tracing::warn!(error = %crate::gateway::chain(&e), "deregistering on shutdown failed; the lease will lapse");
        }
    }
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
