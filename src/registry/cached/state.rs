//! What the cache holds and how each item of its watch changes it: the cached services, the
//! loads in flight, the recent log its watchers read, and whether it is stale.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::MutexGuard;

use crate::instance::{Instance, InstanceId, ServiceName};
use crate::registry::error::{DatabaseError, DatabaseErrorKind};
use crate::registry::{CorruptRecord, Error, Event, Revision, Snapshot};

use super::Shared;

/// Everything the cache knows, behind its one mutex.
#[derive(Default)]
pub(super) struct State {
    pub(super) services: HashMap<ServiceName, Entry>,
    /// Services being loaded and not yet cached: the events that arrive meanwhile, for the
    /// loader to apply over its snapshot.
    pub(super) loading: HashMap<ServiceName, Load>,
    /// Everything up to here has been applied.
    pub(super) position: u64,
    /// The log holds every change after this revision.
    pub(super) log_floor: u64,
    pub(super) log: VecDeque<(u64, LogItem)>,
    pub(super) stale: bool,
    pub(super) last_error: Option<DatabaseError>,
    /// Bumped whenever `stale` flips, so watchers can report it.
    pub(super) health_generation: u64,
    /// Bumped when a reset takes the cache back to an earlier revision (the database was
    /// restored or replaced): watchers ahead of it then get a reset too.
    pub(super) epoch: u64,
    /// Every service is cached (set once a watcher of all services needed a reset): a change
    /// to a service not cached yet caches it.
    pub(super) complete: bool,
    /// While the cache loads every service: the changes to services not cached, to rebuild
    /// those that the registry's list of services leaves out.
    pub(super) collect: Option<HashMap<ServiceName, Vec<LogItem>>>,
    /// Once complete: corrupt records whose service name is itself corrupt (no entry holds them).
    pub(super) orphans: BTreeMap<(String, String), CorruptRecord>,
}

/// The loaders of one service in flight, and the events that arrived meanwhile.
#[derive(Default)]
pub(super) struct Load {
    pub(super) loaders: usize,
    pub(super) buffered: Vec<Event>,
}

/// One item of the recent log: a change, or a corrupt event reported to watchers as an error.
#[derive(Clone)]
pub(super) enum LogItem {
    Event(Event),
    Corrupt(CorruptRecord),
}

/// One cached service, as of `revision`.
#[derive(Default)]
pub(super) struct Entry {
    pub(super) revision: u64,
    pub(super) instances: BTreeMap<InstanceId, Instance>,
    pub(super) corrupt: BTreeMap<String, CorruptRecord>,
}

impl Entry {
    pub(super) fn from_snapshot(snapshot: Snapshot) -> Self {
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

    pub(super) fn apply(&mut self, event: &Event) {
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

    /// Applies an item of the log: a change, or a corrupt record replacing its instance.
    pub(super) fn apply_item(&mut self, item: &LogItem) {
        match item {
            LogItem::Event(event) => self.apply(event),
            LogItem::Corrupt(record) => {
                self.instances.retain(|id, _| id.as_str() != record.id());
                self.corrupt.insert(record.id().to_owned(), record.clone());
            }
        }
    }

    /// Holds neither an instance nor a corrupt record: the cache lets it go (a read loads
    /// the service again), so that services that come and go, or names that are only
    /// asked about, do not pile up.
    pub(super) fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.corrupt.is_empty()
    }

    pub(super) fn snapshot(&self, position: u64, stale: bool) -> Snapshot {
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
    pub(super) fn end_load(&mut self, service: &ServiceName, take: bool) -> Vec<Event> {
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

    /// A change (or corrupt record) for `service`, which is not cached: buffered for its
    /// loaders and for a load of every service, or cached at once if the cache is complete.
    fn uncached(&mut self, service: &ServiceName, item: &LogItem) {
        if self.complete {
            let mut entry = Entry::default();
            entry.apply_item(item);
            if !entry.is_empty() {
                self.services.insert(service.clone(), entry);
            }
            return;
        }
        if let (Some(load), LogItem::Event(event)) = (self.loading.get_mut(service), item) {
            load.buffered.push(event.clone());
        }
        if let Some(collect) = self.collect.as_mut() {
            collect
                .entry(service.clone())
                .or_default()
                .push(item.clone());
        }
    }

    /// A corrupt record for a service that is not cached.
    fn uncached_corrupt(&mut self, record: &CorruptRecord) {
        match record.service().parse::<ServiceName>() {
            Ok(service) => self.uncached(&service, &LogItem::Corrupt(record.clone())),
            Err(_) if self.complete || self.collect.is_some() => {
                let key = (record.service().to_owned(), record.id().to_owned());
                self.orphans.insert(key, record.clone());
            }
            Err(_) => {}
        }
    }

    /// Lets the entry of `service` go if it is empty and nobody is loading the service
    /// (a loader in flight returns the entry, or builds its own from it).
    pub(super) fn let_go_if_empty(&mut self, service: &ServiceName) {
        if !self.loading.contains_key(service)
            && self.services.get(service).is_some_and(Entry::is_empty)
        {
            self.services.remove(service);
        }
    }

    /// The whole cached state as one snapshot at `position`, for a watcher of all services.
    /// `None` while some service was loaded at a later revision than the cache has reached
    /// (the snapshot would mix revisions): the caller waits for the watch to catch up.
    pub(super) fn snapshot_all(&self) -> Option<Snapshot> {
        if self.services.values().any(|e| e.revision > self.position) {
            return None;
        }
        let mut names: Vec<&ServiceName> = self.services.keys().collect();
        names.sort();
        let mut instances = Vec::new();
        let mut corrupt = Vec::new();
        for name in names {
            let entry = &self.services[name];
            instances.extend(entry.instances.values().cloned());
            corrupt.extend(entry.corrupt.values().cloned());
        }
        corrupt.extend(self.orphans.values().cloned());
        Some(Snapshot {
            revision: Revision::new(self.position),
            instances,
            corrupt,
            stale: self.stale,
        })
    }

    pub(super) fn push_log(&mut self, rev: u64, item: LogItem, retention: usize) {
        self.log.push_back((rev, item));
        while self.log.len() > retention {
            if let Some((rev, _)) = self.log.pop_front() {
                self.log_floor = rev;
            }
        }
    }
}

impl<R> Shared<R> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Applies one item of the cache's watch: a change, a reset, progress, a corrupt event,
    /// or a failure (which marks the cache stale).
    pub(super) fn apply(&self, item: Result<Event, Error>) {
        let mut state = self.lock();
        let retention = self.options.log_retention;
        match item {
            Ok(event) => {
                let rev = event.revision().get();
                match &event {
                    Event::Put { .. } | Event::Delete { .. } => {
                        let service = event.service().cloned();
                        let item = LogItem::Event(event);
                        if let Some(service) = service {
                            if let Some(entry) = state.services.get_mut(&service) {
                                entry.apply_item(&item);
                                state.let_go_if_empty(&service);
                            } else {
                                state.uncached(&service, &item);
                            }
                        }
                        state.push_log(rev, item, retention);
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
                        // A reset holds every service: a cache that is (or is becoming)
                        // complete caches the rest of them from it.
                        if state.complete || state.collect.is_some() {
                            let mut rest: Vec<ServiceName> = by_service.keys().cloned().collect();
                            state.orphans.clear();
                            for service in corrupt.keys() {
                                match service.parse::<ServiceName>() {
                                    Ok(name) if !by_service.contains_key(&name) => rest.push(name),
                                    Ok(_) => {}
                                    Err(_) => {
                                        state.orphans.extend(corrupt[service].iter().map(|c| {
                                            ((c.service().to_owned(), c.id().to_owned()), c.clone())
                                        }))
                                    }
                                }
                            }
                            for name in rest {
                                let entry = entry_of(&name, &mut by_service, &mut corrupt);
                                state.services.insert(name, entry);
                            }
                            if let Some(collect) = state.collect.as_mut() {
                                collect.clear();
                            }
                            state.complete = true;
                        }
                        // Services the reset left empty are let go, except those being
                        // loaded: their loaders return the entry (and let it go after).
                        let loading = &state.loading;
                        state
                            .services
                            .retain(|name, entry| !entry.is_empty() || loading.contains_key(name));
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
                let item = LogItem::Corrupt(record.clone());
                if let Some(entry) = state.services.get_mut(record.service()) {
                    entry.apply_item(&item);
                } else {
                    state.uncached_corrupt(&record);
                }
                let rev = record.revision().map_or(state.position, Revision::get);
                state.position = state.position.max(rev);
                state.push_log(rev, item, retention);
            }
            Err(error) => {
                tracing::warn!(%error, "registry cache watch failed; serving cached data as stale");
                let db = match error {
                    Error::Database(db) => db,
                    other => DatabaseError {
                        kind: DatabaseErrorKind::Other,
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
