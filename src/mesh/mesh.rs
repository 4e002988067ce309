//! [`Mesh`]: the registry, the policies and one client stack per service, in one place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::health::report::{service_health, ServiceHealth};
use crate::health::{SelfRegistration, SelfRegistrationError};
use crate::instance::{Instance, InstanceId, Microservice, ServiceName};
use crate::mesh::body::{Body, RequestBody};
use crate::mesh::builder::MeshBuilder;
use crate::mesh::client::{self, Client, HyperClient, MeshRequest};
use crate::mesh::policy::{MeshConfig, Policies, PolicyError, StrategyOverride, StrategyPolicy};
use crate::mesh::search::ServiceFilter;
use crate::mesh::Error;
use crate::registry::{self, AnyRegistry, Cached, ReaperHandle, Registration, Registry};

/// The whole client-side mesh of a process: one registry (behind one cache and one watch),
/// the policies of every service, and one client stack per service called; see the
/// [module documentation](super).
///
/// Cheap to clone; every clone is the same mesh.
pub struct Mesh<R = AnyRegistry> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Mesh<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Mesh<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("clients", &crate::sync::lock(&self.inner.clients).len())
            .finish_non_exhaustive()
    }
}

struct Inner<R> {
    registry: Cached<R>,
    config: Mutex<MeshConfig>,
    http: HyperClient,
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    grpc: HyperClient,
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    grpc_max_request: usize,
    clients: Mutex<HashMap<ServiceName, Client>>,
    #[cfg(feature = "tonic")]
    grpc_clients: Mutex<HashMap<ServiceName, super::GrpcClient>>,
    _reaper: Option<ReaperHandle>,
}

impl Mesh {
    /// A builder: give it a registry (URL or value), then
    /// [`build`](MeshBuilder::build) it.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::new()
    }
}

impl<R: Registry> Mesh<R> {
    pub(crate) fn new(
        registry: Cached<R>,
        config: MeshConfig,
        http: HyperClient,
        grpc: HyperClient,
        reaper: Option<ReaperHandle>,
        grpc_max_request: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                config: Mutex::new(config),
                http,
                grpc,
                grpc_max_request,
                clients: Mutex::new(HashMap::new()),
                #[cfg(feature = "tonic")]
                grpc_clients: Mutex::new(HashMap::new()),
                _reaper: reaper,
            }),
        }
    }

    /// The registry, behind the mesh's cache: read it, write it, watch it.
    pub fn registry(&self) -> &Cached<R> {
        &self.inner.registry
    }

    /// The policies of `service` now (defaults, its overrides, and strategies set at run
    /// time).
    pub fn policies(&self, service: &str) -> Result<Policies, PolicyError> {
        crate::sync::lock(&self.inner.config).policies(service)
    }

    /// Registers every endpoint of `service` as an instance (id `host:port`, see
    /// [`Microservice::into_instances`]), without a lease: they stay until
    /// [`unregister_service`](Self::unregister_service). Returns their ids.
    pub async fn register_service(
        &self,
        service: &Microservice,
    ) -> Result<Vec<InstanceId>, registry::Error> {
        let instances = service.clone().into_instances()?;
        let ids = instances.iter().map(|i| i.id().clone()).collect();
        self.inner
            .registry
            .register_all(instances.into_iter().map(Registration::from).collect())
            .await?;
        Ok(ids)
    }

    /// Registers every endpoint of `service` with a lease of `ttl`, kept alive by a
    /// [`SelfRegistration`] guard per instance (heartbeats at a third of the TTL), and
    /// returns once each is registered. If the process dies, the leases lapse and a reaper
    /// removes the instances; [`ServiceRegistration::shutdown`] deregisters them at once.
    pub async fn register_service_with_ttl(
        &self,
        service: &Microservice,
        ttl: Duration,
    ) -> Result<ServiceRegistration, SelfRegistrationError> {
        let instances = service
            .clone()
            .into_instances()
            .map_err(registry::Error::from)?;
        let mut guards = Vec::with_capacity(instances.len());
        for instance in instances {
            let guard = SelfRegistration::builder(instance)
                .ttl(ttl)
                .spawn(self.inner.registry.clone())
                .map_err(registry::Error::from)?;
            guards.push(guard);
        }
        let registration = ServiceRegistration { guards };
        for guard in &registration.guards {
            guard.registered().await;
            let status = guard.status();
            if status.registrations == 0 {
                // The task ended before it registered (its runtime is shutting down).
                if let Some(e) = status.last_error {
                    tracing::warn!(error = %e, "self-registration ended before registering");
                }
                return Err(SelfRegistrationError::TaskEnded {
                    id: guard.instance().id().clone(),
                });
            }
        }
        Ok(registration)
    }

    /// Deregisters the instances `service` describes (ids `host:port`); returns how many
    /// were registered. Other instances of the same service are left alone.
    pub async fn unregister_service(
        &self,
        service: &Microservice,
    ) -> Result<usize, registry::Error> {
        let instances = service.clone().into_instances()?;
        let mut removed = 0;
        for instance in &instances {
            match self
                .inner
                .registry
                .deregister(instance.service(), instance.id())
                .await
            {
                Ok(_) => removed += 1,
                Err(registry::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// The instances of `service` as the registry holds them now (every health; effective
    /// health: a lapsed lease reads `Critical`).
    pub async fn discover_service(&self, service: &str) -> Result<Vec<Instance>, registry::Error> {
        let name: ServiceName = service.parse()?;
        Ok(self.inner.registry.snapshot(&name).await?.into_instances())
    }

    /// Every service with at least one instance.
    pub async fn list_services(&self) -> Result<Vec<ServiceName>, registry::Error> {
        self.inner.registry.services().await
    }

    /// The instances of every service that `filter` matches (name prefix, version, zone,
    /// metadata), by service then id.
    pub async fn search_services(
        &self,
        filter: &ServiceFilter,
    ) -> Result<Vec<Instance>, registry::Error> {
        let mut found = Vec::new();
        for service in self.inner.registry.services().await? {
            if !filter.matches_service(&service) {
                continue;
            }
            let snapshot = self.inner.registry.snapshot(&service).await?;
            found.extend(
                snapshot
                    .into_instances()
                    .into_iter()
                    .filter(|i| filter.matches(i)),
            );
        }
        found.sort_by(|a, b| (a.service(), a.id()).cmp(&(b.service(), b.id())));
        Ok(found)
    }

    /// The health of `service`: instances by status and each one's last check, with the
    /// ejections of this process's outlier detection.
    pub async fn service_health(&self, service: &str) -> Result<ServiceHealth, registry::Error> {
        let name: ServiceName = service.parse()?;
        let http = crate::sync::lock(&self.inner.clients)
            .get(&name)
            .map(|c| c.parts.clone());
        #[cfg(feature = "tonic")]
        let grpc = crate::sync::lock(&self.inner.grpc_clients)
            .get(&name)
            .map(|c| c.parts.clone());
        #[cfg(not(feature = "tonic"))]
        let grpc: Option<Arc<client::Parts>> = None;
        let ejections = move |id: &InstanceId| {
            [&http, &grpc]
                .into_iter()
                .flatten()
                .find_map(|p| p.outlier.ejection(id))
                .map(|e| e.reason.to_string())
        };
        service_health(&self.inner.registry, &name, ejections).await
    }

    /// Changes the strategy of `service` while it runs: its clients switch at once, in the
    /// background, and requests in flight complete where they were sent. Clients made later
    /// use it too. The strategy is checked first (the error names the field).
    pub fn set_strategy(&self, service: &str, strategy: StrategyPolicy) -> Result<(), PolicyError> {
        let name: ServiceName = service
            .parse()
            .map_err(|e| PolicyError::new("service", e))?;
        let pick = strategy
            .pick::<RequestBody>()
            .map_err(|e| e.within("strategy"))?;
        {
            let mut config = crate::sync::lock(&self.inner.config);
            config
                .services
                .entry(service.to_owned())
                .or_default()
                .strategy = Some(StrategyOverride {
                name: Some(strategy.name.clone()),
                hash_header: strategy.hash_header.clone(),
            });
        }
        if let Some(c) = crate::sync::lock(&self.inner.clients).get(&name) {
            c.parts.switch.set(pick.clone());
        }
        #[cfg(feature = "tonic")]
        if let Some(c) = crate::sync::lock(&self.inner.grpc_clients).get(&name) {
            c.parts.switch.set(pick);
        }
        #[cfg(not(feature = "tonic"))]
        drop(pick);
        Ok(())
    }

    /// The HTTP clients built so far, by service name (for an admin API: breakers,
    /// endpoints, ejections).
    pub fn clients(&self) -> Vec<Client> {
        let mut clients: Vec<Client> = crate::sync::lock(&self.inner.clients)
            .values()
            .cloned()
            .collect();
        clients.sort_by(|a, b| a.service().cmp(b.service()));
        clients
    }

    /// The HTTP client of `service` if it was built.
    pub fn existing_client(&self, service: &str) -> Option<Client> {
        let name: ServiceName = service.parse().ok()?;
        crate::sync::lock(&self.inner.clients).get(&name).cloned()
    }

    /// The HTTP client of `service`: built on first use with the service's policies, then
    /// shared by every caller (see [`Client`]). The name is checked; the service need not
    /// be registered yet (calls wait for an instance up to the timeout).
    pub fn client(&self, service: &str) -> Result<Client, PolicyError> {
        self.built_once(&self.inner.clients, service, |policies| {
            let (inner, parts) = client::build(
                self.inner.registry.clone(),
                service,
                policies,
                self.inner.http.clone(),
                crate::breaker::HttpClassifier::server_errors(),
            )?;
            Ok(Client { inner, parts })
        })
    }

    /// The client of `service` in `clients`, made by `make` with the service's policies the
    /// first time.
    fn built_once<C: Clone>(
        &self,
        clients: &Mutex<HashMap<ServiceName, C>>,
        service: &str,
        make: impl FnOnce(&Policies) -> Result<C, PolicyError>,
    ) -> Result<C, PolicyError> {
        let name: ServiceName = service
            .parse()
            .map_err(|e| PolicyError::new("service", e))?;
        let mut clients = crate::sync::lock(clients);
        if let Some(c) = clients.get(&name) {
            return Ok(c.clone());
        }
        let c = make(&self.policies(service)?)?;
        clients.insert(name, c.clone());
        Ok(c)
    }

    /// The gRPC client of `service` (feature `tonic`), for generated tonic clients:
    /// `GreeterClient::new(mesh.grpc("greeter")?)`. See [`GrpcClient`](super::GrpcClient).
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn grpc(&self, service: &str) -> Result<super::GrpcClient, PolicyError> {
        self.built_once(&self.inner.grpc_clients, service, |policies| {
            let (inner, parts) = client::build(
                self.inner.registry.clone(),
                service,
                policies,
                self.inner.grpc.clone(),
                super::grpc::classifier(),
            )?;
            Ok(super::GrpcClient::new(
                inner,
                parts,
                self.inner.grpc_max_request,
            ))
        })
    }

    /// Calls `service` with `req` through its [`client`](Self::client). The body is read
    /// whole first (a retry sends it again); its path is the path called on the instance.
    pub async fn call_service<B>(
        &self,
        service: &str,
        req: Request<B>,
    ) -> Result<Response<Body>, Error>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: Into<tower::BoxError>,
    {
        let bad = |source: tower::BoxError| Error::Request {
            service: Arc::from(service),
            source,
        };
        let client = self.client(service).map_err(|e| bad(e.into()))?;
        let (head, body) = req.into_parts();
        let body = body.collect().await.map_err(|e| bad(e.into()))?.to_bytes();
        let req: MeshRequest = Request::from_parts(head, RequestBody::whole(body));
        client.oneshot(req).await
    }
}

/// The instances [`Mesh::register_service_with_ttl`] keeps registered: one
/// [`SelfRegistration`] guard each. Dropping it deregisters them in the background;
/// [`shutdown`](Self::shutdown) does it and waits.
#[derive(Debug)]
pub struct ServiceRegistration {
    guards: Vec<SelfRegistration>,
}

impl ServiceRegistration {
    /// The instances kept registered.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.guards.iter().map(|g| g.instance())
    }

    /// The guard of each instance, for its status.
    pub fn guards(&self) -> &[SelfRegistration] {
        &self.guards
    }

    /// Deregisters every instance and stops the heartbeats; the first error, after trying
    /// them all.
    pub async fn shutdown(self) -> Result<(), SelfRegistrationError> {
        let mut first = None;
        for guard in self.guards {
            if let Err(e) = guard.shutdown().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
