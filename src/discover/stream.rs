//! The registry-fed `Discover` stream.

use std::collections::{HashMap, HashSet};
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

use super::outbox::{shrink, Out, Outbox};
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
        let service = ServiceName::new(service.as_ref());
        let handle = DiscoverHandle::new(service.as_ref().ok().cloned());
        let core = match service {
            Ok(service) => Ok(Core::new(registry, service, self.config, handle.clone())),
            Err(e) => Err(Some(e)),
        };
        RegistryDiscover {
            core,
            outbox: Outbox::default(),
            factory,
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
///   changed. A health change between two eligible states is no change to the balancer: the
///   endpoint's [`LiveHealth`](super::LiveHealth), if its factory gave it one
///   ([`MakeEndpoint::weighted`]), is updated instead.
/// - Changes are collapsed per instance until they are taken: an instance registered and
///   deregistered between two polls yields nothing, one changed ten times yields one insert.
///   Endpoints are made as their inserts are taken.
/// - **Static stability**: a registry error never reaches the balancer (tower turns a
///   `Discover` error into a fatal balancer error). The stream keeps the last known set,
///   logs the error, marks [`DiscoverHandle::is_stale`], retries with backoff and resumes from
///   the last revision. Only an invalid service name ends it, with an error, at the first poll.
/// - **It never ends** while the registry exists.
/// - **Mass-disappearance guard**: see [`Builder::max_removal_share`].
/// - Events at or below the revision already applied (duplicates, or older than a reset) are
///   ignored: a watch delivers changes in revision order. A corrupt registry row is logged with
///   its service and instance and that instance keeps its last good version.
/// - **Bounded under churn**: it remembers the instances the registry holds and the endpoints
///   the balancer holds, nothing about instances that left, and its work per event does not
///   grow with the number of instances.
/// - `Unpin` when `F` is: balancers need an `Unpin` discover.
///
/// tower's balancers poll discovery only from `poll_ready`. To apply changes while no request
/// flows, drive the stream in the background with [`spawn`](RegistryDiscover::spawn).
pub struct RegistryDiscover<R: Registry, F: MakeEndpoint> {
    core: Result<Core<R>, Option<InvalidInput>>,
    outbox: Outbox,
    factory: F,
    handle: DiscoverHandle,
}

/// The registry side of discovery: loads, watches and retries, and keeps the [`Outbox`] in
/// line with the registry.
pub(crate) struct Core<R> {
    registry: R,
    service: ServiceName,
    config: Config,
    phase: Phase,
    /// Every instance of the service the registry holds, as last seen. Nothing is kept for
    /// instances that left: a watch delivers changes in revision order, so an event at or
    /// below `last` is stale whichever instance it names.
    all: HashMap<InstanceId, Instance>,
    /// How many instances in `all` are eligible and in the preferred zone.
    in_zone: usize,
    /// Instances whose removal is held by the mass-disappearance guard.
    held: HashSet<InstanceId>,
    suspect: bool,
    backoff: Duration,
    /// The revision applied: every change up to it is in `all`.
    last: Revision,
    /// Changes were applied that the handle has not reported yet.
    dirty: bool,
    handle: DiscoverHandle,
    /// Instances examined, for the tests that show the work per event is bounded.
    #[cfg(test)]
    pub(crate) visits: u64,
}

/// What the registry side produced.
pub(crate) enum Input {
    Loaded(Snapshot),
    Event(Event),
    Error(Error),
}

// Nothing in the stream is ever pinned in place: its futures are boxed and the watch is
// `Unpin`, so it may move freely whatever `R` and the endpoints are.
impl<R: Registry, F: MakeEndpoint + Unpin> Unpin for RegistryDiscover<R, F> {}

impl<R: Registry, F: MakeEndpoint> fmt::Debug for RegistryDiscover<R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryDiscover")
            .field("service", &self.handle.shared.service)
            .field("endpoints", &self.outbox.desired_len())
            .field("revision", &self.handle.revision())
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

    pub(crate) fn into_parts(self) -> (Result<Core<R>, Option<InvalidInput>>, Outbox, F) {
        (self.core, self.outbox, self.factory)
    }

    /// The sizes of what the stream keeps, and the instances it examined so far.
    #[cfg(test)]
    pub(crate) fn internals(&self) -> Internals {
        let core = self.core.as_ref().ok();
        let (slots, slots_room) = self.outbox.slots();
        Internals {
            instances: core.map_or(0, |c| c.all.len()),
            held: core.map_or(0, |c| c.held.len()),
            slots,
            room: core.map_or(0, |c| c.all.capacity() + c.held.capacity()) + slots_room,
            visits: core.map_or(0, |c| c.visits),
        }
    }
}

/// What a stream keeps; see `RegistryDiscover::internals`.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Internals {
    pub(crate) instances: usize,
    pub(crate) held: usize,
    pub(crate) slots: usize,
    /// What the maps and the queue have room for.
    pub(crate) room: usize,
    pub(crate) visits: u64,
}

/// Makes the endpoint for a change taken from the outbox.
pub(crate) fn hand_out<F: MakeEndpoint>(
    factory: &mut F,
    outbox: &mut Outbox,
    out: Out,
) -> Change<InstanceId, F::Service> {
    match out {
        Out::Insert(id, instance) => {
            let (svc, live) = factory.make_live_endpoint(&instance);
            if let Some(live) = live {
                outbox.handed(&id, live);
            }
            Change::Insert(id, svc)
        }
        Out::Remove(id) => Change::Remove(id),
    }
}

fn healthy(config: &Config, i: &Instance) -> bool {
    let health = match i.health() {
        Health::Passing => true,
        Health::Warning => config.include_warning,
        Health::Critical | Health::Maintenance => false,
    };
    health && !i.is_draining()
}

/// Whether the balancer should hold `i`.
fn eligible(config: &Config, zone_present: bool, i: &Instance) -> bool {
    healthy(config, i)
        && match &config.prefer_zone {
            Some(zone) if zone_present => i.zone() == Some(zone.as_str()),
            _ => true,
        }
}

/// Brings the balancer's view of `id` in line with the registry's version, `instance`.
fn reconcile(
    config: &Config,
    zone_present: bool,
    held: &mut HashSet<InstanceId>,
    id: &InstanceId,
    instance: Option<&Instance>,
    may_remove: bool,
    out: &mut Outbox,
) {
    match instance.filter(|i| eligible(config, zone_present, i)) {
        Some(instance) => {
            out.insert(id, instance.clone());
            if !held.is_empty() {
                held.remove(id);
            }
        }
        None => {
            if out.desired(id).is_none() {
                return;
            }
            if may_remove {
                out.remove(id);
                held.remove(id);
            } else {
                held.insert(id.clone());
            }
        }
    }
}

/// Whether `i` counts towards the preferred zone's presence.
fn in_zone(config: &Config, i: &Instance) -> bool {
    config
        .prefer_zone
        .as_deref()
        .is_some_and(|zone| i.zone() == Some(zone))
        && healthy(config, i)
}

impl<R: Registry> Core<R> {
    fn new(registry: R, service: ServiceName, config: Config, handle: DiscoverHandle) -> Self {
        Core {
            registry,
            service,
            backoff: config.backoff_initial,
            config,
            phase: Phase::Start,
            all: HashMap::new(),
            in_zone: 0,
            held: HashSet::new(),
            suspect: false,
            last: Revision::ZERO,
            dirty: false,
            handle,
            #[cfg(test)]
            visits: 0,
        }
    }

    fn zone_present(&self) -> bool {
        self.in_zone > 0
    }

    /// Brings the balancer's view of `id` in line with the registry's.
    fn reconcile(&mut self, id: &InstanceId, may_remove: bool, out: &mut Outbox) {
        #[cfg(test)]
        {
            self.visits += 1;
        }
        let zone_present = self.zone_present();
        let instance = self.all.get(id);
        reconcile(
            &self.config,
            zone_present,
            &mut self.held,
            id,
            instance,
            may_remove,
            out,
        );
    }

    /// Reconciles every instance the registry or the balancer has: after a reset, or when the
    /// preferred zone's presence flips.
    fn reconcile_all(&mut self, may_remove: bool, out: &mut Outbox) {
        let gone: Vec<InstanceId> = out
            .desired_ids()
            .filter(|id| !self.all.contains_key(*id))
            .cloned()
            .collect();
        #[cfg(test)]
        {
            self.visits += (self.all.len() + gone.len()) as u64;
        }
        let zone_present = self.zone_present();
        out.reserve(self.all.len());
        for (id, instance) in &self.all {
            let held = &mut self.held;
            reconcile(
                &self.config,
                zone_present,
                held,
                id,
                Some(instance),
                may_remove,
                out,
            );
        }
        for id in &gone {
            reconcile(
                &self.config,
                zone_present,
                &mut self.held,
                id,
                None,
                may_remove,
                out,
            );
        }
    }

    /// Replaces the registry's version of one instance (`None`: it left).
    fn apply_one(&mut self, id: InstanceId, instance: Option<Instance>, out: &mut Outbox) {
        let before = self.zone_present();
        let old = match instance {
            Some(new) => {
                if in_zone(&self.config, &new) {
                    self.in_zone += 1;
                }
                self.all.insert(id.clone(), new)
            }
            None => {
                let old = self.all.remove(&id);
                shrink(&mut self.all);
                old
            }
        };
        if old.is_some_and(|old| in_zone(&self.config, &old)) {
            self.in_zone -= 1;
        }
        if before != self.zone_present() {
            self.reconcile_all(true, out);
        } else {
            self.reconcile(&id, true, out);
        }
    }

    /// The registry was heard from: it is not stale. Release held removals.
    fn heard(&mut self, out: &mut Outbox) {
        self.handle.shared.stale.store(false, Ordering::Relaxed);
        if self.suspect {
            self.suspect = false;
            tracing::info!(service = %self.handle, "discovery: registry reachable again");
        }
        if !self.held.is_empty() {
            for id in std::mem::take(&mut self.held) {
                self.reconcile(&id, true, out);
            }
        }
    }

    fn apply_reset(&mut self, snapshot: Snapshot, out: &mut Outbox) {
        let Snapshot {
            revision,
            instances,
            corrupt,
            stale,
        } = snapshot;
        for record in &corrupt {
            tracing::warn!(%record, "discovery: corrupt registry row skipped; the instance keeps its last good version");
        }
        let mut fresh: HashMap<InstanceId, Instance> = HashMap::with_capacity(instances.len());
        for i in instances {
            fresh.insert(i.id().clone(), i);
        }
        // A corrupt instance keeps its last good version.
        for record in &corrupt {
            if let Some((id, i)) = self.all.remove_entry(record.id()) {
                fresh.entry(id).or_insert(i);
            }
        }
        self.all = fresh;
        // A reset replaces everything known: nothing at or below it is news.
        self.last = revision;
        self.in_zone = match self.config.prefer_zone {
            Some(_) => self
                .all
                .values()
                .filter(|i| in_zone(&self.config, i))
                .count(),
            None => 0,
        };
        let removing = out
            .desired_ids()
            .filter(|id| {
                !self
                    .all
                    .get(*id)
                    .is_some_and(|i| eligible(&self.config, self.in_zone > 0, i))
            })
            .count();
        let desired = out.desired_len();
        let suspect = self.suspect || stale;
        let hold = suspect
            && desired > 0
            && removing as f64 > self.config.max_removal_share * desired as f64;
        if hold {
            tracing::warn!(
                service = %self.handle,
                removing,
                endpoints = desired,
                "discovery: an update from a registry suspected stale would remove too many endpoints; holding the removals"
            );
        }
        self.reconcile_all(!hold, out);
        if !stale && !hold {
            self.heard(out);
        }
    }

    fn apply_event(&mut self, event: Event, out: &mut Outbox) {
        let revision = event.revision();
        match event {
            Event::Put { instance, .. } => {
                self.heard(out);
                if self.fresh(revision) {
                    let id = instance.id().clone();
                    self.apply_one(id, Some(instance), out);
                }
            }
            Event::Delete { id, .. } => {
                self.heard(out);
                if self.fresh(revision) {
                    self.apply_one(id, None, out);
                }
            }
            Event::Reset(snapshot) => self.apply_reset(snapshot, out),
            Event::Progress { .. } => {
                self.last = self.last.max(revision);
                self.heard(out);
            }
        }
    }

    /// Whether an event at `revision` is news; if so it is now applied.
    fn fresh(&mut self, revision: Revision) -> bool {
        if revision <= self.last {
            tracing::debug!(service = %self.handle, %revision, last = %self.last, "discovery: stale or duplicate event ignored");
            return false;
        }
        self.last = revision;
        true
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
                self.handle.fail(error.to_string());
            }
        }
    }

    /// Applies what [`poll_input`](Core::poll_input) produced.
    pub(crate) fn apply(&mut self, input: Input, out: &mut Outbox) {
        match input {
            Input::Loaded(snapshot) => {
                self.apply_reset(snapshot, out);
                self.dirty = true;
            }
            Input::Event(event) => {
                self.apply_event(event, out);
                self.dirty = true;
            }
            Input::Error(error) => self.report(error),
        }
    }

    /// Reports the applied revision and the endpoint count through the handle, if they moved.
    pub(crate) fn publish(&mut self, out: &Outbox) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let shared = &self.handle.shared;
        shared.endpoints.store(out.desired_len(), Ordering::Relaxed);
        shared.revision.store(self.last.get(), Ordering::Relaxed);
        shared.changed.send_replace(self.last.get());
    }

    fn retry_later(&mut self, reload: bool) {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
        self.phase = Phase::Waiting(Box::pin(tokio::time::sleep(pause)), reload);
    }

    /// Drives the load, the watch and the retries to the next thing to apply.
    pub(crate) fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        loop {
            match &mut self.phase {
                Phase::Start => {
                    let registry = self.registry.clone();
                    let service = self.service.clone();
                    self.phase =
                        Phase::Loading(Box::pin(async move { registry.snapshot(&service).await }));
                }
                Phase::Loading(load) => {
                    return Poll::Ready(match ready!(load.as_mut().poll(cx)) {
                        Ok(snapshot) => {
                            self.backoff = self.config.backoff_initial;
                            let watch = self.registry.watch(&self.service, snapshot.revision());
                            self.phase = Phase::Watching(watch);
                            Input::Loaded(snapshot)
                        }
                        Err(error) => {
                            self.retry_later(true);
                            Input::Error(error)
                        }
                    });
                }
                Phase::Watching(watch) => match ready!(Pin::new(watch).poll_next(cx)) {
                    Some(Ok(event)) => {
                        self.backoff = self.config.backoff_initial;
                        return Poll::Ready(Input::Event(event));
                    }
                    Some(Err(error)) => return Poll::Ready(Input::Error(error)),
                    None => {
                        tracing::warn!(service = %self.handle, "discovery: registry watch ended; resuming");
                        self.retry_later(false);
                    }
                },
                Phase::Waiting(sleep, reload) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.phase = if *reload {
                        Phase::Start
                    } else {
                        Phase::Watching(self.registry.watch(&self.service, self.last))
                    };
                }
            }
        }
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
        let core = match &mut this.core {
            Ok(core) => core,
            Err(e) => return Poll::Ready(e.take().map(|e| Err(Error::Invalid(e)))),
        };
        loop {
            if let Some(out) = this.outbox.next() {
                let change = hand_out(&mut this.factory, &mut this.outbox, out);
                return Poll::Ready(Some(Ok(change)));
            }
            // Every change so far has been taken: only now report the revision as applied.
            core.publish(&this.outbox);
            let input = ready!(core.poll_input(cx));
            core.apply(input, &mut this.outbox);
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

    /// Marks the stream stale with `error`.
    pub(super) fn fail(&self, error: String) {
        self.shared.stale.store(true, Ordering::Relaxed);
        *crate::sync::lock(&self.shared.last_error) = Some(error);
    }

    /// Whether the registry is currently failing, so the endpoint set may be out of date
    /// (it is still served).
    pub fn is_stale(&self) -> bool {
        self.shared.stale.load(Ordering::Relaxed)
    }

    /// The last registry error, as text.
    pub fn last_error(&self) -> Option<String> {
        crate::sync::lock(&self.shared.last_error).clone()
    }

    /// The registry revision the stream has applied.
    pub fn revision(&self) -> Revision {
        Revision::new(self.shared.revision.load(Ordering::Relaxed))
    }

    /// How many endpoints the balancer holds, or will once it takes the changes waiting for it.
    pub fn endpoints(&self) -> usize {
        self.shared.endpoints.load(Ordering::Relaxed)
    }

    /// Waits until the stream has applied `revision` (its changes wait for, or were taken by,
    /// the balancer).
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
