//! `balance_channel`'s feeding task: refused settings, and its end with the channel.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tower_mesh::discover::error::BuildError;
use tower_mesh::discover::{balance_channel, TonicEndpoints};
use tower_mesh::instance::{Field, Health, InstanceId, ServiceName};
use tower_mesh::registry::{
    Clock, Error, Event, LeaseConfig, MemoryRegistry, ReapReport, Registration, Registry, Revision,
    Snapshot, Watch,
};

use crate::grpc;

/// A memory registry that counts the watches alive.
#[derive(Clone, Default)]
struct Counted {
    inner: MemoryRegistry,
    watches: Arc<AtomicUsize>,
}

impl Counted {
    fn watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }
}

struct CountedWatch {
    inner: Watch,
    watches: Arc<AtomicUsize>,
}

impl Stream for CountedWatch {
    type Item = Result<Event, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Drop for CountedWatch {
    fn drop(&mut self) {
        self.watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Registry for Counted {
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
        self.inner.snapshot(s).await
    }
    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.inner.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.inner.revision().await
    }
    fn watch(&self, s: &ServiceName, since: Revision) -> Watch {
        self.watches.fetch_add(1, Ordering::SeqCst);
        Watch::new(CountedWatch {
            inner: self.inner.watch(s, since),
            watches: self.watches.clone(),
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

/// The feeding task ends when the last clone of its channel is dropped, with no registry
/// event to wake it: it drops its registry watch. While a clone lives, it goes on.
#[tokio::test(start_paused = true)]
async fn the_feeding_task_ends_with_its_channel() {
    let registry = Counted::default();
    let rev = registry
        .register(grpc("a", "127.0.0.1:1".parse().unwrap()))
        .await
        .unwrap();
    let (channel, handle) =
        balance_channel(registry.clone(), "echo", TonicEndpoints::new(), 4).unwrap();
    handle.applied(rev).await;
    assert_eq!(registry.watches(), 1);

    let copy = channel.clone();
    drop(channel);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        registry.watches(),
        1,
        "a clone of the channel lives: the task goes on"
    );

    drop(copy);
    let ended = async {
        while registry.watches() > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    // Paused time runs ahead whenever every task waits, so this fails at once (in real time)
    // if the task waits for a registry event.
    tokio::time::timeout(Duration::from_secs(3600), ended)
        .await
        .expect("the feeding task ends with its channel, without a registry event");
}

/// A zero capacity and an invalid service name are refused, naming them.
#[tokio::test]
async fn bad_settings_are_refused() {
    let err = balance_channel(MemoryRegistry::new(), "echo", TonicEndpoints::new(), 0).unwrap_err();
    assert_eq!(
        err,
        BuildError::ZeroCount {
            setting: "capacity"
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid discovery setting capacity: 0 (must be at least 1)"
    );
    let err =
        balance_channel(MemoryRegistry::new(), "Echo!", TonicEndpoints::new(), 4).unwrap_err();
    match err {
        BuildError::Invalid(e) => {
            assert_eq!((e.field(), e.value()), (Field::Service, "Echo!"))
        }
        other => panic!("{other:?}"),
    }
}
