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
