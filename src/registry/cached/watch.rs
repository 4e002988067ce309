//! Watching a [`Cached`] registry: each watcher, of one service or of all of them, reads the
//! cache's log (or gets a reset from what the cache holds), never the inner registry's.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

use crate::instance::ServiceName;
use crate::registry::{Error, Event, Registry, Revision, Watch};

use super::state::LogItem;
use super::Cached;

/// A watch of `service` on `cache` from `since`.
pub(super) fn watch<R: Registry>(cache: Cached<R>, service: ServiceName, since: Revision) -> Watch {
    stream(CacheWatch::new(cache, Some(service), since))
}

/// A watch of every service on `cache` from `since`. Unlike a watch of one service, it loads
/// nothing until it needs a reset; then the cache loads, and from then on keeps, every service.
pub(super) fn watch_all<R: Registry>(cache: Cached<R>, since: Revision) -> Watch {
    let mut state = CacheWatch::new(cache, None, since);
    state.loaded = true;
    stream(state)
}

fn stream<R: Registry>(state: CacheWatch<R>) -> Watch {
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
                let loaded = match &st.service {
                    Some(service) => st.cache.load(service).await.map(|snapshot| {
                        // For the reset that follows: an empty service is not kept cached.
                        st.loaded_snapshot = Some(snapshot);
                    }),
                    None => st.cache.load_all().await,
                };
                if let Err(error) = loaded {
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

struct CacheWatch<R> {
    cache: Cached<R>,
    /// `None` for a watch of every service.
    service: Option<ServiceName>,
    last: u64,
    health_generation: u64,
    epoch: u64,
    rx: watch::Receiver<u64>,
    pending: VecDeque<Result<Event, Error>>,
    load_failed: bool,
    loaded: bool,
    /// The snapshot of the load just made, for a reset when the cache did not keep the
    /// service (it was empty); used by the next `fill` only.
    loaded_snapshot: Option<crate::registry::Snapshot>,
}

impl<R: Registry> CacheWatch<R> {
    fn new(cache: Cached<R>, service: Option<ServiceName>, since: Revision) -> Self {
        let (health_generation, epoch) = {
            let state = cache.lock();
            (state.health_generation, state.epoch)
        };
        let rx = cache.shared.position.subscribe();
        CacheWatch {
            cache,
            service,
            last: since.get(),
            health_generation,
            epoch,
            rx,
            pending: VecDeque::new(),
            load_failed: false,
            loaded: false,
            loaded_snapshot: None,
        }
    }

    /// Moves what is new into `pending`; `false` if the service (or, watching every service,
    /// every service) must be loaded first.
    fn fill(&mut self) -> bool {
        let state = self.cache.lock();
        let loaded = self.loaded_snapshot.take();
        // Ahead of a cache that went back to an earlier revision: that history is gone.
        let went_back = state.epoch != self.epoch && self.last > state.position;
        if went_back || (self.last < state.position && self.last < state.log_floor) {
            let snapshot = match &self.service {
                Some(service) => match (state.services.get(service), loaded) {
                    (Some(entry), _) => entry.snapshot(state.position, state.stale),
                    (None, Some(snapshot)) => snapshot,
                    (None, None) => return false,
                },
                None if !state.complete => return false,
                // A service was loaded ahead of the cache's watch: the reset (and any
                // `Progress`) waits for the watch to get there.
                None => match state.snapshot_all() {
                    Some(snapshot) => snapshot,
                    None => return true,
                },
            };
            self.last = snapshot.revision.get();
            self.pending.push_back(Ok(Event::Reset(snapshot)));
        } else if self.last < state.position {
            let start = state.log.partition_point(|(rev, _)| *rev <= self.last);
            let service = self.service.as_ref();
            for (_, item) in state.log.range(start..) {
                match item {
                    LogItem::Event(e) if service.is_none_or(|s| e.service() == Some(s)) => {
                        self.pending.push_back(Ok(e.clone()))
                    }
                    LogItem::Corrupt(c) if service.is_none_or(|s| c.service() == s.as_str()) => {
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
