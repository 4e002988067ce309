//! Service discovery: a registry-fed [`Discover`](tower::discover::Discover) stream that any
//! tower balancer can use, and the endpoint factories that turn instances into services.
//!
//! [`RegistryDiscover`] watches one service in a [`Registry`](crate::registry::Registry) and
//! yields `Change::Insert`/`Change::Remove` as instances come, go, drain or change health. It
//! never hands the balancer an error for a registry outage (static stability) and never ends.
//! A move between `Passing` and `Warning` re-inserts nothing: endpoints made through
//! [`MakeEndpoint::weighted`] read the instance's [`LiveHealth`], which discovery keeps current.
//! [`HttpEndpoints`] makes one endpoint per instance over a single shared hyper-util client,
//! rewriting each request's scheme and authority, so callers write `Request::get("/orders/42")`
//! and never see an address.
//!
//! [`RegistryDiscover::new`] uses the defaults; a [`Builder`] sets the warning filter, a
//! preferred zone, the mass-disappearance guard and the retry backoff, and refuses bad values
//! with an [`error::BuildError`]. [`spawn`](RegistryDiscover::spawn) drives the stream on a
//! tokio task so that changes apply while no request flows.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_mesh::discover::{p2c_peak_ewma, HttpEndpoints, RegistryDiscover};
//! use tower_mesh::registry::MemoryRegistry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = MemoryRegistry::new();
//! // Instances of "orders" become endpoints of a peak-EWMA balancer; changes apply in the
//! // background even when no request flows.
//! let discover = RegistryDiscover::new(registry, "orders", HttpEndpoints::new()).spawn();
//! let client = ServiceBuilder::new()
//!     .buffer(1024)
//!     .timeout(Duration::from_secs(2))
//!     .service(p2c_peak_ewma(discover, Duration::from_millis(30), Duration::from_secs(10)));
//! # drop(client);
//! # }
//! ```

mod builder;
pub mod error;
#[cfg(feature = "tonic")]
mod grpc;
mod handle;
mod http;
mod outbox;
mod source;
mod spawn;
mod stream;
#[cfg(test)]
mod tests;
mod weighted;

pub use self::builder::Builder;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use self::grpc::{balance_channel, TonicEndpoints};
pub use self::handle::DiscoverHandle;
pub use self::http::{DefaultBody, HttpEndpoint, HttpEndpoints};
pub use self::spawn::Spawned;
pub use self::stream::RegistryDiscover;
pub use self::weighted::{InstanceEndpoint, LiveHealth, Weighted};

use std::time::Duration;

use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower_layer::Layer;

use crate::instance::Instance;

/// Makes the endpoint service for an instance: an HTTP client bound to its address, a tonic
/// channel, anything. Implemented for every `FnMut(&Instance) -> S`.
pub trait MakeEndpoint {
    /// The endpoint service.
    type Service;

    /// Makes the endpoint for `instance`. Called again (and the old endpoint replaced) when the
    /// instance's address, weight, zone or metadata changes.
    fn make_endpoint(&mut self, instance: &Instance) -> Self::Service;

    /// Makes the endpoint for `instance`, with the [`LiveHealth`] its endpoint reads, if any:
    /// discovery keeps it up to date while the instance moves between `Passing` and `Warning`
    /// (which re-inserts nothing). This is what discovery calls. The default makes the endpoint
    /// with [`make_endpoint`](MakeEndpoint::make_endpoint) and no live health; factories whose
    /// endpoints read health ([`weighted`](MakeEndpoint::weighted)) override it, and factories
    /// that wrap another forward it.
    fn make_live_endpoint(&mut self, instance: &Instance) -> (Self::Service, Option<LiveHealth>) {
        (self.make_endpoint(instance), None)
    }

    /// Makes every endpoint carry its instance's weight and health
    /// ([`InstanceEndpoint`]), for weighted balancers such as tower-mesh's `balance::Weighted`
    /// (an instance re-registered with another weight is re-inserted, so the balancer sees the
    /// new weight). The endpoints stay what they were for everyone else: an
    /// [`InstanceEndpoint`] is tower's [`Load`](tower::load::Load) when what it wraps is, so
    /// one factory feeds tower's p2c balancer and tower-mesh's `Balance` alike.
    fn weighted(self) -> Weighted<Self>
    where
        Self: Sized,
    {
        Weighted { inner: self }
    }

    /// Wraps every endpoint this factory makes in `layer` (where a per-endpoint breaker or load
    /// metric goes).
    fn layered<L>(self, layer: L) -> Layered<Self, L>
    where
        Self: Sized,
        L: Layer<Self::Service>,
    {
        Layered { inner: self, layer }
    }
}

impl<F, S> MakeEndpoint for F
where
    F: FnMut(&Instance) -> S,
{
    type Service = S;

    fn make_endpoint(&mut self, instance: &Instance) -> S {
        self(instance)
    }
}

/// A factory whose endpoints are wrapped in a layer; see [`MakeEndpoint::layered`].
///
/// The layer sees only the endpoint, through [`Layer::layer`]; while that call runs, an
/// endpoint breaker layer (`breaker::EndpointBreakerLayer`, given here alone or inside another
/// layer, such as a `ServiceBuilder` stack) learns the instance, and names the endpoint's
/// breaker `<service>/<instance id>`.
#[derive(Debug, Clone)]
pub struct Layered<F, L> {
    inner: F,
    layer: L,
}

impl<F, L> Layered<F, L> {
    /// Wraps `inner`, the endpoint made for `instance`, in the layer.
    fn layer_for<S>(&self, instance: &Instance, inner: S) -> L::Service
    where
        L: Layer<S>,
    {
        #[cfg(feature = "breaker")]
        return crate::breaker::making(instance, || self.layer.layer(inner));
        #[cfg(not(feature = "breaker"))]
        {
            let _ = instance;
            self.layer.layer(inner)
        }
    }
}

impl<F, L> MakeEndpoint for Layered<F, L>
where
    F: MakeEndpoint,
    L: Layer<F::Service>,
{
    type Service = L::Service;

    fn make_endpoint(&mut self, instance: &Instance) -> Self::Service {
        let inner = self.inner.make_endpoint(instance);
        self.layer_for(instance, inner)
    }

    fn make_live_endpoint(&mut self, instance: &Instance) -> (Self::Service, Option<LiveHealth>) {
        let (inner, live) = self.inner.make_live_endpoint(instance);
        (self.layer_for(instance, inner), live)
    }
}

/// tower's power-of-two-choices balancer over `discover`, with peak-EWMA latency load
/// (Finagle's algorithm): `default_rtt` for unmeasured endpoints, `decay` for the average.
pub fn p2c_peak_ewma<D, Req>(
    discover: D,
    default_rtt: Duration,
    decay: Duration,
) -> tower::balance::p2c::Balance<PeakEwmaDiscover<D, CompleteOnResponse>, Req>
where
    D: tower::discover::Discover,
    D::Key: std::hash::Hash,
    D::Service: tower_service::Service<Req>,
    <D::Service as tower_service::Service<Req>>::Error: Into<tower::BoxError>,
{
    tower::balance::p2c::Balance::new(PeakEwmaDiscover::new(
        discover,
        default_rtt,
        decay,
        CompleteOnResponse::default(),
    ))
}

/// tower's power-of-two-choices balancer over `discover`, with pending-requests load.
pub fn p2c_pending<D, Req>(
    discover: D,
) -> tower::balance::p2c::Balance<PendingRequestsDiscover<D, CompleteOnResponse>, Req>
where
    D: tower::discover::Discover,
    D::Key: std::hash::Hash,
    D::Service: tower_service::Service<Req>,
    <D::Service as tower_service::Service<Req>>::Error: Into<tower::BoxError>,
{
    tower::balance::p2c::Balance::new(PendingRequestsDiscover::new(
        discover,
        CompleteOnResponse::default(),
    ))
}
