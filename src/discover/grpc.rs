//! tonic endpoints: a lazily connecting `Channel` per instance, and a feed for tonic's own
//! balanced channel.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;
use tonic::transport::channel::Change as TonicChange;
use tonic::transport::{Channel, Endpoint};

use crate::instance::{Instance, InstanceId, Scheme};
use crate::registry::Registry;

use super::{DiscoverHandle, MakeEndpoint, RegistryDiscover};

type Configure = Arc<dyn Fn(Endpoint) -> Endpoint + Send + Sync>;

/// Makes a lazily connecting [`tonic::transport::Channel`] per instance (`http://host:port`,
/// or `https://` for instances registered with scheme `https`); a
/// [`configure`](TonicEndpoints::configure) hook sets timeouts, keep-alive or TLS on each
/// [`Endpoint`].
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_mesh::discover::{p2c_peak_ewma, RegistryDiscover, TonicEndpoints};
/// use tower_mesh::registry::MemoryRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let endpoints = TonicEndpoints::new().configure(|e| e.connect_timeout(Duration::from_secs(1)));
/// let discover = RegistryDiscover::new(MemoryRegistry::new(), "orders", endpoints).spawn();
/// let channel = ServiceBuilder::new()
///     .buffer(1024)
///     .service(p2c_peak_ewma(discover, Duration::from_millis(20), Duration::from_secs(10)));
/// // let client = OrdersClient::new(channel);
/// # drop(channel);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct TonicEndpoints {
    configure: Option<Configure>,
}

impl fmt::Debug for TonicEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonicEndpoints")
            .field("configure", &self.configure.is_some())
            .finish()
    }
}

impl TonicEndpoints {
    /// Endpoints with tonic's defaults.
    pub fn new() -> Self {
        TonicEndpoints::default()
    }

    /// Applies `f` to every endpoint before it is used.
    pub fn configure(mut self, f: impl Fn(Endpoint) -> Endpoint + Send + Sync + 'static) -> Self {
        self.configure = Some(Arc::new(f));
        self
    }

    /// The endpoint for `instance`.
    pub fn endpoint(&self, instance: &Instance) -> Endpoint {
        let scheme = match instance.scheme() {
            Scheme::Https => "https",
            Scheme::Http | Scheme::Grpc => "http",
        };
        // A validated host and port always make a valid URI.
        let endpoint = Endpoint::from_shared(format!("{scheme}://{}", instance.authority()))
            .expect("a validated instance address is a valid URI");
        match &self.configure {
            Some(f) => f(endpoint),
            None => endpoint,
        }
    }
}

impl MakeEndpoint for TonicEndpoints {
    type Service = Channel;

    fn make_endpoint(&mut self, instance: &Instance) -> Channel {
        self.endpoint(instance).connect_lazy()
    }
}

/// Feeds tonic's own [`Channel::balance_channel`] from the registry: a `Channel` whose
/// endpoints follow `service`'s instances, with the same eligibility rules and static stability
/// as [`RegistryDiscover`]. The feeding task runs until the channel (every clone) is dropped.
///
/// ```
/// use tower_mesh::discover::{balance_channel, TonicEndpoints};
/// use tower_mesh::registry::MemoryRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (channel, health) = balance_channel(MemoryRegistry::new(), "orders", TonicEndpoints::new(), 64);
/// // let client = OrdersClient::new(channel);
/// assert!(!health.is_stale());
/// # drop(channel);
/// # }
/// ```
pub fn balance_channel<R: Registry>(
    registry: R,
    service: impl AsRef<str>,
    endpoints: TonicEndpoints,
    capacity: usize,
) -> (Channel, DiscoverHandle) {
    let (channel, tx) = Channel::balance_channel::<InstanceId>(capacity.max(1));
    let mut discover =
        RegistryDiscover::new(registry, service, move |i: &Instance| endpoints.endpoint(i));
    let handle = discover.handle();
    tokio::spawn(async move {
        while let Some(item) = discover.next().await {
            match item {
                Ok(change) => {
                    let change = match change {
                        tower::discover::Change::Insert(k, e) => TonicChange::Insert(k, e),
                        tower::discover::Change::Remove(k) => TonicChange::Remove(k),
                    };
                    if tx.send(change).await.is_err() {
                        return; // the channel is gone
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "tonic balance channel: discovery cannot start");
                    return;
                }
            }
        }
    });
    (channel, handle)
}
