//! The cache's one watch, kept running: a task that applies the inner registry's
//! `watch_all`, and a supervisor that restarts it when it stops.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;

use crate::registry::error::{DatabaseError, DatabaseErrorKind};
use crate::registry::reaper::AbortOnDrop;
use crate::registry::{Error, Event, Registry, Revision, Watch};

use super::Shared;

/// First pause before restarting a watch task that stopped, doubling up to [`RESTART_MAX`].
const RESTART_INITIAL: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(10);

/// Keeps the cache's one watch running: runs it on a task of its own and, if that task stops
/// (the inner watch ended, or it panicked), reports it through the cache (stale, with the
/// reason as [`last_error`](super::Cached::last_error), and as an `Err` item to watchers), then
/// restarts it from the last revision applied, with backoff. Stops when the cache is dropped.
pub(super) async fn supervise<R: Registry>(shared: Weak<Shared<R>>) {
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
        // Aborted with the supervisor, so that dropping the cache stops its watch task too.
        let reason = match task.join().await {
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
                DatabaseErrorKind::Other,
                "watch",
                format!("{reason}; restarting it"),
            ))));
        }
        // Restart once the registry answers; until then, stay stale with its error.
        loop {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(RESTART_MAX);
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

async fn run_watch<R>(shared: Weak<Shared<R>>, mut watch: Watch) -> Stopped {
    while let Some(item) = watch.next().await {
        let Some(shared) = shared.upgrade() else {
            return Stopped::CacheDropped;
        };
        shared.apply(item);
    }
    Stopped::Ended
}
