//! The checker's loop: one `watch_all` on the registry keeps the instances that declare a
//! check and the live checkers; after each batch of changes the checker starts and stops the
//! check tasks of the instances rendezvous hashing gives it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use super::fleet::is_owner;
use super::probe::HttpProber;
use super::task::{CheckTask, Stats};
use super::{Assignment, CHECKERS_SERVICE};
use crate::health::SelfRegistration;
use crate::instance::{CheckKind, Health, Instance, InstanceId, Scheme, ServiceName};
use crate::registry::{Error, Event, ReaperHandle, Registry, Revision};

type Key = (ServiceName, InstanceId);

struct Running {
    instance: Instance,
    handle: AbortHandle,
    /// The instance's health as registered, for the task (it clears a `Warning` that
    /// someone else, outlier detection say, published, with its next successful check).
    registered: watch::Sender<Health>,
}

pub(crate) struct Run<R> {
    pub(crate) registry: R,
    pub(crate) me: InstanceId,
    pub(crate) replicas: usize,
    pub(crate) fleet: bool,
    pub(crate) http: HttpProber,
    pub(crate) stats: Arc<Stats>,
    pub(crate) assignment: watch::Sender<Assignment>,
    pub(crate) registration: Option<SelfRegistration>,
    pub(crate) reaper: Option<ReaperHandle>,
    /// Every instance that declares a check (outside the checkers' own service).
    instances: HashMap<Key, Instance>,
    /// The fleet's checkers and their effective health.
    checkers: BTreeMap<InstanceId, Health>,
    tasks: HashMap<Key, Running>,
    dirty: HashSet<Key>,
    membership_dirty: bool,
    revision: Revision,
}

impl<R> Drop for Run<R> {
    fn drop(&mut self) {
        for (_, running) in self.tasks.drain() {
            running.handle.abort();
        }
    }
}

impl<R: Registry> Run<R> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        registry: R,
        me: InstanceId,
        replicas: usize,
        fleet: bool,
        stats: Arc<Stats>,
        assignment: watch::Sender<Assignment>,
        registration: Option<SelfRegistration>,
        reaper: Option<ReaperHandle>,
    ) -> Self {
        Run {
            http: HttpProber::new(me.as_str()),
            registry,
            me,
            replicas,
            fleet,
            stats,
            assignment,
            registration,
            reaper,
            instances: HashMap::new(),
            checkers: BTreeMap::new(),
            tasks: HashMap::new(),
            dirty: HashSet::new(),
            membership_dirty: true,
            revision: Revision::ZERO,
        }
    }

    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        // From the start of history: the registry replays it, or sends a reset with the whole
        // current state when it was compacted.
        let mut watch = self.registry.watch_all(Revision::ZERO);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                item = watch.next() => {
                    let Some(item) = item else {
                        tracing::error!(checker = %self.me, "the registry's watch ended; the checker stops");
                        break;
                    };
                    self.apply(item);
                    // Take every change already there before reconciling, so a replayed
                    // history does not start and stop tasks on the way.
                    while let Some(Some(item)) = watch.next().now_or_never() {
                        self.apply(item);
                    }
                    self.reconcile();
                }
            }
        }
        for (_, running) in self.tasks.drain() {
            running.handle.abort();
        }
        if let Some(registration) = self.registration.take() {
            if let Err(error) = registration.shutdown().await {
                tracing::warn!(checker = %self.me, %error, "could not leave the fleet; the lease will lapse instead");
            }
        }
        drop(self.reaper.take());
    }

    fn apply(&mut self, item: Result<Event, Error>) {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(checker = %self.me, %error, "registry watch error; checks go on with what is known");
                return;
            }
        };
        self.revision = self.revision.max(event.revision());
        match event {
            Event::Put { instance, .. } => self.put(instance),
            Event::Delete { service, id, .. } => self.remove(service, id),
            Event::Reset(snapshot) => {
                for corrupt in snapshot.corrupt() {
                    tracing::warn!(checker = %self.me, %corrupt, "a stored instance is corrupt; it is not checked");
                }
                self.instances.clear();
                self.checkers.clear();
                self.membership_dirty = true;
                for instance in snapshot.into_instances() {
                    self.put(instance);
                }
            }
            Event::Progress { .. } => {}
        }
    }

    fn put(&mut self, instance: Instance) {
        if instance.service().as_str() == CHECKERS_SERVICE {
            let before = self
                .checkers
                .insert(instance.id().clone(), instance.health());
            if before.map(is_live) != Some(is_live(instance.health())) {
                self.membership_dirty = true;
            }
            return;
        }
        let key = (instance.service().clone(), instance.id().clone());
        let checkable = match instance.check() {
            None => false,
            Some(check) => {
                if matches!(check.kind(), CheckKind::Http(_)) && instance.scheme() == Scheme::Https
                {
                    tracing::warn!(
                        service = %instance.service(),
                        instance = %instance.id(),
                        "HTTPS health checks are not supported (the checker has no TLS): not checked"
                    );
                    false
                } else {
                    true
                }
            }
        };
        if !checkable {
            if self.instances.remove(&key).is_some() {
                self.dirty.insert(key);
            }
            return;
        }
        if let Some(running) = self.tasks.get(&key) {
            running.registered.send_if_modified(|h| {
                let changed = *h != instance.health();
                *h = instance.health();
                changed
            });
        }
        match self.instances.insert(key.clone(), instance) {
            Some(old) if !needs_restart(&old, &self.instances[&key]) => {}
            _ => {
                self.dirty.insert(key);
            }
        }
    }

    fn remove(&mut self, service: ServiceName, id: InstanceId) {
        if service.as_str() == CHECKERS_SERVICE {
            if self.checkers.remove(&id).is_some_and(is_live) {
                self.membership_dirty = true;
            }
            return;
        }
        let key = (service, id);
        if self.instances.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    /// The live checkers, sorted: those whose lease holds, and this one in any case (its own
    /// lease may look lapsed while the registry is out of reach, and it may not be registered
    /// yet).
    fn live(&self) -> Vec<InstanceId> {
        if !self.fleet {
            return vec![self.me.clone()];
        }
        let mut live: Vec<InstanceId> = self
            .checkers
            .iter()
            .filter(|(id, health)| is_live(**health) || **id == self.me)
            .map(|(id, _)| id.clone())
            .collect();
        if !self.checkers.contains_key(&self.me) {
            live.push(self.me.clone());
            live.sort();
        }
        live
    }

    fn reconcile(&mut self) {
        let live = self.live();
        let keys: Vec<Key> = if std::mem::take(&mut self.membership_dirty) {
            self.dirty.clear();
            self.instances
                .keys()
                .chain(self.tasks.keys())
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect()
        } else {
            self.dirty.drain().collect()
        };
        let mut changed = false;
        for key in keys {
            let wanted = self.instances.get(&key).filter(|instance| {
                instance.health() != Health::Maintenance
                    && is_owner(&self.me, &live, self.replicas, &key.0, &key.1)
            });
            match (wanted, self.tasks.get(&key)) {
                (Some(instance), Some(running)) if !needs_restart(&running.instance, instance) => {}
                (Some(instance), _) => {
                    let instance = instance.clone();
                    if let Some(old) = self.tasks.remove(&key) {
                        old.handle.abort();
                    }
                    let (registered, watch) = watch::channel(instance.health());
                    let handle = self.spawn(instance.clone(), watch);
                    self.tasks.insert(
                        key,
                        Running {
                            instance,
                            handle,
                            registered,
                        },
                    );
                    changed = true;
                }
                (None, Some(_)) => {
                    if let Some(old) = self.tasks.remove(&key) {
                        old.handle.abort();
                    }
                    changed = true;
                }
                (None, None) => {}
            }
        }
        let checkers_changed = self.assignment.borrow().checkers != live;
        if changed || checkers_changed || self.assignment.borrow().revision != self.revision {
            let instances: BTreeSet<Key> = self.tasks.keys().cloned().collect();
            tracing::debug!(checker = %self.me, checkers = live.len(), instances = instances.len(), "assignment");
            self.assignment.send_replace(Assignment {
                checkers: live,
                instances,
                revision: self.revision,
            });
        }
    }

    fn spawn(&self, instance: Instance, registered: watch::Receiver<Health>) -> AbortHandle {
        // `instances` only holds instances with a check.
        let check = instance
            .check()
            .cloned()
            .expect("checked instances declare a check");
        let task = CheckTask {
            registry: self.registry.clone(),
            instance,
            check,
            http: self.http.clone(),
            stats: self.stats.clone(),
            checker: self.me.clone(),
            registered,
        };
        tokio::spawn(task.run()).abort_handle()
    }
}

/// A checker counts as live while its lease holds.
fn is_live(health: Health) -> bool {
    matches!(health, Health::Passing | Health::Warning)
}

/// Whether a change to an instance calls for a new check task: its check, or where it is
/// reached, changed (health and metadata do not).
fn needs_restart(old: &Instance, new: &Instance) -> bool {
    old.check() != new.check()
        || old.host() != new.host()
        || old.port() != new.port()
        || old.scheme() != new.scheme()
        || (old.health() == Health::Maintenance) != (new.health() == Health::Maintenance)
}
