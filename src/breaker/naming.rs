//! The names of endpoint breakers: `<name>/<instance id>` for an endpoint made through
//! discovery, `<name>#<n>` for one made by [`Layer::layer`](tower_layer::Layer::layer)
//! anywhere else, so that no two endpoints' breakers (and so their events and metrics) share a
//! name by default.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::state::Config;

#[cfg(feature = "discover")]
use crate::instance::{Instance, InstanceId, ServiceName};

#[cfg(feature = "discover")]
thread_local! {
    /// The instance whose endpoint discovery is making on this thread, if any (set around
    /// the layer call by [`making`]).
    static MAKING: std::cell::RefCell<Option<(ServiceName, InstanceId)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, which wraps the endpoint made for `instance` in layers, with `instance` as the
/// instance being made: an endpoint breaker made by `f` on this thread names itself after it.
/// Used by [`discover::Layered`](crate::discover::Layered), which only has
/// [`Layer::layer`](tower_layer::Layer::layer) to call, so that layers nested in others (a
/// `ServiceBuilder` stack, say) see the instance too.
#[cfg(feature = "discover")]
pub(crate) fn making<R>(instance: &Instance, f: impl FnOnce() -> R) -> R {
    /// Puts back what was there before, even if `f` panics.
    struct Restore(Option<(ServiceName, InstanceId)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            MAKING.with(|m| *m.borrow_mut() = previous);
        }
    }
    let current = (instance.service().clone(), instance.id().clone());
    let _restore = Restore(MAKING.with(|m| m.replace(Some(current))));
    f()
}

/// The name of a new endpoint breaker made with `config` by `Layer::layer`: after the
/// instance being made, if discovery is making one on this thread, numbered otherwise.
pub(crate) fn endpoint_name(config: &Config) -> Arc<str> {
    #[cfg(feature = "discover")]
    if let Some(name) = MAKING.with(|m| {
        m.borrow()
            .as_ref()
            .map(|(service, id)| instance_name(config, service.as_str(), id.as_str()))
    }) {
        return name;
    }
    let n = config.numbered.fetch_add(1, Ordering::Relaxed) + 1;
    Arc::from(format!(
        "{}#{n}",
        config.name.as_deref().unwrap_or("breaker")
    ))
}

/// `<name>/<instance id>`, where the name is the builder's or else the instance's service.
#[cfg(feature = "discover")]
pub(crate) fn instance_name(config: &Config, service: &str, id: &str) -> Arc<str> {
    Arc::from(format!(
        "{}/{id}",
        config.name.as_deref().unwrap_or(service)
    ))
}
