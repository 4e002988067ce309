//! A `Registry` that counts health writes on their way to a real `MemoryRegistry`, and the
//! watches opened on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tower_mesh::instance::{Health, InstanceId, ServiceName};
use tower_mesh::registry::{
    Clock, Error, HealthUpdate, LeaseConfig, MemoryRegistry, ReapReport, Registration, Registry,
    Revision, Snapshot, Watch,
};

#[derive(Clone, Default)]
pub struct Counting {
    pub inner: MemoryRegistry,
    writes: Arc<AtomicU64>,
    watches: Arc<AtomicU64>,
}

impl Counting {
    pub fn new() -> Self {
        Counting::default()
    }

    /// Health writes so far (`set_health` and `set_health_with`).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Watches opened so far (`watch` and `watch_all`).
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::SeqCst)
    }
}

impl Registry for Counting {
    async fn register(&self, registration: Registration) -> Result<Revision, Error> {
        self.inner.register(registration).await
    }
    async fn register_all(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        self.inner.register_all(registrations).await
    }
    async fn deregister(&self, service: &ServiceName, id: &InstanceId) -> Result<Revision, Error> {
        self.inner.deregister(service, id).await
    }
    async fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Revision>, Error> {
        self.inner.heartbeat(service, id).await
    }
    async fn set_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        health: Health,
    ) -> Result<Revision, Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.set_health(service, id, health).await
    }
    async fn set_health_with(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        update: HealthUpdate,
    ) -> Result<Revision, Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.set_health_with(service, id, update).await
    }
    async fn snapshot(&self, service: &ServiceName) -> Result<Snapshot, Error> {
        self.inner.snapshot(service).await
    }
    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.inner.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.inner.revision().await
    }
    fn watch(&self, service: &ServiceName, since: Revision) -> Watch {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch(service, since)
    }
    fn watch_all(&self, since: Revision) -> Watch {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch_all(since)
    }
    async fn compact(&self, up_to: Revision) -> Result<(), Error> {
        self.inner.compact(up_to).await
    }
    async fn reap(&self, config: &LeaseConfig) -> Result<ReapReport, Error> {
        self.inner.reap(config).await
    }
    fn clock(&self) -> &Clock {
        self.inner.clock()
    }
}
