//! tonic endpoints: a lazily connecting `Channel` per instance, and a feed for tonic's own
//! balanced channel.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;
use tonic::transport::channel::Change as TonicChange;
use tonic::transport::{Channel, Endpoint};

use crate::instance::{Instance, InstanceId, Scheme};
use crate::registry::Registry;

use super::error::BuildError;
use super::{Builder, DiscoverHandle, MakeEndpoint};

type Configure = Arc<dyn Fn(Endpoint) -> Endpoint + Send + Sync>;

/// Makes a lazily connecting [`tonic::transport::Channel`] per instance (`http://host:port`,
/// or `https://` for instances registered with scheme `https`); a
/// [`configure`](TonicEndpoints::configure) hook sets timeouts, keep-alive or TLS on each
/// [`Endpoint`].
///
/// Each `Channel` is tonic's: making one spawns its worker task on the current tokio runtime
/// (it ends when the channel is dropped), so endpoints must be made inside a runtime, as
/// [`RegistryDiscover`](super::RegistryDiscover) and its [`spawn`](super::RegistryDiscover::spawn)
/// do when the balancer takes them.
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
/// as [`RegistryDiscover::new`](super::RegistryDiscover::new). `capacity` bounds the changes
/// waiting between discovery and the channel.
///
/// # Background task
///
/// This spawns a task on the current tokio runtime, which reads the registry and sends the
/// changes to the channel (tonic spawns the channel's own worker too). The task ends when the
/// channel ends, that is when every clone of the returned `Channel` is dropped and tonic's
/// worker has stopped, without waiting for a registry event; it then drops its registry watch.
///
/// # Errors
///
/// [`BuildError`] for an invalid service name or a zero `capacity`.
///
/// # Panics
///
/// Outside a tokio runtime.
///
/// ```
/// use tower_mesh::discover::{balance_channel, TonicEndpoints};
/// use tower_mesh::registry::MemoryRegistry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_mesh::discover::error::BuildError> {
/// let (channel, health) = balance_channel(MemoryRegistry::new(), "orders", TonicEndpoints::new(), 64)?;
/// // let client = OrdersClient::new(channel);
/// assert!(!health.is_stale());
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
pub fn balance_channel<R: Registry>(
    registry: R,
    service: impl AsRef<str>,
    endpoints: TonicEndpoints,
    capacity: usize,
) -> Result<(Channel, DiscoverHandle), BuildError> {
    if capacity == 0 {
        return Err(BuildError::ZeroCount {
            setting: "capacity",
        });
    }
    let mut discover =
        Builder::new().build(registry, service, move |i: &Instance| endpoints.endpoint(i))?;
    let (channel, tx) = Channel::balance_channel::<InstanceId>(capacity);
    let handle = discover.handle();
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                // The channel is gone (every clone dropped, its worker stopped): nothing is
                // left to feed, whether or not the registry changes again.
                () = tx.closed() => return,
                item = discover.next() => item,
            };
            let change = match item {
                Some(Ok(tower::discover::Change::Insert(k, e))) => TonicChange::Insert(k, e),
                Some(Ok(tower::discover::Change::Remove(k))) => TonicChange::Remove(k),
                // A checked service name never ends the stream or makes it fail.
                Some(Err(error)) => {
                    tracing::error!(%error, "tonic balance channel: discovery failed");
                    return;
                }
                None => return,
            };
            if tx.send(change).await.is_err() {
                return; // the channel is gone
            }
        }
    });
    Ok((channel, handle))
}
