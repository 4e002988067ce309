//! Putting the endpoints of a discovery stream or of an endpoint factory under outlier
//! detection.

use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;
use tower::discover::Change;

use crate::discover::{LiveHealth, MakeEndpoint};
use crate::instance::{Instance, InstanceId};

use super::layer::OutlierLayer;
use super::service::OutlierEndpoint;

pin_project! {
    /// A discovery stream whose endpoints are under outlier detection, keyed by their
    /// discovery key; see [`OutlierLayer::discover`].
    ///
    /// A `Discover` like the one it wraps (`Unpin` when that one is, as balancers need).
    /// Removals pass through; an endpoint's state is released when the balancer drops it.
    pub struct OutlierDiscover<D, K, C, G> {
        #[pin]
        inner: D,
        layer: OutlierLayer<K, C, G>,
    }
}

impl<D, K, C, G> OutlierDiscover<D, K, C, G> {
    pub(crate) fn new(inner: D, layer: OutlierLayer<K, C, G>) -> Self {
        OutlierDiscover { inner, layer }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    /// The layer its endpoints are wrapped with (and through it, the detector's handle).
    pub fn layer(&self) -> &OutlierLayer<K, C, G> {
        &self.layer
    }
}

impl<D: fmt::Debug, K, C: fmt::Debug, G: fmt::Debug> fmt::Debug for OutlierDiscover<D, K, C, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierDiscover")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<D, K, S, C, G> Stream for OutlierDiscover<D, K, C, G>
where
    D: TryStream<Ok = Change<K, S>>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    C: Clone,
    G: Clone,
{
    type Item = Result<Change<K, OutlierEndpoint<S, K, C, G>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let change = ready!(this.inner.try_poll_next(cx));
        Poll::Ready(change.map(|change| {
            change.map(|change| match change {
                Change::Insert(key, service) => {
                    let endpoint = this.layer.layer_keyed(service, key.clone());
                    Change::Insert(key, endpoint)
                }
                Change::Remove(key) => Change::Remove(key),
            })
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// An endpoint factory whose endpoints are under outlier detection, keyed by instance id;
/// see [`OutlierLayer::endpoints`].
#[derive(Clone)]
pub struct OutlierEndpoints<F, C, G> {
    inner: F,
    layer: OutlierLayer<InstanceId, C, G>,
}

impl<F, C, G> OutlierEndpoints<F, C, G> {
    pub(crate) fn new(inner: F, layer: OutlierLayer<InstanceId, C, G>) -> Self {
        OutlierEndpoints { inner, layer }
    }
}

impl<F: fmt::Debug, C: fmt::Debug, G: fmt::Debug> fmt::Debug for OutlierEndpoints<F, C, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierEndpoints")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<F, C, G> MakeEndpoint for OutlierEndpoints<F, C, G>
where
    F: MakeEndpoint,
    C: Clone,
    G: Clone,
{
    type Service = OutlierEndpoint<F::Service, InstanceId, C, G>;

    fn make_endpoint(&mut self, instance: &Instance) -> Self::Service {
        let inner = self.inner.make_endpoint(instance);
        self.layer.layer_keyed(inner, instance.id().clone())
    }

    fn make_live_endpoint(&mut self, instance: &Instance) -> (Self::Service, Option<LiveHealth>) {
        let (inner, live) = self.inner.make_live_endpoint(instance);
        (self.layer.layer_keyed(inner, instance.id().clone()), live)
    }
}
