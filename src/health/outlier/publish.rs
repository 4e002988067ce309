//! [`PublishToRegistry`]: one process's ejections made visible to the whole fleet.

use std::fmt;
use std::future::Future;

use tokio::sync::mpsc;

use crate::instance::{Health, InstanceId, ServiceName};
use crate::registry::Registry;

use super::hooks::OnEjection;
use super::report::{Ejection, Reason};

/// How many ejections may wait to be written before more are dropped (and logged).
const QUEUE: usize = 256;

/// An [`OnEjection`] hook that publishes every ejection to the registry: the instance's health
/// is set to [`Health::Warning`] through [`Registry::set_health`], and the reason logged, so
/// that every process discovering the service sees the finding (`Warning` instances count as
/// unhealthy for the balancer's panic threshold, and a discovery that filters warnings out
/// stops routing to it).
///
/// Only an instance registered `Passing` is set to `Warning`: one that is `Critical` or in
/// `Maintenance` is left as it is (read through a snapshot just before the write; a change
/// between the two can be overwritten). A return from ejection writes nothing: the `Warning`
/// stays until something sets the health again, normally a successful active health check
/// (or the instance registering or being set `Passing` again). Without active checks on the
/// service, clear it yourself, for example from [`OnEjection::on_return`].
///
/// Writes go through a task of their own (the hook never waits on the registry): a full
/// queue or a failed write is logged at `WARN` and dropped, never retried, so a registry
/// outage costs no request anything.
///
/// ```
/// use tower_mesh::health::outlier::{OutlierLayer, PublishToRegistry};
/// use tower_mesh::instance::InstanceId;
/// use tower_mesh::registry::MemoryRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = MemoryRegistry::new();
/// let layer = OutlierLayer::builder()
///     .name("orders")
///     .on_ejection(PublishToRegistry::new(registry, "orders".parse()?))
///     .build::<InstanceId>()?;
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PublishToRegistry {
    service: ServiceName,
    queue: mpsc::Sender<(InstanceId, Reason)>,
}

impl fmt::Debug for PublishToRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishToRegistry")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl PublishToRegistry {
    /// Publishes the ejections of `service`'s instances to `registry`, **spawning** the
    /// writing task on the current tokio runtime; it ends when the hook (every clone) is
    /// dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn new<R: Registry>(registry: R, service: ServiceName) -> Self {
        let (hook, task) = Self::pair(registry, service);
        tokio::spawn(task);
        hook
    }

    /// Like [`new`](Self::new), handing out the writing task to run on another executor.
    pub fn pair<R: Registry>(
        registry: R,
        service: ServiceName,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = write(registry, service.clone(), rx);
        (PublishToRegistry { service, queue }, task)
    }
}

async fn write<R: Registry>(
    registry: R,
    service: ServiceName,
    mut rx: mpsc::Receiver<(InstanceId, Reason)>,
) {
    while let Some((id, reason)) = rx.recv().await {
        let health = match registry.snapshot(&service).await {
            Ok(snapshot) => snapshot
                .instances()
                .iter()
                .find(|instance| instance.id() == &id)
                .map(|instance| instance.health()),
            Err(error) => {
                tracing::warn!(
                    %service, instance = %id, %reason, %error,
                    "could not publish an outlier ejection to the registry"
                );
                continue;
            }
        };
        match health {
            Some(Health::Passing) => {}
            Some(health) => {
                tracing::debug!(
                    %service, instance = %id, %reason, %health,
                    "outlier ejection not published: the instance is not passing"
                );
                continue;
            }
            None => {
                tracing::debug!(
                    %service, instance = %id, %reason,
                    "outlier ejection not published: the instance is not registered"
                );
                continue;
            }
        }
        match registry.set_health(&service, &id, Health::Warning).await {
            Ok(revision) => tracing::warn!(
                %service, instance = %id, %reason, %revision,
                "outlier ejection published to the registry: instance set to warning"
            ),
            Err(error) => tracing::warn!(
                %service, instance = %id, %reason, %error,
                "could not publish an outlier ejection to the registry"
            ),
        }
    }
}

impl OnEjection<InstanceId> for PublishToRegistry {
    fn on_ejection(&self, ejection: &Ejection<InstanceId>) {
        match self.queue.try_send((ejection.key.clone(), ejection.reason)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => tracing::warn!(
                service = %self.service,
                instance = %ejection.key,
                reason = %ejection.reason,
                "outlier ejection not published: the registry queue is full"
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => tracing::warn!(
                service = %self.service,
                instance = %ejection.key,
                "outlier ejection not published: the publishing task is gone"
            ),
        }
    }
}
