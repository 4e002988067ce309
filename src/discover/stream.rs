//! The registry-fed `Discover` stream.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use tower::discover::Change;

use crate::instance::{InstanceId, InvalidInput, ServiceName};
use crate::registry::{Error, Registry};

use super::builder::{Builder, Config};
use super::handle::DiscoverHandle;
use super::outbox::{Out, Outbox};
use super::source::Core;
use super::MakeEndpoint;

/// A [`Discover`](tower::discover::Discover) of one service's instances, fed by a
/// [`Registry`] watch: a `Stream` of `Result<Change<InstanceId, F::Service>, Error>`, so
/// tower's blanket `Discover` impl applies and any balancer can use it.
///
/// - Offers instances that are `Passing` (and `Warning`, unless configured otherwise) with a
///   weight above 0 (weight 0 drains: no new traffic); removes those that leave or turn
///   ineligible; re-inserts an instance whose address, scheme, version, weight, zone or metadata
///   changed. A health change between two eligible states is no change to the balancer: the
///   endpoint's [`LiveHealth`](super::LiveHealth), if its factory gave it one
///   ([`MakeEndpoint::weighted`]), is updated instead.
/// - Changes are collapsed per instance until they are taken: an instance registered and
///   deregistered between two polls yields nothing, one changed ten times yields one insert.
///   Endpoints are made as their inserts are taken.
/// - **Static stability**: a registry error never reaches the balancer (tower turns a
///   `Discover` error into a fatal balancer error). The stream keeps the last known set,
///   logs the error, marks [`DiscoverHandle::is_stale`], retries with backoff and resumes from
///   the last revision. Only an invalid service name given to [`new`](RegistryDiscover::new)
///   ends it, with an error, at the first poll ([`Builder::build`] refuses it instead).
/// - **It never ends** while the registry exists.
/// - **Mass-disappearance guard**: see [`Builder::max_removal_share`].
/// - Events at or below the revision already applied (duplicates, or older than a reset) are
///   ignored: a watch delivers changes in revision order. A corrupt registry row is logged with
///   its service and instance and that instance keeps its last good version.
/// - **Bounded under churn**: it remembers the instances the registry holds and the endpoints
///   the balancer holds, nothing about instances that left, and its work per event does not
///   grow with the number of instances.
/// - `Unpin` when `F` is: balancers need an `Unpin` discover.
///
/// Made with the defaults by [`new`](RegistryDiscover::new), or configured with a
/// [`Builder`]. tower's balancers poll discovery only from `poll_ready`. To apply changes while
/// no request flows, drive the stream in the background with
/// [`spawn`](RegistryDiscover::spawn).
///
/// ```
/// use futures_util::StreamExt;
/// use tower::discover::Change;
/// use tower_mesh::discover::RegistryDiscover;
/// use tower_mesh::instance::Instance;
/// use tower_mesh::registry::{MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = MemoryRegistry::new();
/// let orders_1 = Instance::builder("orders", "orders-1").port(8080).build().unwrap();
/// registry.register(orders_1.into()).await.unwrap();
/// // The endpoint of each instance is here just its port.
/// let mut discover = RegistryDiscover::new(registry, "orders", |i: &Instance| i.port());
/// match discover.next().await {
///     Some(Ok(Change::Insert(id, port))) => assert_eq!((id.as_str(), port), ("orders-1", 8080)),
///     _ => unreachable!(),
/// }
/// # }
/// ```
pub struct RegistryDiscover<R, F> {
    core: Result<Core<R>, Option<InvalidInput>>,
    outbox: Outbox,
    factory: F,
    handle: DiscoverHandle,
}

// Nothing in the stream is ever pinned in place: its futures are boxed and the watch is
// `Unpin`, so it may move freely whatever `R` and the endpoints are.
impl<R, F: Unpin> Unpin for RegistryDiscover<R, F> {}

impl<R, F> fmt::Debug for RegistryDiscover<R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryDiscover")
            .field("service", &self.handle.shared.service)
            .field("endpoints", &self.outbox.desired_len())
            .field("revision", &self.handle.revision())
            .field("stale", &self.handle.is_stale())
            .finish_non_exhaustive()
    }
}

impl<R: Registry, F: MakeEndpoint> RegistryDiscover<R, F> {
    /// The stream for `service` with the default settings (see [`Builder`]). An invalid
    /// service name is reported as the stream's first and only item (an
    /// [`Error::Invalid`]); [`Builder::build`] refuses it up front instead.
    pub fn new(registry: R, service: impl AsRef<str>, factory: F) -> Self {
        Builder::new().build_lazy(registry, service, factory)
    }

    pub(super) fn from_parts(
        service: Result<ServiceName, InvalidInput>,
        registry: R,
        config: Config,
        factory: F,
    ) -> Self {
        let handle = DiscoverHandle::new(service.as_ref().ok().cloned());
        let core = match service {
            Ok(service) => Ok(Core::new(registry, service, config, handle.clone())),
            Err(e) => Err(Some(e)),
        };
        RegistryDiscover {
            core,
            outbox: Outbox::default(),
            factory,
            handle,
        }
    }

    /// A handle reporting the stream's health: stale or not, the last error, the revision
    /// applied, the number of endpoints.
    pub fn handle(&self) -> DiscoverHandle {
        self.handle.clone()
    }

    pub(crate) fn into_parts(self) -> (Result<Core<R>, Option<InvalidInput>>, Outbox, F) {
        (self.core, self.outbox, self.factory)
    }

    /// The sizes of what the stream keeps, and the instances it examined so far.
    #[cfg(test)]
    pub(crate) fn internals(&self) -> Internals {
        let core = self.core.as_ref().ok();
        let (slots, slots_room) = self.outbox.slots();
        Internals {
            instances: core.map_or(0, |c| c.sizes().0),
            held: core.map_or(0, |c| c.sizes().1),
            slots,
            room: core.map_or(0, |c| c.sizes().2) + slots_room,
            visits: core.map_or(0, |c| c.visits),
        }
    }
}

/// What a stream keeps; see `RegistryDiscover::internals`.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Internals {
    pub(crate) instances: usize,
    pub(crate) held: usize,
    pub(crate) slots: usize,
    /// What the maps and the queue have room for.
    pub(crate) room: usize,
    pub(crate) visits: u64,
}

/// Makes the endpoint for a change taken from the outbox.
pub(crate) fn hand_out<F: MakeEndpoint>(
    factory: &mut F,
    outbox: &mut Outbox,
    out: Out,
) -> Change<InstanceId, F::Service> {
    match out {
        Out::Insert(id, instance) => {
            let (svc, live) = factory.make_live_endpoint(&instance);
            if let Some(live) = live {
                outbox.handed(&id, live);
            }
            Change::Insert(id, svc)
        }
        Out::Remove(id) => Change::Remove(id),
    }
}

impl<R, F> Stream for RegistryDiscover<R, F>
where
    R: Registry,
    F: MakeEndpoint + Unpin,
{
    type Item = Result<Change<InstanceId, F::Service>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let core = match &mut this.core {
            Ok(core) => core,
            Err(e) => return Poll::Ready(e.take().map(|e| Err(Error::Invalid(e)))),
        };
        loop {
            if let Some(out) = this.outbox.next() {
                let change = hand_out(&mut this.factory, &mut this.outbox, out);
                return Poll::Ready(Some(Ok(change)));
            }
            // Every change so far has been taken: only now report the revision as applied.
            core.publish(&this.outbox);
            let input = ready!(core.poll_input(cx));
            core.apply(input, &mut this.outbox);
        }
    }
}
