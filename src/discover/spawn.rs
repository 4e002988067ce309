//! Driving a discover stream in the background.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use tokio::task::JoinHandle;
use tower::discover::Change;

use crate::instance::{Instance, InstanceId, InvalidInput};
use crate::registry::{Error, Registry};

use super::outbox::{Out, Outbox};
use super::source::Core;
use super::{DiscoverHandle, LiveHealth, MakeEndpoint, RegistryDiscover};

type Factory<S> = Box<dyn FnMut(&Instance) -> (S, Option<LiveHealth>) + Send>;

/// A [`RegistryDiscover`] driven by a background task: registry changes are consumed as they
/// happen, whether or not requests flow, and kept as the set of endpoints the balancer should
/// hold. The balancer finds the differences waiting at its next `poll_ready`, so a removed
/// endpoint is gone and a new one present before the next request is routed, and its task is
/// woken when there are some.
///
/// What waits is bounded by the instances, not by the changes: an instance registered and
/// deregistered before the balancer polls yields nothing, one changed ten times yields one
/// insert, and endpoints are made as the balancer takes them. The task stops when this is
/// dropped; if it stops on its own (a panic in the registry's watch), the
/// [`handle`](Spawned::handle) reports it as stale, with the reason as its last error.
pub struct Spawned<S> {
    shared: Arc<Shared>,
    // A mutex only so that `Spawned` is `Sync`; it is reached through `&mut self` with
    // `get_mut`, never locked.
    factory: Mutex<Factory<S>>,
    invalid: Option<InvalidInput>,
    task: Option<JoinHandle<()>>,
    handle: DiscoverHandle,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    outbox: Outbox,
    waker: Option<Waker>,
    /// The `Spawned` is gone: the task stopping is expected.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }
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
    /// Drives this stream on a background task; see [`Spawned`].
    ///
    /// # Background task
    ///
    /// This spawns a task on the current tokio runtime (`tokio::spawn`), which reads the
    /// registry and keeps the set the balancer should hold. The task ends when the returned
    /// [`Spawned`] is dropped (it is aborted then, and drops its registry watch). Endpoints are
    /// made by the task polling the `Spawned` (the balancer's), not by this one. A stream whose
    /// service name is invalid spawns nothing.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self) -> Spawned<F::Service> {
        let handle = self.handle();
        let (core, outbox, mut factory) = self.into_parts();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                outbox,
                waker: None,
                closed: false,
            }),
        });
        let (task, invalid) = match core {
            Ok(core) => (
                Some(tokio::spawn(drive(core, shared.clone(), handle.clone()))),
                None,
            ),
            Err(invalid) => (None, invalid),
        };
        Spawned {
            shared,
            factory: Mutex::new(Box::new(move |i: &Instance| factory.make_live_endpoint(i))),
            invalid,
            task,
            handle,
        }
    }
}

async fn drive<R: Registry>(mut core: Core<R>, shared: Arc<Shared>, handle: DiscoverHandle) {
    let _stopped = Stopped {
        shared: shared.clone(),
        handle,
    };
    poll_fn(|cx| loop {
        let input = std::task::ready!(core.poll_input(cx));
        let waker = {
            let mut state = shared.lock();
            core.apply(input, &mut state.outbox);
            core.publish(&state.outbox);
            if state.outbox.has_changes() {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    })
    .await
}

/// Reports the driver task stopping while its `Spawned` still exists (it never returns, so
/// only a panic stops it), and wakes the balancer so it sees the report.
struct Stopped {
    shared: Arc<Shared>,
    handle: DiscoverHandle,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            if state.closed {
                return;
            }
            state.waker.take()
        };
        self.handle.fail(
            "discovery's background task stopped (it panicked); the endpoint set no longer follows the registry"
                .to_owned(),
        );
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<S> Stream for Spawned<S> {
    type Item = Result<Change<InstanceId, S>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.task.is_none() {
            return Poll::Ready(this.invalid.take().map(|e| Err(Error::Invalid(e))));
        }
        let out = {
            let mut state = this.shared.lock();
            match state.outbox.next() {
                Some(out) => out,
                None => {
                    if !state
                        .waker
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        state.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        // The endpoint is made outside the lock: the driver keeps applying changes meanwhile.
        let factory = this.factory.get_mut().unwrap_or_else(|p| p.into_inner());
        let change = match out {
            Out::Insert(id, instance) => {
                let (svc, live) = factory(&instance);
                if let Some(live) = live {
                    this.shared.lock().outbox.handed(&id, live);
                }
                Change::Insert(id, svc)
            }
            Out::Remove(id) => Change::Remove(id),
        };
        Poll::Ready(Some(Ok(change)))
    }
}

impl<S> Drop for Spawned<S> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<S> fmt::Debug for Spawned<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned")
            .field("handle", &self.handle)
            .finish()
    }
}
