//! The cache's own faults: loads dropped or overtaken by a reset, a watch task that dies, a
//! registry that goes back to an earlier revision.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::*;
use crate::instance::Instance;
use crate::registry::{Event, MemoryRegistry};

pub(super) fn orders() -> ServiceName {
    "orders".parse().unwrap()
}

pub(super) fn inst(id: &str, port: u32) -> Registration {
    Instance::builder("orders", id)
        .port(port)
        .build()
        .unwrap()
        .into()
}

pub(super) fn ids(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .instances()
        .iter()
        .map(|i| i.id().to_string())
        .collect()
}

/// How a watch from [`Gated::watch_all`] misbehaves.
pub(super) enum Fault {
    /// Panics when first polled.
    Panic,
    /// Ends at once.
    End,
    /// Yields these, then nothing more.
    Script(Vec<Event>),
}

/// A memory registry whose snapshots wait, once taken, until the gate opens, and whose
/// `watch_all` streams misbehave as scripted.
#[derive(Clone)]
pub(super) struct Gated {
    pub(super) inner: MemoryRegistry,
    gate: Arc<watch::Sender<bool>>,
    pub(super) faults: Arc<Mutex<VecDeque<Fault>>>,
    /// Snapshots taken so far.
    pub(super) snapshots: Arc<std::sync::atomic::AtomicUsize>,
}

impl Gated {
    pub(super) fn new() -> Self {
        Gated {
            inner: MemoryRegistry::new(),
            gate: Arc::new(watch::channel(true).0),
            faults: Arc::default(),
            snapshots: Arc::default(),
        }
    }

    pub(super) fn gate(&self, open: bool) {
        self.gate.send_replace(open);
    }
}

impl Registry for Gated {
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
        self.snapshots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot = self.inner.snapshot(s).await?;
        let mut open = self.gate.subscribe();
        let _ = open.wait_for(|open| *open).await;
        Ok(snapshot)
    }
    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.inner.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.inner.revision().await
    }
    fn watch(&self, s: &ServiceName, since: Revision) -> Watch {
        self.inner.watch(s, since)
    }
    fn watch_all(&self, since: Revision) -> Watch {
        let fault = self.faults.lock().unwrap().pop_front();
        match fault {
            None => self.inner.watch_all(since),
            Some(Fault::End) => Watch::new(futures_util::stream::empty()),
            Some(Fault::Script(events)) => Watch::new(
                futures_util::stream::iter(events.into_iter().map(Ok))
                    .chain(futures_util::stream::pending()),
            ),
            Some(Fault::Panic) => Watch::new(futures_util::stream::poll_fn(|_| {
                panic!("a bug in the registry's watch")
            })),
        }
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

/// The watch's next item, within a minute (of paused time).
pub(super) async fn next(watch: &mut Watch) -> Result<Event, Error> {
    tokio::time::timeout(Duration::from_secs(60), watch.next())
        .await
        .expect("the watch yields within a minute")
        .expect("a watch never ends")
}

/// Lets the cache's watch task run until the cache has applied `rev`.
pub(super) async fn applied<R: Registry>(cache: &Cached<R>, rev: Revision) {
    for _ in 0..1000 {
        if cache.lock().position >= rev.get() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the cache never applied {rev}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_load_stops_buffering() {
    let r = Gated::new();
    r.register(inst("a", 1)).await.unwrap();
    let cache = Cached::new(r.clone()).await.unwrap();
    r.gate(false);
    {
        let service = orders();
        let load = cache.snapshot(&service);
        tokio::pin!(load);
        assert!(futures_util::poll!(load.as_mut()).is_pending());
        assert_eq!(cache.lock().loading.len(), 1, "the load is in flight");
    }
    assert!(
        cache.lock().loading.is_empty(),
        "the dropped load left its loading entry behind"
    );
    let mut rev = Revision::ZERO;
    for n in 0..100 {
        rev = r.register(inst(&format!("b{n}"), 2)).await.unwrap();
    }
    applied(&cache, rev).await;
    assert!(cache.lock().loading.is_empty(), "no event is buffered");

    // A later load works, and the service is then kept fresh.
    r.gate(true);
    let snapshot = cache.snapshot(&orders()).await.unwrap();
    assert_eq!(snapshot.instances().len(), 101);
    assert_eq!(snapshot.revision(), rev);
    let rev = r
        .deregister(&orders(), &"a".parse().unwrap())
        .await
        .unwrap();
    applied(&cache, rev).await;
    assert_eq!(
        cache.snapshot(&orders()).await.unwrap().instances().len(),
        100
    );
    assert!(cache.lock().loading.is_empty());
}

/// A reset that arrives while a service loads replaces what the loader read: the delete
/// of "b" and the registration of "c" happened after the loader's snapshot and before the
/// reset, so only the reset knows them.
#[tokio::test(start_paused = true)]
async fn a_reset_while_loading_is_not_lost() {
    let r = Gated::new();
    r.register(inst("a", 1)).await.unwrap();
    r.register(inst("b", 2)).await.unwrap();
    let cache = Cached::new(r.clone()).await.unwrap();
    r.gate(false);
    let service = orders();
    let load = cache.snapshot(&service);
    tokio::pin!(load);
    assert!(
        futures_util::poll!(load.as_mut()).is_pending(),
        "a and b read"
    );

    // Before the cache's watch runs again: a change, and the history it needs compacted,
    // so the registry sends the watch a reset.
    r.deregister(&orders(), &"b".parse().unwrap())
        .await
        .unwrap();
    let rev = r.register(inst("c", 3)).await.unwrap();
    r.compact(rev).await.unwrap();
    applied(&cache, rev).await;

    r.gate(true);
    let snapshot = load.await.unwrap();
    assert_eq!(
        ids(&snapshot),
        ["a", "c"],
        "the reset's state, not the loader's"
    );
    assert_eq!(snapshot.revision(), rev);
    let rev = r.register(inst("d", 4)).await.unwrap();
    applied(&cache, rev).await;
    let snapshot = cache.snapshot(&orders()).await.unwrap();
    assert_eq!(ids(&snapshot), ["a", "c", "d"]);
    assert!(cache.lock().loading.is_empty());
}

/// The cache's watch task panics, then its restarted watch ends: each is reported (stale,
/// with the reason, and as an error to watchers), and the watch is restarted with backoff
/// until one runs; then the cache follows the registry again, missing nothing.
#[tokio::test(start_paused = true)]
async fn a_watch_task_that_dies_is_reported_and_restarted() {
    let r = Gated::new();
    r.faults.lock().unwrap().extend([Fault::Panic, Fault::End]);
    r.register(inst("a", 1)).await.unwrap();
    let cache = Cached::new(r.clone()).await.unwrap();
    let snapshot = cache.snapshot(&orders()).await.unwrap();
    let mut watch = cache.watch(&orders(), snapshot.revision());
    let rev = r.register(inst("b", 2)).await.unwrap();

    match next(&mut watch).await {
        Err(Error::Database(e)) => {
            assert!(e.to_string().contains("panicked"), "{e}");
        }
        other => panic!("the panic must be reported, got {other:?}"),
    }
    assert!(cache.is_stale());
    assert!(
        cache.last_error().unwrap().to_string().contains("panicked"),
        "{:?}",
        cache.last_error()
    );
    match next(&mut watch).await {
        Err(Error::Database(e)) => {
            assert!(e.to_string().contains("ended"), "{e}");
        }
        other => panic!("the end must be reported, got {other:?}"),
    }
    // The third watch runs: recovered (`Progress`), and the change made meanwhile arrives.
    let (mut progress, mut put) = (false, false);
    while !(progress && put) {
        match next(&mut watch).await.unwrap() {
            Event::Progress { .. } => progress = true,
            Event::Put { instance, .. } if instance.id().as_str() == "b" => put = true,
            other => panic!("{other:?}"),
        }
    }
    assert!(!cache.is_stale());
    assert_eq!(cache.lock().position, rev.get());
    let rev = r.register(inst("c", 3)).await.unwrap();
    applied(&cache, rev).await;
    assert_eq!(
        ids(&cache.snapshot(&orders()).await.unwrap()),
        ["a", "b", "c"]
    );
}

/// The registry's database is restored from an older backup: its watch sends a reset to an
/// earlier revision. The cache goes back with it, and a watcher that was ahead gets the
/// reset too instead of waiting for revisions that will not come again.
#[tokio::test(start_paused = true)]
async fn a_reset_to_an_earlier_revision_resets_the_watchers_ahead() {
    let r = Gated::new();
    r.register(inst("a", 1)).await.unwrap();
    let rev = r.register(inst("b", 2)).await.unwrap();
    let restored = Snapshot::new(
        Revision::new(1),
        vec![Instance::builder("orders", "a").port(1).build().unwrap()],
    );
    r.faults
        .lock()
        .unwrap()
        .push_back(Fault::Script(vec![Event::Reset(restored)]));
    let cache = Cached::new(r.clone()).await.unwrap();
    let snapshot = cache.snapshot(&orders()).await.unwrap();
    assert_eq!(ids(&snapshot), ["a", "b"]);
    assert_eq!(snapshot.revision(), rev);
    let mut watch = cache.watch(&orders(), rev);

    match next(&mut watch).await.unwrap() {
        Event::Reset(s) => {
            assert_eq!(ids(&s), ["a"]);
            assert_eq!(s.revision(), Revision::new(1));
        }
        other => panic!("the watcher ahead must be reset, got {other:?}"),
    }
    assert_eq!(cache.revision().await.unwrap(), Revision::new(1));
    assert_eq!(ids(&cache.snapshot(&orders()).await.unwrap()), ["a"]);
}
