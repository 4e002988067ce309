//! [`OutlierLayer`]: the detector of one service and the ways to put its endpoints under it.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tower_layer::Layer;

use crate::breaker::DefaultClassifier;

use super::adapt::{OutlierDiscover, OutlierEndpoints};
use super::config::Builder;
use super::detector::Detector;
use super::endpoint::Membership;
use super::gateway::ErrorsAsGateway;
use super::handle::OutlierHandle;
use super::service::OutlierEndpoint;

/// The outlier detector of one service, and the layer that puts its endpoints under it.
///
/// Made by [`Builder::build`] (which spawns the detector's [`Worker`](super::Worker)); every
/// endpoint it wraps shares the one detector, which is what the success-rate rule and the
/// ejection cap compare across. Endpoints are known by a key `K`: the discovery key when the
/// layer wraps a [`Discover`](tower::discover::Discover) stream ([`Layer`],
/// [`discover`](Self::discover)), the instance id when it wraps an endpoint factory
/// ([`endpoints`](Self::endpoints)), or any key given to [`layer_keyed`](Self::layer_keyed).
/// Services for the same key share its state; it is released when the last one is dropped.
///
/// Cloning the layer is cheap and shares the detector.
pub struct OutlierLayer<K, C = DefaultClassifier, G = ErrorsAsGateway> {
    detector: Arc<Detector<K>>,
    classifier: C,
    gateway: G,
}

impl<K, C: Clone, G: Clone> Clone for OutlierLayer<K, C, G> {
    fn clone(&self) -> Self {
        OutlierLayer {
            detector: self.detector.clone(),
            classifier: self.classifier.clone(),
            gateway: self.gateway.clone(),
        }
    }
}

impl<K, C: fmt::Debug, G: fmt::Debug> fmt::Debug for OutlierLayer<K, C, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierLayer")
            .field("detector", &self.detector)
            .field("classifier", &self.classifier)
            .field("gateway", &self.gateway)
            .finish()
    }
}

impl OutlierLayer<()> {
    /// A builder with Envoy's defaults (see [`Builder`]).
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<K, C, G> OutlierLayer<K, C, G> {
    pub(crate) fn from_parts(detector: Arc<Detector<K>>, classifier: C, gateway: G) -> Self {
        OutlierLayer {
            detector,
            classifier,
            gateway,
        }
    }

    /// A handle on the detector: the ejections in force, the counters, early returns.
    pub fn handle(&self) -> OutlierHandle<K> {
        OutlierHandle {
            detector: self.detector.clone(),
        }
    }
}

impl<K, C: Clone, G: Clone> OutlierLayer<K, C, G>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    /// Puts `inner` under outlier detection as the endpoint `key`.
    pub fn layer_keyed<S>(&self, inner: S, key: K) -> OutlierEndpoint<S, K, C, G> {
        let endpoint = self.detector.join(key);
        let member = Arc::new(Membership {
            endpoint,
            detector: self.detector.clone(),
        });
        OutlierEndpoint::from_parts(inner, member, self.classifier.clone(), self.gateway.clone())
    }

    /// Wraps a discovery stream: every endpoint it inserts is put under outlier detection,
    /// keyed by its discovery key (the same as [`Layer::layer`]). For tower-mesh's `Balance`,
    /// tower's balancers and anything else that takes a `Discover`.
    pub fn discover<D, S>(&self, discover: D) -> OutlierDiscover<D, K, C, G>
    where
        D: futures_core::TryStream<Ok = tower::discover::Change<K, S>>,
    {
        OutlierDiscover::new(discover, self.clone())
    }
}

impl<C: Clone, G: Clone> OutlierLayer<crate::instance::InstanceId, C, G> {
    /// Wraps an endpoint factory for [`RegistryDiscover`](crate::discover::RegistryDiscover):
    /// every endpoint it makes is put under outlier detection, keyed by its instance id.
    pub fn endpoints<F>(&self, make: F) -> OutlierEndpoints<F, C, G> {
        OutlierEndpoints::new(make, self.clone())
    }
}

/// Wraps a discovery stream (see [`OutlierLayer::discover`]), so that the layer goes right
/// below a balancer in a `ServiceBuilder`.
impl<D, K, C: Clone, G: Clone> Layer<D> for OutlierLayer<K, C, G>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    type Service = OutlierDiscover<D, K, C, G>;

    fn layer(&self, discover: D) -> Self::Service {
        OutlierDiscover::new(discover, self.clone())
    }
}
