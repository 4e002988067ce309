//! The in-process registry.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::instance::{Health, Instance, InstanceId, ServiceName};

use super::error::ConfigError;
use super::lease::Sweep;
use super::{
    Clock, Error, Event, HealthUpdate, LeaseConfig, ReapReport, Registration, Registry, Revision,
    Snapshot, Watch,
};

/// A registry in this process's memory: the default for tests and single-process use.
///
/// Writes take a short `std` mutex (never held across an `.await`); watchers are woken through
/// a tokio `watch` channel and read the retained history, so a slow watcher never makes the
/// registry drop changes: it catches up from the history, or gets an [`Event::Reset`] if it
/// fell behind the retention window (default 100,000 changes).
///
/// ```
/// use tower_mesh::instance::Instance;
/// use tower_mesh::registry::{MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = MemoryRegistry::new();
/// let rev = registry
///     .register(Instance::builder("orders", "orders-1").port(8080).build()?.into())
///     .await?;
/// assert_eq!(registry.snapshot(&"orders".parse()?).await?.revision(), rev);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

/// Changes kept for watchers unless told otherwise.
const DEFAULT_RETENTION: usize = 100_000;

struct Shared {
    state: Mutex<State>,
    /// Wakes watchers; a lagged receiver just re-reads the history.
    wake: broadcast::Sender<()>,
    clock: Clock,
    retention: usize,
}

#[derive(Default)]
struct State {
    revision: u64,
    compacted: u64,
    services: BTreeMap<ServiceName, BTreeMap<InstanceId, Record>>,
    log: VecDeque<(u64, Change)>,
}

#[derive(Clone)]
enum Change {
    Put(Instance),
    Delete(ServiceName, InstanceId),
}

struct Record {
    instance: Instance,
    ttl_ms: Option<i64>,
    expires_at_ms: i64,
    /// When the reaper saw the lease lapsed and turned the instance critical.
    critical_since_ms: Option<i64>,
}

impl Record {
    fn effective(&self) -> Instance {
        if self.critical_since_ms.is_some() {
            self.instance.clone().with_health(Health::Critical)
        } else {
            self.instance.clone()
        }
    }
}

impl State {
    fn next(&mut self, change: Change, retention: usize) -> Revision {
        self.revision += 1;
        self.log.push_back((self.revision, change));
        while self.log.len() > retention {
            if let Some((rev, _)) = self.log.pop_front() {
                self.compacted = rev;
            }
        }
        Revision(self.revision)
    }

    fn snapshot(&self, service: Option<&ServiceName>) -> Snapshot {
        let instances = match service {
            Some(s) => self
                .services
                .get(s)
                .map(|m| m.values().map(Record::effective).collect())
                .unwrap_or_default(),
            None => self
                .services
                .values()
                .flat_map(|m| m.values().map(Record::effective))
                .collect(),
        };
        Snapshot {
            revision: Revision(self.revision),
            instances,
            corrupt: Vec::new(),
            stale: false,
        }
    }

    fn record(&mut self, service: &ServiceName, id: &InstanceId) -> Result<&mut Record, Error> {
        self.services
            .get_mut(service)
            .and_then(|m| m.get_mut(id))
            .ok_or_else(|| Error::NotFound {
                service: service.clone(),
                id: id.clone(),
            })
    }

    fn put(&mut self, reg: Registration, now_ms: i64, retention: usize) -> Revision {
        let ttl_ms = reg.ttl_ms();
        let instance = reg.instance;
        let record = Record {
            instance: instance.clone(),
            ttl_ms,
            expires_at_ms: ttl_ms.map_or(0, |t| now_ms + t),
            critical_since_ms: None,
        };
        self.services
            .entry(instance.service().clone())
            .or_default()
            .insert(instance.id().clone(), record);
        self.next(Change::Put(instance), retention)
    }

    fn remove(&mut self, service: &ServiceName, id: &InstanceId, retention: usize) -> Revision {
        if let Some(m) = self.services.get_mut(service) {
            m.remove(id);
            if m.is_empty() {
                self.services.remove(service);
            }
        }
        self.next(Change::Delete(service.clone(), id.clone()), retention)
    }
}

impl MemoryRegistry {
    /// An empty registry on tokio's clock.
    pub fn new() -> Self {
        Self::with_clock(Clock::system())
    }

    /// An empty registry whose leases follow `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self::build(clock, DEFAULT_RETENTION)
    }

    /// An empty registry whose leases follow `clock` and that retains the last `retention`
    /// changes for watchers (default 100,000). A retention of zero is refused: a watcher could
    /// then never catch up from the history.
    pub fn with_options(clock: Clock, retention: usize) -> Result<Self, ConfigError> {
        if retention == 0 {
            return Err(ConfigError::new(
                "retention",
                0,
                "must keep at least 1 change",
            ));
        }
        Ok(Self::build(clock, retention))
    }

    fn build(clock: Clock, retention: usize) -> Self {
        let (wake, _) = broadcast::channel(16);
        MemoryRegistry {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake,
                clock,
                retention,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.shared.state)
    }

    fn notify(&self, _revision: Revision) {
        // No receivers is fine: nobody is watching.
        let _ = self.shared.wake.send(());
    }

    fn watch_scope(&self, service: Option<ServiceName>, since: Revision) -> Watch {
        let state = WatchState {
            registry: self.clone(),
            rx: self.shared.wake.subscribe(),
            service,
            last: since.0,
            pending: VecDeque::new(),
        };
        Watch::new(futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(event) = st.pending.pop_front() {
                    return Some((Ok(event), st));
                }
                // Forget wake-ups already covered by the read below; one sent after it wakes us.
                while let Ok(()) | Err(broadcast::error::TryRecvError::Lagged(_)) = st.rx.try_recv()
                {
                }
                st.fill();
                if st.pending.is_empty() {
                    match st.rx.recv().await {
                        Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        }))
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryRegistry")
            .field("revision", &state.revision)
            .field("services", &state.services.len())
            .finish()
    }
}

struct WatchState {
    registry: MemoryRegistry,
    rx: broadcast::Receiver<()>,
    service: Option<ServiceName>,
    last: u64,
    pending: VecDeque<Event>,
}

impl WatchState {
    fn fill(&mut self) {
        let state = self.registry.lock();
        if self.last == state.revision {
            return;
        }
        // Compacted away, or a revision this registry never reached (the watcher's history is
        // another one's): the whole current state.
        if self.last < state.compacted || self.last > state.revision {
            self.pending
                .push_back(Event::Reset(state.snapshot(self.service.as_ref())));
            self.last = state.revision;
            return;
        }
        let start = state.log.partition_point(|(rev, _)| *rev <= self.last);
        for (rev, change) in state.log.range(start..) {
            let revision = Revision(*rev);
            let event = match change {
                Change::Put(i) => {
                    if self.service.as_ref().is_some_and(|s| s != i.service()) {
                        continue;
                    }
                    Event::Put {
                        revision,
                        instance: i.clone(),
                    }
                }
                Change::Delete(s, id) => {
                    if self.service.as_ref().is_some_and(|w| w != s) {
                        continue;
                    }
                    Event::Delete {
                        revision,
                        service: s.clone(),
                        id: id.clone(),
                    }
                }
            };
            self.pending.push_back(event);
        }
        self.last = state.revision;
    }
}

impl Registry for MemoryRegistry {
    async fn register(&self, registration: Registration) -> Result<Revision, Error> {
        let now = self.shared.clock.now_ms();
        let rev = self.lock().put(registration, now, self.shared.retention);
        self.notify(rev);
        Ok(rev)
    }

    async fn register_all(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        let now = self.shared.clock.now_ms();
        let rev = {
            let mut state = self.lock();
            let mut rev = Revision(state.revision);
            for reg in registrations {
                rev = state.put(reg, now, self.shared.retention);
            }
            rev
        };
        self.notify(rev);
        Ok(rev)
    }

    async fn deregister(&self, service: &ServiceName, id: &InstanceId) -> Result<Revision, Error> {
        let rev = {
            let mut state = self.lock();
            state.record(service, id)?;
            state.remove(service, id, self.shared.retention)
        };
        self.notify(rev);
        Ok(rev)
    }

    async fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Revision>, Error> {
        let now = self.shared.clock.now_ms();
        let rev = {
            let mut state = self.lock();
            let record = state.record(service, id)?;
            let Some(ttl) = record.ttl_ms else {
                return Err(Error::NoLease {
                    service: service.clone(),
                    id: id.clone(),
                });
            };
            record.expires_at_ms = now + ttl;
            if record.critical_since_ms.take().is_none() {
                return Ok(None);
            }
            let instance = record.effective();
            state.next(Change::Put(instance), self.shared.retention)
        };
        self.notify(rev);
        Ok(Some(rev))
    }

    async fn set_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        health: Health,
    ) -> Result<Revision, Error> {
        self.set_health_with(service, id, HealthUpdate::new(health))
            .await
    }

    async fn set_health_with(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        update: HealthUpdate,
    ) -> Result<Revision, Error> {
        let rev = {
            let mut state = self.lock();
            let record = state.record(service, id)?;
            record.instance = record
                .instance
                .clone()
                .with_health(update.health())
                .with_last_check(update.into_last_check());
            let instance = record.effective();
            state.next(Change::Put(instance), self.shared.retention)
        };
        self.notify(rev);
        Ok(rev)
    }

    async fn snapshot(&self, service: &ServiceName) -> Result<Snapshot, Error> {
        Ok(self.lock().snapshot(Some(service)))
    }

    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        Ok(self.lock().services.keys().cloned().collect())
    }

    async fn revision(&self) -> Result<Revision, Error> {
        Ok(Revision(self.lock().revision))
    }

    fn watch(&self, service: &ServiceName, since: Revision) -> Watch {
        self.watch_scope(Some(service.clone()), since)
    }

    fn watch_all(&self, since: Revision) -> Watch {
        self.watch_scope(None, since)
    }

    async fn compact(&self, up_to: Revision) -> Result<(), Error> {
        let mut state = self.lock();
        let up_to = up_to.0.min(state.revision);
        while state.log.front().is_some_and(|(rev, _)| *rev <= up_to) {
            state.log.pop_front();
        }
        state.compacted = state.compacted.max(up_to);
        Ok(())
    }

    async fn reap(&self, config: &LeaseConfig) -> Result<ReapReport, Error> {
        let now = self.shared.clock.now_ms();
        let mut report = ReapReport::default();
        let last = {
            let mut state = self.lock();
            let (mut leased, mut lapsed) = (0, 0);
            let mut sweep = Sweep::default();
            for (service, instances) in &state.services {
                for (id, r) in instances {
                    if r.ttl_ms.is_none() {
                        continue;
                    }
                    leased += 1;
                    if r.expires_at_ms > now {
                        continue;
                    }
                    lapsed += 1;
                    match r.critical_since_ms {
                        None => sweep.lapsing.push((service.clone(), id.clone())),
                        Some(since) if config.is_overdue(since, now) => {
                            sweep.overdue.push((service.clone(), id.clone()))
                        }
                        Some(_) => {}
                    }
                }
            }
            config.preserve(lapsed, leased, &mut sweep, &mut report);
            let mut last = None;
            for (service, id) in sweep.lapsing {
                let record = state.record(&service, &id)?;
                record.critical_since_ms = Some(now);
                let instance = record.effective();
                last = Some(state.next(Change::Put(instance), self.shared.retention));
                report.expired.push((service, id));
            }
            for (service, id) in sweep.overdue {
                last = Some(state.remove(&service, &id, self.shared.retention));
                report.deregistered.push((service, id));
            }
            last
        };
        if let Some(rev) = last {
            self.notify(rev);
        }
        Ok(report)
    }

    fn clock(&self) -> &Clock {
        &self.shared.clock
    }
}
