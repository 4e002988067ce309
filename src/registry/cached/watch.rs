//! Watching a [`Cached`] registry: each watcher reads the cache's log (or gets a reset from
//! its entry), never the inner registry's.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

use crate::instance::ServiceName;
use crate::registry::{Error, Event, Registry, Revision, Watch};

use super::state::LogItem;
use super::Cached;

/// A watch of `service` on `cache` from `since`.
pub(super) fn watch<R: Registry>(cache: Cached<R>, service: ServiceName, since: Revision) -> Watch {
    let (health_generation, epoch) = {
        let state = cache.lock();
        (state.health_generation, state.epoch)
    };
    let state = CacheWatch {
        cache: cache.clone(),
        service,
        last: since.get(),
        health_generation,
        epoch,
        rx: cache.shared.position.subscribe(),
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
