//! A read-through cache in front of any registry, kept fresh by one watch.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::instance::{Health, Instance, InstanceId, ServiceName};

use super::error::DatabaseError;
use super::{
    Clock, CorruptRecord, Error, Event, LeaseConfig, ReapReport, Registration, Registry, Revision,
    Snapshot, Watch,
};

/// Settings of a [`Cached`] registry.
#[derive(Debug, Clone)]
pub struct CachedOptions {
    log_retention: usize,
    write_wait: Duration,
}

impl Default for CachedOptions {
    fn default() -> Self {
        CachedOptions {
            log_retention: 10_000,
            write_wait: Duration::from_secs(5),
        }
    }
}

impl CachedOptions {
    /// How many recent changes the cache keeps to serve watchers that start a little in the
    /// past (default 10,000). A watcher from further back gets an [`Event::Reset`].
    pub fn log_retention(mut self, n: usize) -> Self {
        self.log_retention = n.max(1);
        self
    }

    /// How long a write through the cache waits for its own change to come back through the
    /// watch, so that a read after a write sees it (default 5 s; the write succeeds either way).
    pub fn write_wait(mut self, wait: Duration) -> Self {
        self.write_wait = wait;
        self
    }
}

/// A read-through in-memory cache in front of any [`Registry`]: the seed's ServiceStore
/// (database + cache).
///
/// - The first read of a service loads it from the inner registry; later reads are answered
///   from memory with no database round trip.
/// - One [`watch_all`](Registry::watch_all) on the inner registry keeps every cached service
///   fresh: a whole process costs one LISTEN connection (PostgreSQL) or one polling query,
///   however many services it reads or watches. [`watch`](Registry::watch) on a `Cached` is
///   served from that one watch.
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
    position: watch::Sender<u64>,
    options: CachedOptions,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<R> Drop for Shared<R> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

#[derive(Default)]
struct State {
    services: HashMap<ServiceName, Entry>,
    /// Services being loaded and not yet cached: the events that arrive meanwhile, for the
    /// loader to apply over its snapshot.
    loading: HashMap<ServiceName, Load>,
    /// Everything up to here has been applied.
    position: u64,
    /// The log holds every change after this revision.
    log_floor: u64,
    log: VecDeque<(u64, LogItem)>,
    stale: bool,
    last_error: Option<DatabaseError>,
    /// Bumped whenever `stale` flips, so watchers can report it.
    health_generation: u64,
    /// Bumped when a reset takes the cache back to an earlier revision (the database was
    /// restored or replaced): watchers ahead of it then get a reset too.
    epoch: u64,
}

#[derive(Default)]
struct Load {
    loaders: usize,
    buffered: Vec<Event>,
}

#[derive(Clone)]
enum LogItem {
    Event(Event),
    Corrupt(CorruptRecord),
}

#[derive(Default)]
struct Entry {
    revision: u64,
    instances: BTreeMap<InstanceId, Instance>,
    corrupt: BTreeMap<String, CorruptRecord>,
}

impl Entry {
    fn from_snapshot(snapshot: Snapshot) -> Self {
        Entry {
            revision: snapshot.revision.get(),
            instances: snapshot
                .instances
                .into_iter()
                .map(|i| (i.id().clone(), i))
                .collect(),
            corrupt: snapshot
                .corrupt
                .into_iter()
                .map(|c| (c.id().to_owned(), c))
                .collect(),
        }
    }

    fn apply(&mut self, event: &Event) {
        let rev = event.revision().get();
        if rev <= self.revision {
            return;
        }
        match event {
            Event::Put { instance, .. } => {
                self.corrupt.remove(instance.id().as_str());
                self.instances
                    .insert(instance.id().clone(), instance.clone());
            }
            Event::Delete { id, .. } => {
                self.corrupt.remove(id.as_str());
                self.instances.remove(id);
            }
            Event::Reset(_) | Event::Progress { .. } => {}
        }
        self.revision = rev;
    }

    fn snapshot(&self, position: u64, stale: bool) -> Snapshot {
        Snapshot {
            revision: Revision::new(self.revision.max(position)),
            instances: self.instances.values().cloned().collect(),
            corrupt: self.corrupt.values().cloned().collect(),
            stale,
        }
    }
}

impl State {
    /// One loader of `service` is done; returns the buffered events if `take` (the caller
    /// then caches the service, so the other loaders find it).
    fn end_load(&mut self, service: &ServiceName, take: bool) -> Vec<Event> {
        let Some(load) = self.loading.get_mut(service) else {
            return Vec::new();
        };
        load.loaders -= 1;
        let buffered = if take {
            std::mem::take(&mut load.buffered)
        } else {
            Vec::new()
        };
        if load.loaders == 0 {
            self.loading.remove(service);
        }
        buffered
    }

    fn push_log(&mut self, rev: u64, item: LogItem, retention: usize) {
        self.log.push_back((rev, item));
        while self.log.len() > retention {
            if let Some((rev, _)) = self.log.pop_front() {
                self.log_floor = rev;
            }
        }
    }
}

impl<R: Registry> Cached<R> {
    /// Puts a cache in front of `inner` with default options and starts its watch. Fails only
    /// if the inner registry cannot tell its current revision.
    pub async fn new(inner: R) -> Result<Self, Error> {
        Self::with_options(inner, CachedOptions::default()).await
    }

    /// Like [`new`](Cached::new), with options.
    pub async fn with_options(inner: R, options: CachedOptions) -> Result<Self, Error> {
        let start = inner.revision().await?.get();
        let (position, _) = watch::channel(start);
        let shared = Arc::new(Shared {
            inner,
            state: Mutex::new(State {
                position: start,
                log_floor: start,
                ..State::default()
            }),
            position,
            options,
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

    /// The services loaded into the cache.
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
            let entry = &state.services[service];
            return Ok(entry.snapshot(state.position, state.stale));
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
        state.services.insert(service.clone(), entry);
        Ok(snapshot)
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

impl<R> Shared<R> {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    fn apply(&self, item: Result<Event, Error>) {
        let mut state = self.lock();
        let retention = self.options.log_retention;
        match item {
            Ok(event) => {
                let rev = event.revision().get();
                match &event {
                    Event::Put { .. } | Event::Delete { .. } => {
                        let service = event.service().cloned();
                        if let Some(service) = service {
                            if let Some(entry) = state.services.get_mut(&service) {
                                entry.apply(&event);
                            } else if let Some(load) = state.loading.get_mut(&service) {
                                load.buffered.push(event.clone());
                            }
                        }
                        state.push_log(rev, LogItem::Event(event), retention);
                    }
                    Event::Reset(snapshot) => {
                        let mut by_service: HashMap<ServiceName, Vec<Instance>> = HashMap::new();
                        for i in &snapshot.instances {
                            by_service
                                .entry(i.service().clone())
                                .or_default()
                                .push(i.clone());
                        }
                        let mut corrupt: HashMap<String, Vec<CorruptRecord>> = HashMap::new();
                        for c in &snapshot.corrupt {
                            corrupt
                                .entry(c.service().to_owned())
                                .or_default()
                                .push(c.clone());
                        }
                        let entry_of = |name: &ServiceName,
                                        by_service: &mut HashMap<ServiceName, Vec<Instance>>,
                                        corrupt: &mut HashMap<String, Vec<CorruptRecord>>| {
                            Entry::from_snapshot(Snapshot {
                                revision: snapshot.revision,
                                instances: by_service.remove(name).unwrap_or_default(),
                                corrupt: corrupt.remove(name.as_str()).unwrap_or_default(),
                                stale: false,
                            })
                        };
                        let state = &mut *state;
                        for (name, entry) in state.services.iter_mut() {
                            *entry = entry_of(name, &mut by_service, &mut corrupt);
                        }
                        // A service being loaded is cached from the reset: its loaders' snapshots
                        // may predate changes the reset replaces (a buffer cannot bridge it), so
                        // they return this entry instead.
                        for (name, load) in state.loading.iter_mut() {
                            load.buffered = Vec::new();
                            let entry = entry_of(name, &mut by_service, &mut corrupt);
                            state.services.insert(name.clone(), entry);
                        }
                        // Watchers of the cache behind this point must reset too.
                        state.log.clear();
                        state.log_floor = rev;
                        if rev < state.position {
                            tracing::warn!(
                                from = state.position,
                                to = rev,
                                "registry cache: the registry went back to an earlier revision"
                            );
                            state.position = rev;
                            state.epoch += 1;
                        }
                    }
                    Event::Progress { .. } => {}
                }
                state.position = state.position.max(rev);
                if state.stale {
                    state.stale = false;
                    state.last_error = None;
                    state.health_generation += 1;
                    tracing::info!(revision = rev, "registry cache watch recovered");
                }
            }
            Err(Error::Corrupt(record)) => {
                tracing::warn!(%record, "registry cache: corrupt event");
                if let Some(entry) = state.services.get_mut(record.service()) {
                    entry.instances.retain(|id, _| id.as_str() != record.id());
                    entry.corrupt.insert(record.id().to_owned(), record.clone());
                }
                let rev = record.revision().map_or(state.position, Revision::get);
                state.position = state.position.max(rev);
                state.push_log(rev, LogItem::Corrupt(record), retention);
            }
            Err(error) => {
                tracing::warn!(%error, "registry cache watch failed; serving cached data as stale");
                let db = match error {
                    Error::Database(db) => db,
                    other => DatabaseError {
                        kind: super::error::DatabaseErrorKind::Other,
                        operation: "watch",
                        message: other.to_string(),
                    },
                };
                state.last_error = Some(db);
                if !state.stale {
                    state.stale = true;
                }
                state.health_generation += 1;
            }
        }
        let position = state.position;
        drop(state);
        self.position.send_replace(position);
    }
}

/// First pause before restarting a watch task that stopped, doubling up to [`RESTART_MAX`].
const RESTART_INITIAL: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(10);

/// Keeps the cache's one watch running: runs it on a task of its own and, if that task stops
/// (the inner watch ended, or it panicked), reports it through the cache (stale, with the
/// reason as [`last_error`](Cached::last_error), and as an `Err` item to watchers), then
/// restarts it from the last revision applied, with backoff. Stops when the cache is dropped.
async fn supervise<R: Registry>(shared: Weak<Shared<R>>) {
    let mut backoff = RESTART_INITIAL;
    loop {
        let watch = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let since = shared.lock().position;
            shared.inner.watch_all(Revision::new(since))
        };
        let started = tokio::time::Instant::now();
        let mut task = AbortOnDrop(tokio::spawn(run_watch(shared.clone(), watch)));
        let reason = match (&mut task.0).await {
            Ok(Stopped::CacheDropped) => return,
            Ok(Stopped::Ended) => "the registry's watch ended".to_owned(),
            Err(error) if error.is_panic() => {
                let payload = error.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("the watch task panicked: {message}")
            }
            Err(_) => "the watch task was cancelled".to_owned(),
        };
        // A watch that ran a good while before stopping starts the backoff over.
        if started.elapsed() > RESTART_MAX {
            backoff = RESTART_INITIAL;
        }
        {
            let Some(cache) = shared.upgrade() else {
                return;
            };
            tracing::error!(reason, retry_in = ?backoff, "registry cache: the watch stopped; restarting it");
            cache.apply(Err(Error::Database(DatabaseError::new(
                super::error::DatabaseErrorKind::Other,
                "watch",
                format!("{reason}; restarting it"),
            ))));
        }
        // Restart once the registry answers; until then, stay stale with its error.
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RESTART_MAX);
            let Some(cache) = shared.upgrade() else {
                return;
            };
            match cache.inner.revision().await {
                Ok(_) => {
                    let position = cache.lock().position;
                    cache.apply(Ok(Event::Progress {
                        revision: Revision::new(position),
                    }));
                    break;
                }
                Err(error) => cache.apply(Err(error)),
            }
        }
    }
}

/// Why a watch task stopped without panicking.
enum Stopped {
    CacheDropped,
    Ended,
}

/// Aborts the task when dropped: when the supervisor is aborted, so is its watch task.
struct AbortOnDrop(JoinHandle<Stopped>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_watch<R>(shared: Weak<Shared<R>>, mut watch: Watch) -> Stopped {
    while let Some(item) = watch.next().await {
        let Some(shared) = shared.upgrade() else {
            return Stopped::CacheDropped;
        };
        shared.apply(item);
    }
    Stopped::Ended
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

struct CacheWatch<R> {
    cache: Cached<R>,
    service: ServiceName,
    last: u64,
    health_generation: u64,
    epoch: u64,
    rx: watch::Receiver<u64>,
    pending: VecDeque<Result<Event, Error>>,
    load_failed: bool,
    loaded: bool,
}

impl<R: Registry> CacheWatch<R> {
    /// Moves what is new into `pending`; `false` if the service must be loaded first.
    fn fill(&mut self) -> bool {
        let state = self.cache.lock();
        // Ahead of a cache that went back to an earlier revision: that history is gone.
        let went_back = state.epoch != self.epoch && self.last > state.position;
        if went_back || (self.last < state.position && self.last < state.log_floor) {
            let Some(entry) = state.services.get(&self.service) else {
                return false;
            };
            let snapshot = entry.snapshot(state.position, state.stale);
            self.last = snapshot.revision.get();
            self.pending.push_back(Ok(Event::Reset(snapshot)));
        } else if self.last < state.position {
            let start = state.log.partition_point(|(rev, _)| *rev <= self.last);
            for (_, item) in state.log.range(start..) {
                match item {
                    LogItem::Event(e) if e.service() == Some(&self.service) => {
                        self.pending.push_back(Ok(e.clone()))
                    }
                    LogItem::Corrupt(c) if c.service() == self.service.as_str() => {
                        self.pending.push_back(Err(Error::Corrupt(c.clone())))
                    }
                    _ => {}
                }
            }
            self.last = state.position;
        }
        self.epoch = state.epoch;
        // After the changes: a `Progress` says everything up to its revision was delivered.
        if state.health_generation != self.health_generation {
            self.health_generation = state.health_generation;
            match (&state.stale, &state.last_error) {
                (true, Some(e)) => self.pending.push_back(Err(Error::Database(e.clone()))),
                _ => self.pending.push_back(Ok(Event::Progress {
                    revision: Revision::new(state.position.max(self.last)),
                })),
            }
        }
        true
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
        let (health_generation, epoch) = {
            let state = self.lock();
            (state.health_generation, state.epoch)
        };
        let state = CacheWatch {
            cache: self.clone(),
            service: service.clone(),
            last: since.get(),
            health_generation,
            epoch,
            rx: self.shared.position.subscribe(),
            pending: VecDeque::new(),
            load_failed: false,
            loaded: false,
        };
        Watch::new(futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(item) = st.pending.pop_front() {
                    return Some((item, st));
                }
                st.rx.borrow_and_update();
                if !st.loaded || !st.fill() {
                    if st.load_failed {
                        // Nothing cached to fall back on: retry the load after a pause.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    st.load_failed = false;
                    if let Err(error) = st.cache.load(&st.service).await {
                        st.load_failed = true;
                        return Some((Err(error), st));
                    }
                    st.loaded = true;
                    continue;
                }
                if st.pending.is_empty() && st.rx.changed().await.is_err() {
                    return None;
                }
            }
        }))
    }

    fn watch_all(&self, since: Revision) -> Watch {
        self.shared.inner.watch_all(since)
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use futures_util::StreamExt;

    use super::*;
    use crate::registry::MemoryRegistry;

    fn orders() -> ServiceName {
        "orders".parse().unwrap()
    }

    fn inst(id: &str, port: u32) -> Registration {
        Instance::builder("orders", id)
            .port(port)
            .build()
            .unwrap()
            .into()
    }

    fn ids(snapshot: &Snapshot) -> Vec<String> {
        snapshot
            .instances()
            .iter()
            .map(|i| i.id().to_string())
            .collect()
    }

    /// How a watch from [`Gated::watch_all`] misbehaves.
    enum Fault {
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
    struct Gated {
        inner: MemoryRegistry,
        gate: Arc<watch::Sender<bool>>,
        faults: Arc<Mutex<VecDeque<Fault>>>,
    }

    impl Gated {
        fn new() -> Self {
            Gated {
                inner: MemoryRegistry::new(),
                gate: Arc::new(watch::channel(true).0),
                faults: Arc::default(),
            }
        }

        fn gate(&self, open: bool) {
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
        async fn heartbeat(
            &self,
            s: &ServiceName,
            i: &InstanceId,
        ) -> Result<Option<Revision>, Error> {
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
    async fn next(watch: &mut Watch) -> Result<Event, Error> {
        tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("the watch yields within a minute")
            .expect("a watch never ends")
    }

    /// Lets the cache's watch task run until the cache has applied `rev`.
    async fn applied<R: Registry>(cache: &Cached<R>, rev: Revision) {
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
}
