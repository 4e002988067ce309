//! The endpoint breakers of one service, recorded as discovery makes them, for
//! introspection (an admin API's breaker states per endpoint).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::balance::EndpointId;
use crate::breaker::handle::WeakHandle;
use crate::breaker::{EndpointBreaker, Handle};
use crate::discover::{LiveHealth, MakeEndpoint};
use crate::instance::{Instance, InstanceId};

/// The breakers of a service's endpoints by instance; an entry whose endpoint was dropped
/// (the instance left, or was replaced) is dead and pruned, so the map stays within about
/// twice the live endpoints.
#[derive(Default)]
pub(crate) struct EndpointBreakers {
    map: Mutex<Map>,
}

#[derive(Default)]
struct Map {
    handles: HashMap<InstanceId, WeakHandle>,
    /// The instance of each endpoint as the balancer names it ([`EndpointId`]).
    ids: HashMap<EndpointId, InstanceId>,
    /// Prune when the map grows past this.
    prune_at: usize,
}

impl Map {
    fn prune(&mut self) {
        self.handles.retain(|_, h| !h.is_dead());
        let handles = &self.handles;
        self.ids.retain(|_, id| handles.contains_key(id));
        self.prune_at = 2 * self.handles.len() + 16;
        if self.handles.capacity() > 4 * self.prune_at {
            self.handles.shrink_to(self.prune_at);
            self.ids.shrink_to(self.prune_at);
        }
    }
}

impl EndpointBreakers {
    fn record(&self, id: InstanceId, handle: &Handle) {
        let mut map = crate::sync::lock(&self.map);
        map.ids.insert(EndpointId::of(&id), id.clone());
        map.handles.insert(id, handle.downgrade());
        if map.handles.len() > map.prune_at {
            map.prune();
        }
    }

    /// The instance behind an endpoint as the balancer names it (an [`Avoid`] set's
    /// [`served`](crate::balance::Avoid::served)).
    ///
    /// [`Avoid`]: crate::balance::Avoid
    pub(crate) fn instance(&self, endpoint: EndpointId) -> Option<InstanceId> {
        crate::sync::lock(&self.map).ids.get(&endpoint).cloned()
    }

    /// The live endpoints' breakers, by instance id.
    pub(crate) fn live(&self) -> Vec<(InstanceId, Handle)> {
        let mut map = crate::sync::lock(&self.map);
        map.prune();
        let mut live: Vec<_> = map
            .handles
            .iter()
            .filter_map(|(id, h)| Some((id.clone(), h.upgrade()?)))
            .collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        live
    }
}

/// A factory of endpoint breakers that records each one's handle.
pub(crate) struct Recorded<F> {
    pub(crate) inner: F,
    pub(crate) breakers: Arc<EndpointBreakers>,
}

impl<F, S, C> MakeEndpoint for Recorded<F>
where
    F: MakeEndpoint<Service = EndpointBreaker<S, C>>,
{
    type Service = EndpointBreaker<S, C>;

    fn make_endpoint(&mut self, instance: &Instance) -> Self::Service {
        let svc = self.inner.make_endpoint(instance);
        self.breakers.record(instance.id().clone(), &svc.handle());
        svc
    }

    fn make_live_endpoint(&mut self, instance: &Instance) -> (Self::Service, Option<LiveHealth>) {
        let (svc, health) = self.inner.make_live_endpoint(instance);
        self.breakers.record(instance.id().clone(), &svc.handle());
        (svc, health)
    }
}
