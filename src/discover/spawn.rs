//! Driving a discover stream in the background.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::discover::Change;

use crate::instance::InstanceId;
use crate::registry::{Error, Registry};

use super::{DiscoverHandle, MakeEndpoint, RegistryDiscover};

/// A [`RegistryDiscover`] driven by a background task: registry changes are consumed, and
/// endpoints made, as they happen, whether or not requests flow. The balancer then finds them
/// waiting at its next `poll_ready`, so a removed endpoint is gone and a new one present before
/// the next request is routed. The task stops when this is dropped.
pub struct Spawned<S> {
    rx: mpsc::UnboundedReceiver<Result<Change<InstanceId, S>, Error>>,
    task: JoinHandle<()>,
    handle: DiscoverHandle,
}

impl<S> Spawned<S> {
    /// The stream's health; see [`DiscoverHandle`].
    pub fn handle(&self) -> DiscoverHandle {
        self.handle.clone()
    }
}

impl<R, F> RegistryDiscover<R, F>
where
    R: Registry,
    F: MakeEndpoint + Unpin + Send + 'static,
    F::Service: Send + 'static,
{
    /// Drives this stream on a tokio task; see [`Spawned`].
    pub fn spawn(mut self) -> Spawned<F::Service> {
        let handle = self.handle();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(item) = self.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Spawned { rx, task, handle }
    }
}

impl<S> Stream for Spawned<S> {
    type Item = Result<Change<InstanceId, S>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<S> Drop for Spawned<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S> fmt::Debug for Spawned<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned")
            .field("handle", &self.handle)
            .finish()
    }
}
