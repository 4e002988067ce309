//! A registry that fails on demand.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tower_mesh::instance::{Health, InstanceId, ServiceName};
use tower_mesh::registry::{
    Clock, DatabaseError, DatabaseErrorKind, Error, Event, LeaseConfig, MemoryRegistry, ReapReport,
    Registration, Registry, Revision, Snapshot, Watch,
};

/// A registry that can be taken down: while down, snapshots fail and watches yield an error
/// every second instead of events (as a database registry does); the changes made meanwhile
/// arrive when it comes back, from the last revision.
#[derive(Clone)]
pub(crate) struct Flaky {
    pub(crate) inner: MemoryRegistry,
    pub(crate) down: Arc<AtomicBool>,
    pub(crate) script: Arc<std::sync::Mutex<Option<Vec<Event>>>>,
    /// Watches panic when polled (a bug in a registry).
    pub(crate) panics: Arc<AtomicBool>,
}

fn outage() -> Error {
    Error::Database(DatabaseError::new(
        DatabaseErrorKind::Connection,
        "watch",
        "connection refused",
    ))
}

struct FlakyWatch {
    inner: Watch,
    down: Arc<AtomicBool>,
    panics: Arc<AtomicBool>,
    tick: Pin<Box<tokio::time::Sleep>>,
}

impl Stream for FlakyWatch {
    type Item = Result<Event, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.down.load(Ordering::SeqCst) {
            futures_util::ready!(self.tick.as_mut().poll(cx));
            let next = tokio::time::Instant::now() + Duration::from_secs(1);
            self.tick.as_mut().reset(next);
            return Poll::Ready(Some(Err(outage())));
        }
        let item = futures_util::ready!(self.inner.poll_next_unpin(cx));
        if self.panics.load(Ordering::SeqCst) {
            panic!("a bug in the registry's watch");
        }
        Poll::Ready(item)
    }
}

impl Registry for Flaky {
    async fn register(&self, r: Registration) -> Result<Revision, Error> {
        self.inner.register(r).await
    }
    async fn register_all(&self, r: Vec<Registration>) -> Result<Revision, Error> {
        self.inner.register_all(r).await
    }
    async fn deregister(&self, s: &ServiceName, i: &InstanceId) -> Result<Revision, Error> {
        self.inner.deregister(s, i).await
    }
    async fn heartbeat(&self, s: &ServiceName, i: &InstanceId) -> Result<Option<Revision>, Error> {
        self.inner.heartbeat(s, i).await
    }
    async fn set_health(
        &self,
        s: &ServiceName,
        i: &InstanceId,
        h: Health,
    ) -> Result<Revision, Error> {
        self.inner.set_health(s, i, h).await
    }
    async fn snapshot(&self, s: &ServiceName) -> Result<Snapshot, Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(outage());
        }
        self.inner.snapshot(s).await
    }
    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.inner.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.inner.revision().await
    }
    fn watch(&self, s: &ServiceName, since: Revision) -> Watch {
        if let Some(events) = self.script.lock().unwrap().take() {
            // A scripted watch: the given events, then the real ones.
            let rest = self.inner.watch(s, since);
            return Watch::new(futures_util::stream::iter(events.into_iter().map(Ok)).chain(rest));
        }
        Watch::new(FlakyWatch {
            inner: self.inner.watch(s, since),
            down: self.down.clone(),
            panics: self.panics.clone(),
            tick: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
        })
    }
    fn watch_all(&self, since: Revision) -> Watch {
        self.inner.watch_all(since)
    }
    async fn compact(&self, r: Revision) -> Result<(), Error> {
        self.inner.compact(r).await
    }
    async fn reap(&self, c: &LeaseConfig) -> Result<ReapReport, Error> {
        self.inner.reap(c).await
    }
    fn clock(&self) -> &Clock {
        self.inner.clock()
    }
}

pub(crate) fn flaky() -> Flaky {
    Flaky {
        inner: MemoryRegistry::new(),
        down: Arc::new(AtomicBool::new(false)),
        script: Arc::new(std::sync::Mutex::new(None)),
        panics: Arc::new(AtomicBool::new(false)),
    }
}
