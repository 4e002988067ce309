//! The registry-fed `Discover` stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::Sleep;
use tower::discover::Change;

use crate::instance::{Health, Instance, InstanceId, InvalidInput, ServiceName};
use crate::registry::{Error, Event, Registry, Revision, Snapshot, Watch};

use super::MakeEndpoint;

/// Which instances [`RegistryDiscover`] offers to the balancer, and how it retries.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) include_warning: bool,
    pub(crate) prefer_zone: Option<String>,
    pub(crate) max_removal_share: f64,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            include_warning: true,
            prefer_zone: None,
            max_removal_share: 0.5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Builds a [`RegistryDiscover`]; see [`RegistryDiscover::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// Whether instances whose health is `Warning` take traffic (default `true`, as in
    /// Consul's `passing`-or-`warning` default).
    pub fn include_warning(mut self, include: bool) -> Self {
        self.config.include_warning = include;
        self
    }

    /// Prefer instances in `zone`: while at least one eligible instance is in it, only those
    /// are offered; when none is, every eligible instance is (zone-aware routing with fallback).
    pub fn prefer_zone(mut self, zone: impl Into<String>) -> Self {
        self.config.prefer_zone = Some(zone.into());
        self
    }

    /// The mass-disappearance guard: when one update would remove more than `share` (default
    /// 0.5) of the endpoints while the registry is suspected stale, the removals are held and
    /// the endpoints kept until the registry is heard from again. Clamped into 0.0..=1.0.
    pub fn max_removal_share(mut self, share: f64) -> Self {
        self.config.max_removal_share = if share.is_nan() {
            0.5
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// Retry pauses after a registry error: first, and the cap they double up to (default
    /// 100 ms and 10 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial.max(Duration::from_millis(1));
        self.config.backoff_max = max.max(self.config.backoff_initial);
        self
    }

    /// The stream for `service` in `registry`, with endpoints made by `factory`. An invalid
    /// service name is reported as the stream's first and only item.
    pub fn build<R, F>(
        self,
        registry: R,
        service: impl AsRef<str>,
        factory: F,
    ) -> RegistryDiscover<R, F>
    where
        R: Registry,
        F: MakeEndpoint,
    {
        let service = ServiceName::new(service.as_ref()).map_err(Some);
        let handle = DiscoverHandle::new(service.as_ref().ok().cloned());
        RegistryDiscover {
            registry,
            service,
            factory,
            backoff: self.config.backoff_initial,
            config: self.config,
            phase: Phase::Start,
            all: HashMap::new(),
            inserted: HashMap::new(),
            pending: VecDeque::new(),
            held: HashSet::new(),
            suspect: false,
            zone_present: false,
            dirty: false,
            last: Revision::ZERO,
            handle,
        }
    }
}

type Load = Pin<Box<dyn Future<Output = Result<Snapshot, Error>> + Send>>;

enum Phase {
    Start,
    Loading(Load),
    Watching(Watch),
    Waiting(Pin<Box<Sleep>>, bool),
}

/// A [`Discover`](tower::discover::Discover) of one service's instances, fed by a
/// [`Registry`] watch: a `Stream` of `Result<Change<InstanceId, F::Service>, Error>`, so
/// tower's blanket `Discover` impl applies and any balancer can use it.
///
/// - Offers instances that are `Passing` (and `Warning`, unless configured otherwise) with a
///   weight above 0 (weight 0 drains: no new traffic); removes those that leave or turn
///   ineligible; re-inserts an instance whose address, scheme, version, weight, zone or metadata
///   changed (a health change between two eligible states is no change to the balancer).
/// - **Static stability**: a registry error never reaches the balancer (tower turns a
///   `Discover` error into a fatal balancer error). The stream keeps the last known set,
///   logs the error, marks [`DiscoverHandle::is_stale`], retries with backoff and resumes from
///   the last revision. Only an invalid service name ends it, with an error, at the first poll.
/// - **It never ends** while the registry exists.
/// - **Mass-disappearance guard**: see [`Builder::max_removal_share`].
/// - Duplicate and out-of-order events are ignored per instance (by revision); a corrupt
///   registry row is logged with its service and instance and that instance keeps its last
///   good version.
/// - `Unpin` when `F` is: balancers need an `Unpin` discover.
///
/// tower's balancers poll discovery only from `poll_ready`. To apply changes while no request
/// flows, drive the stream in the background with [`spawn`](RegistryDiscover::spawn).
pub struct RegistryDiscover<R: Registry, F: MakeEndpoint> {
    registry: R,
    service: Result<ServiceName, Option<InvalidInput>>,
    factory: F,
    config: Config,
    phase: Phase,
    /// The latest version of every instance seen, with the revision of its last change;
    /// `None` is a tombstone.
    all: HashMap<InstanceId, (Revision, Option<Instance>)>,
    /// What the balancer has been given.
    inserted: HashMap<InstanceId, Instance>,
    pending: VecDeque<Change<InstanceId, F::Service>>,
    held: HashSet<InstanceId>,
    suspect: bool,
    zone_present: bool,
    /// Changes were made that the handle has not reported yet.
    dirty: bool,
    backoff: Duration,
    last: Revision,
    handle: DiscoverHandle,
}

// Nothing in the stream is ever pinned in place: its futures are boxed and the watch is
// `Unpin`, so it may move freely whatever `R` and the endpoints are.
impl<R: Registry, F: MakeEndpoint + Unpin> Unpin for RegistryDiscover<R, F> {}

impl<R: Registry, F: MakeEndpoint> fmt::Debug for RegistryDiscover<R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryDiscover")
            .field("service", &self.service)
            .field("endpoints", &self.inserted.len())
            .field("revision", &self.last)
            .field("stale", &self.handle.is_stale())
            .finish_non_exhaustive()
    }
}

impl RegistryDiscover<crate::registry::MemoryRegistry, fn(&Instance)> {
    /// A builder with the defaults: `Warning` instances included, no zone preference, removal
    /// guard at 50 %, backoff from 100 ms to 10 s.
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
        }
    }
}

impl<R: Registry, F: MakeEndpoint> RegistryDiscover<R, F> {
    /// The stream for `service` with default settings.
    pub fn new(registry: R, service: impl AsRef<str>, factory: F) -> Self {
        RegistryDiscover::builder().build(registry, service, factory)
    }

    /// A handle reporting the stream's health: stale or not, the last error, the revision
    /// applied, the number of endpoints.
    pub fn handle(&self) -> DiscoverHandle {
        self.handle.clone()
    }

    fn eligible(&self, i: &Instance) -> bool {
        let health = match i.health() {
            Health::Passing => true,
            Health::Warning => self.config.include_warning,
            Health::Critical | Health::Maintenance => false,
        };
        if !health || i.is_draining() {
            return false;
        }
        match &self.config.prefer_zone {
            Some(zone) if self.zone_present => i.zone() == Some(zone.as_str()),
            _ => true,
        }
    }

    /// Whether any eligible instance (ignoring the zone) is in the preferred zone.
    fn compute_zone_present(&self) -> bool {
        let Some(zone) = &self.config.prefer_zone else {
            return false;
        };
        self.all.values().any(|(_, i)| {
            i.as_ref().is_some_and(|i| {
                i.zone() == Some(zone.as_str())
                    && !i.is_draining()
                    && (i.health() == Health::Passing
                        || (i.health() == Health::Warning && self.config.include_warning))
            })
        })
    }

    /// Brings the balancer's view of `id` in line with the registry's.
    fn reconcile(&mut self, id: &InstanceId, may_remove: bool) {
        let desired = self
            .all
            .get(id)
            .and_then(|(_, i)| i.as_ref())
            .filter(|i| self.eligible(i))
            .cloned();
        match (desired, self.inserted.get(id)) {
            (Some(new), Some(old)) => {
                if new.differs_besides_health(old) {
                    let svc = self.factory.make_endpoint(&new);
                    self.pending.push_back(Change::Insert(id.clone(), svc));
                }
                self.held.remove(id);
                self.inserted.insert(id.clone(), new);
            }
            (Some(new), None) => {
                let svc = self.factory.make_endpoint(&new);
                self.pending.push_back(Change::Insert(id.clone(), svc));
                self.inserted.insert(id.clone(), new);
            }
            (None, Some(_)) => {
                if may_remove {
                    self.inserted.remove(id);
                    self.held.remove(id);
                    self.pending.push_back(Change::Remove(id.clone()));
                } else {
                    self.held.insert(id.clone());
                }
            }
            (None, None) => {}
        }
    }

    fn reconcile_all(&mut self, may_remove: bool) {
        let ids: HashSet<InstanceId> = self
            .all
            .keys()
            .chain(self.inserted.keys())
            .cloned()
            .collect();
        for id in ids {
            self.reconcile(&id, may_remove);
        }
    }

    /// Applies one change of one instance, unless an equal or newer one was seen.
    fn apply_one(&mut self, revision: Revision, id: InstanceId, instance: Option<Instance>) {
        if self.all.get(&id).is_some_and(|(seen, _)| *seen >= revision) {
            tracing::debug!(instance = %id, %revision, "discovery: stale or duplicate event ignored");
            return;
        }
        self.all.insert(id.clone(), (revision, instance));
        let before = self.zone_present;
        self.zone_present = self.compute_zone_present();
        if before != self.zone_present {
            self.reconcile_all(true);
        } else {
            self.reconcile(&id, true);
        }
    }

    /// The registry was heard from: it is not stale. Release held removals.
    fn heard(&mut self) {
        self.handle.shared.stale.store(false, Ordering::Relaxed);
        if self.suspect {
            self.suspect = false;
            tracing::info!(service = %self.handle, "discovery: registry reachable again");
        }
        if !self.held.is_empty() {
            for id in std::mem::take(&mut self.held) {
                self.reconcile(&id, true);
            }
        }
    }

    fn apply_reset(&mut self, snapshot: Snapshot) {
        for record in snapshot.corrupt() {
            tracing::warn!(%record, "discovery: corrupt registry row skipped; the instance keeps its last good version");
        }
        let corrupt: HashSet<&str> = snapshot.corrupt().iter().map(|c| c.id()).collect();
        let revision = snapshot.revision();
        let mut fresh: HashMap<InstanceId, (Revision, Option<Instance>)> = snapshot
            .instances()
            .iter()
            .map(|i| (i.id().clone(), (revision, Some(i.clone()))))
            .collect();
        // Instances now gone get a tombstone; a corrupt one keeps its last good version.
        for (id, (rev, old)) in &self.all {
            if !fresh.contains_key(id) {
                if corrupt.contains(id.as_str()) {
                    fresh.insert(id.clone(), (*rev, old.clone()));
                } else {
                    fresh.insert(id.clone(), (revision, None));
                }
            }
        }
        self.all = fresh;
        self.zone_present = self.compute_zone_present();
        let removing = self
            .inserted
            .values()
            .filter(|i| {
                !self
                    .all
                    .get(i.id())
                    .and_then(|(_, i)| i.as_ref())
                    .is_some_and(|i| self.eligible(i))
            })
            .count();
        let suspect = self.suspect || snapshot.is_stale();
        let hold = suspect
            && !self.inserted.is_empty()
            && removing as f64 > self.config.max_removal_share * self.inserted.len() as f64;
        if hold {
            tracing::warn!(
                service = %self.handle,
                removing,
                endpoints = self.inserted.len(),
                "discovery: an update from a registry suspected stale would remove too many endpoints; holding the removals"
            );
        }
        self.reconcile_all(!hold);
        self.last = self.last.max(revision);
        if !snapshot.is_stale() && !hold {
            self.heard();
        }
    }

    fn apply(&mut self, event: Event) {
        self.last = self.last.max(event.revision());
        match event {
            Event::Put { revision, instance } => {
                self.heard();
                let id = instance.id().clone();
                self.apply_one(revision, id, Some(instance));
            }
            Event::Delete { revision, id, .. } => {
                self.heard();
                self.apply_one(revision, id, None);
            }
            Event::Reset(snapshot) => self.apply_reset(snapshot),
            Event::Progress { .. } => self.heard(),
        }
    }

    fn report(&mut self, error: Error) {
        match &error {
            Error::Corrupt(record) => {
                tracing::warn!(%record, "discovery: corrupt registry row skipped; the instance keeps its last good version");
            }
            _ => {
                if !self.suspect {
                    tracing::warn!(service = %self.handle, %error, "discovery: registry error; serving the last known endpoints");
                }
                self.suspect = true;
                self.handle.shared.stale.store(true, Ordering::Relaxed);
                *self
                    .handle
                    .shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
            }
        }
    }

    fn publish(&self) {
        let shared = &self.handle.shared;
        shared
            .endpoints
            .store(self.inserted.len(), Ordering::Relaxed);
        shared.revision.store(self.last.get(), Ordering::Relaxed);
        shared.changed.send_replace(self.last.get());
    }

    fn retry_later(&mut self, reload: bool) {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
        self.phase = Phase::Waiting(Box::pin(tokio::time::sleep(pause)), reload);
    }
}

impl<R, F> Stream for RegistryDiscover<R, F>
where
    R: Registry,
    F: MakeEndpoint + Unpin,
{
    type Item = Result<Change<InstanceId, F::Service>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let service = match &mut this.service {
            Ok(s) => s.clone(),
            Err(e) => return Poll::Ready(e.take().map(|e| Err(Error::Invalid(e)))),
        };
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            // Every change so far has been taken: only now report the revision as applied.
            if this.dirty {
                this.dirty = false;
                this.publish();
            }
            match &mut this.phase {
                Phase::Start => {
                    let registry = this.registry.clone();
                    let service = service.clone();
                    this.phase =
                        Phase::Loading(Box::pin(async move { registry.snapshot(&service).await }));
                }
                Phase::Loading(load) => match ready!(load.as_mut().poll(cx)) {
                    Ok(snapshot) => {
                        let revision = snapshot.revision();
                        this.apply_reset(snapshot);
                        this.backoff = this.config.backoff_initial;
                        this.phase = Phase::Watching(this.registry.watch(&service, revision));
                        this.dirty = true;
                    }
                    Err(error) => {
                        this.report(error);
                        this.retry_later(true);
                    }
                },
                Phase::Watching(watch) => match ready!(Pin::new(watch).poll_next(cx)) {
                    Some(Ok(event)) => {
                        this.backoff = this.config.backoff_initial;
                        this.apply(event);
                        this.dirty = true;
                    }
                    Some(Err(error)) => this.report(error),
                    None => {
                        tracing::warn!(service = %this.handle, "discovery: registry watch ended; resuming");
                        this.retry_later(false);
                    }
                },
                Phase::Waiting(sleep, reload) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.phase = if *reload {
                        Phase::Start
                    } else {
                        Phase::Watching(this.registry.watch(&service, this.last))
                    };
                }
            }
        }
    }
}

/// Reports how a [`RegistryDiscover`] is doing; cheap to clone, usable from any task.
#[derive(Clone)]
pub struct DiscoverHandle {
    shared: Arc<HandleShared>,
}

struct HandleShared {
    service: Option<ServiceName>,
    stale: AtomicBool,
    last_error: Mutex<Option<String>>,
    revision: AtomicU64,
    endpoints: AtomicUsize,
    changed: tokio::sync::watch::Sender<u64>,
}

impl DiscoverHandle {
    fn new(service: Option<ServiceName>) -> Self {
        DiscoverHandle {
            shared: Arc::new(HandleShared {
                service,
                stale: AtomicBool::new(false),
                last_error: Mutex::new(None),
                revision: AtomicU64::new(0),
                endpoints: AtomicUsize::new(0),
                changed: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// Whether the registry is currently failing, so the endpoint set may be out of date
    /// (it is still served).
    pub fn is_stale(&self) -> bool {
        self.shared.stale.load(Ordering::Relaxed)
    }

    /// The last registry error, as text.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The registry revision the stream has applied.
    pub fn revision(&self) -> Revision {
        Revision::new(self.shared.revision.load(Ordering::Relaxed))
    }

    /// How many endpoints the balancer has been given.
    pub fn endpoints(&self) -> usize {
        self.shared.endpoints.load(Ordering::Relaxed)
    }

    /// Waits until the stream has applied `revision` (its changes are queued for, or taken
    /// by, the balancer).
    pub async fn applied(&self, revision: Revision) {
        let mut rx = self.shared.changed.subscribe();
        let _ = rx.wait_for(|r| *r >= revision.get()).await;
    }
}

impl fmt::Display for DiscoverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shared.service {
            Some(s) => s.fmt(f),
            None => f.write_str("<invalid>"),
        }
    }
}

impl fmt::Debug for DiscoverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoverHandle")
            .field("service", &self.shared.service)
            .field("stale", &self.is_stale())
            .field("revision", &self.revision())
            .field("endpoints", &self.endpoints())
            .finish()
    }
}
