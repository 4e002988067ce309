//! A read-through cache in front of any registry, kept fresh by one watch.

mod options;
mod state;
mod supervise;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_all;
#[cfg(test)]
mod tests_bounded;
mod watch;

pub use self::options::CachedOptions;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use crate::instance::{Health, InstanceId, ServiceName};

use self::state::{Entry, State};
use self::supervise::supervise;
use super::error::DatabaseError;
use super::{
    Clock, Error, Event, HealthUpdate, LeaseConfig, ReapReport, Registration, Registry, Revision,
    Snapshot, Watch,
};

/// A read-through in-memory cache in front of any [`Registry`]: the seed's ServiceStore
/// (database + cache).
///
/// - The first read of a service loads it from the inner registry; later reads are answered
///   from memory with no database round trip.
/// - One [`watch_all`](Registry::watch_all) on the inner registry keeps every cached service
///   fresh: a whole process costs one LISTEN connection (PostgreSQL) or one polling query,
///   however many services it reads or watches. [`watch`](Registry::watch) and
///   [`watch_all`](Registry::watch_all) on a `Cached` are served from that one watch (so a
///   health checker, feature `health`, given a `Cached` adds no watch of its own),
///   with the same guarantees as the registry's: every change after the revision asked for, in
///   order, or an [`Event::Reset`] first when the cache's log (see
///   [`CachedOptions::log_retention`]) no longer reaches back that far.
/// - The first `watch_all` watcher that needs such a reset makes the cache load every service
///   (one [`services`](Registry::services) call, then one snapshot per service); from then on
///   the cache holds every service, including new ones as they appear. A reset that the
///   registry sends to the cache's own watch brings every service at once. Records that did not
///   decode are reported in such a reset only if the cache has seen them (in a snapshot, a
///   reset, or as a corrupt event); a service whose only stored records are corrupt and that
///   the cache never saw is missing from it.
/// - Memory stays bounded: a service left with no instance (and no corrupt record), or a name
///   that was only asked about, is let go; the next read of it loads it again. A service
///   with instances is kept while any remain.
/// - While the inner registry is unreachable, reads keep answering the last known data, marked
///   [`stale`](Snapshot::is_stale), and watchers get the error as an `Err` item, then
///   [`Event::Progress`] when the watch recovers.
/// - If the watch stops (the inner registry's watch ends, or its task panics), that is
///   reported like an outage (stale, [`last_error`](Cached::last_error), an `Err` item to
///   watchers) and the watch is restarted from the last revision applied, with backoff, once
///   the inner registry answers.
/// - A read that loads a service while the watch delivers a reset is answered from the reset;
///   a load whose future is dropped leaves nothing behind.
/// - Writes go to the inner registry, then wait (up to [`CachedOptions::write_wait`]) until the
///   change has come back through the watch, so a process reads its own writes.
///
/// # Background task
///
/// [`Cached::new`] and [`Cached::with_options`] spawn, with `tokio::spawn` on the current
/// runtime, the task that keeps the cache's one [`watch_all`](Registry::watch_all) running: a
/// supervisor, which runs the watch in a task of its own and restarts it with backoff when it
/// ends or panics. The task ends when the last clone of the cache is dropped (it is aborted
/// then, and its watch task with it), or when its runtime shuts down; after that nothing
/// refreshes the cache (it then answers from what it holds), so make the cache on the runtime
/// that outlives its users. Outside a tokio runtime the constructors panic, as `tokio::spawn`
/// does.
///
/// ```
/// use tower_mesh::instance::Instance;
/// use tower_mesh::registry::{Cached, MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Cached::new(MemoryRegistry::new()).await?;
/// registry.register(Instance::builder("orders", "orders-1").port(8080).build()?.into()).await?;
/// let snapshot = registry.snapshot(&"orders".parse()?).await?; // loads once, then from memory
/// assert_eq!(snapshot.instances().len(), 1);
/// assert!(!snapshot.is_stale());
/// # Ok(())
/// # }
/// ```
pub struct Cached<R> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for Cached<R> {
    fn clone(&self) -> Self {
        Cached {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<R> {
    inner: R,
    state: Mutex<State>,
    /// The revision applied so far, for writers waiting for their change and for watchers.
    position: tokio::sync::watch::Sender<u64>,
    options: CachedOptions,
    /// Held while the cache loads every service, so that only one such load runs.
    load_all: tokio::sync::Mutex<()>,
    /// The supervisor of the cache's watch.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<R> Drop for Shared<R> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl<R: Registry> Cached<R> {
    /// Puts a cache in front of `inner` with default options and starts its watch. Fails only
    /// if the inner registry cannot tell its current revision.
    ///
    /// Spawns the cache's [background task](Cached#background-task) with `tokio::spawn`, so
    /// it must be called within a tokio runtime (it panics otherwise).
    pub async fn new(inner: R) -> Result<Self, Error> {
        Self::with_options(inner, CachedOptions::default()).await
    }

    /// Like [`new`](Cached::new), with options; it spawns the same
    /// [background task](Cached#background-task). Fails with [`Error::Config`] for an option
    /// that cannot work, before it asks the inner registry anything.
    pub async fn with_options(inner: R, options: CachedOptions) -> Result<Self, Error> {
        options.validate()?;
        let start = inner.revision().await?.get();
        let (position, _) = tokio::sync::watch::channel(start);
        let shared = Arc::new(Shared {
            inner,
            state: Mutex::new(State {
                position: start,
                log_floor: start,
                ..State::default()
            }),
            position,
            options,
            load_all: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(supervise(Arc::downgrade(&shared)));
        *crate::sync::lock(&shared.task) = Some(task);
        Ok(Cached { shared })
    }

    /// The registry behind the cache.
    pub fn get_ref(&self) -> &R {
        &self.shared.inner
    }

    /// Whether the cache's watch is currently failing, so reads may be out of date.
    pub fn is_stale(&self) -> bool {
        self.lock().stale
    }

    /// The last error of the cache's watch while it is failing.
    pub fn last_error(&self) -> Option<DatabaseError> {
        self.lock().last_error.clone()
    }

    /// The services loaded into the cache: those with instances (or corrupt records). A
    /// service left with none is let go, so that services that come and go, or names that
    /// are only asked about, do not pile up; the next read loads it again.
    pub fn cached_services(&self) -> Vec<ServiceName> {
        let mut names: Vec<_> = self.lock().services.keys().cloned().collect();
        names.sort();
        names
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    async fn wait_for(&self, rev: Revision) {
        let mut rx = self.shared.position.subscribe();
        let wait = rx.wait_for(|p| *p >= rev.get());
        if tokio::time::timeout(self.shared.options.write_wait, wait)
            .await
            .is_err()
        {
            tracing::debug!(revision = %rev, "cache did not see its own write in time");
        }
    }

    async fn load(&self, service: &ServiceName) -> Result<Snapshot, Error> {
        {
            let mut state = self.lock();
            if let Some(entry) = state.services.get(service) {
                return Ok(entry.snapshot(state.position, state.stale));
            }
            state.loading.entry(service.clone()).or_default().loaders += 1;
        }
        // Dropped with this future, so a cancelled load stops buffering events.
        let guard = Loading {
            shared: &self.shared,
            service,
            armed: true,
        };
        let loaded = self.shared.inner.snapshot(service).await;
        let mut state = self.lock();
        // A reset while loading (or another loader) may have filled the entry already.
        if state.services.contains_key(service) {
            guard.finish(&mut state, false);
            let snapshot = state.services[service].snapshot(state.position, state.stale);
            state.let_go_if_empty(service);
            return Ok(snapshot);
        }
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                guard.finish(&mut state, false);
                return Err(error);
            }
        };
        let buffered = guard.finish(&mut state, true);
        let mut entry = Entry::from_snapshot(loaded);
        for event in &buffered {
            entry.apply(event);
        }
        let snapshot = entry.snapshot(state.position, state.stale);
        // An empty service is not kept, unless other loaders are in flight: they return
        // this entry (the events buffered for them were taken here), and the last lets it go.
        if !entry.is_empty() || state.loading.contains_key(service) {
            state.services.insert(service.clone(), entry);
        }
        Ok(snapshot)
    }

    /// Caches every service, for a watcher of all services that needs a reset; from then on
    /// the cache stays complete (a change to a new service caches it). The services the
    /// registry lists are loaded one by one; meanwhile the changes to services not cached are
    /// collected, and those the list left out (they had no instances when it was read) are
    /// rebuilt from them.
    async fn load_all(&self) -> Result<(), Error> {
        let _one = self.shared.load_all.lock().await;
        {
            let mut state = self.lock();
            if state.complete {
                return Ok(());
            }
            state.collect = Some(Default::default());
            state.orphans.clear();
        }
        // Dropped with this future, so a cancelled or failed load stops collecting.
        let _collecting = Collecting(&self.shared);
        for service in self.shared.inner.services().await? {
            self.load(&service).await?;
        }
        let mut state = self.lock();
        let collected = state.collect.take().unwrap_or_default();
        for (service, items) in collected {
            if let std::collections::hash_map::Entry::Vacant(vacant) = state.services.entry(service)
            {
                let mut entry = Entry::default();
                for item in &items {
                    entry.apply_item(item);
                }
                if !entry.is_empty() {
                    vacant.insert(entry);
                }
            }
        }
        state.complete = true;
        Ok(())
    }
}

/// A load of every service in flight: while it exists, changes to services not cached are
/// collected.
struct Collecting<'a, R>(&'a Shared<R>);

impl<R> Drop for Collecting<'_, R> {
    fn drop(&mut self) {
        self.0.lock().collect = None;
    }
}

/// A load in flight: while it exists, events for its service are buffered for it.
struct Loading<'a, R> {
    shared: &'a Shared<R>,
    service: &'a ServiceName,
    armed: bool,
}

impl<R> Loading<'_, R> {
    /// Ends the load under the lock already held; returns the buffered events if `take`.
    fn finish(mut self, state: &mut State, take: bool) -> Vec<Event> {
        self.armed = false;
        state.end_load(self.service, take)
    }
}

impl<R> Drop for Loading<'_, R> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.lock().end_load(self.service, false);
        }
    }
}

impl<R> fmt::Debug for Cached<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Cached")
            .field("position", &state.position)
            .field("services", &state.services.len())
            .field("stale", &state.stale)
            .finish()
    }
}

impl<R: Registry> Registry for Cached<R> {
    async fn register(&self, registration: Registration) -> Result<Revision, Error> {
        let rev = self.shared.inner.register(registration).await?;
        self.wait_for(rev).await;
        Ok(rev)
    }

    async fn register_all(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        let rev = self.shared.inner.register_all(registrations).await?;
        self.wait_for(rev).await;
        Ok(rev)
    }

    async fn deregister(&self, service: &ServiceName, id: &InstanceId) -> Result<Revision, Error> {
        let rev = self.shared.inner.deregister(service, id).await?;
        self.wait_for(rev).await;
        Ok(rev)
    }

    async fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Revision>, Error> {
        let rev = self.shared.inner.heartbeat(service, id).await?;
        if let Some(rev) = rev {
            self.wait_for(rev).await;
        }
        Ok(rev)
    }

    async fn set_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        health: Health,
    ) -> Result<Revision, Error> {
        let rev = self.shared.inner.set_health(service, id, health).await?;
        self.wait_for(rev).await;
        Ok(rev)
    }

    async fn set_health_with(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        update: HealthUpdate,
    ) -> Result<Revision, Error> {
        let rev = self
            .shared
            .inner
            .set_health_with(service, id, update)
            .await?;
        self.wait_for(rev).await;
        Ok(rev)
    }

    async fn snapshot(&self, service: &ServiceName) -> Result<Snapshot, Error> {
        self.load(service).await
    }

    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        match self.shared.inner.services().await {
            Ok(services) => Ok(services),
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "registry unreachable: listing the cached services");
                let state = self.lock();
                let mut names: Vec<_> = state
                    .services
                    .iter()
                    .filter(|(_, e)| !e.instances.is_empty())
                    .map(|(n, _)| n.clone())
                    .collect();
                names.sort();
                Ok(names)
            }
            Err(error) => Err(error),
        }
    }

    async fn revision(&self) -> Result<Revision, Error> {
        Ok(Revision::new(self.lock().position))
    }

    fn watch(&self, service: &ServiceName, since: Revision) -> Watch {
        watch::watch(self.clone(), service.clone(), since)
    }

    fn watch_all(&self, since: Revision) -> Watch {
        watch::watch_all(self.clone(), since)
    }

    async fn compact(&self, up_to: Revision) -> Result<(), Error> {
        self.shared.inner.compact(up_to).await?;
        let mut state = self.lock();
        let up_to = up_to.get().min(state.position);
        while state.log.front().is_some_and(|(rev, _)| *rev <= up_to) {
            state.log.pop_front();
        }
        state.log_floor = state.log_floor.max(up_to);
        Ok(())
    }

    async fn reap(&self, config: &LeaseConfig) -> Result<ReapReport, Error> {
        let report = self.shared.inner.reap(config).await?;
        if !report.expired.is_empty() || !report.deregistered.is_empty() {
            let rev = self.shared.inner.revision().await?;
            self.wait_for(rev).await;
        }
        Ok(report)
    }

    fn clock(&self) -> &Clock {
        self.shared.inner.clock()
    }
}
