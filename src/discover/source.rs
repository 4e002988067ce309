//! The registry side of discovery: loads, watches and retries, and decides what the balancer
//! should hold.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::Sleep;

use crate::instance::{Health, Instance, InstanceId, ServiceName};
use crate::registry::{Error, Event, Registry, Revision, Snapshot, Watch};

use super::builder::Config;
use super::handle::DiscoverHandle;
use super::outbox::{shrink, Outbox};

type Load = Pin<Box<dyn Future<Output = Result<Snapshot, Error>> + Send>>;

enum Phase {
    Start,
    Loading(Load),
    Watching(Watch),
    Waiting(Pin<Box<Sleep>>, bool),
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
    pub(super) fn new(
        registry: R,
        service: ServiceName,
        config: Config,
        handle: DiscoverHandle,
    ) -> Self {
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

    /// Instances known, removals held, and the room the two maps take.
    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize, usize) {
        (
            self.all.len(),
            self.held.len(),
            self.all.capacity() + self.held.capacity(),
        )
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
        self.backoff = self.backoff.saturating_mul(2).min(self.config.backoff_max);
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
