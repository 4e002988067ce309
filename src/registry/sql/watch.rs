//! Watching a SQL registry: read `revision > last`, woken by NOTIFY, a local write, or a timer.

use std::collections::VecDeque;
use std::time::Duration;

use sqlx::Row;

use crate::instance::{InstanceId, ServiceName};

use super::decode::{decode_instance, text_of, Columns};
use super::{Backend, SqlRegistry};
use crate::registry::{CorruptRecord, Error, Event, Revision, Watch};

struct State {
    registry: SqlRegistry,
    service: Option<ServiceName>,
    last: i64,
    rx: tokio::sync::watch::Receiver<u64>,
    pending: VecDeque<Result<Event, Error>>,
    failing: bool,
    backoff: Duration,
    /// The last poll returned a full batch: poll again without waiting.
    more: bool,
}

pub(super) fn watch(registry: SqlRegistry, service: Option<ServiceName>, since: Revision) -> Watch {
    let rx = registry.shared.wake.subscribe();
    let backoff = registry.shared.backoff_initial;
    let state = State {
        registry,
        service,
        last: since.get() as i64,
        rx,
        pending: VecDeque::new(),
        failing: false,
        backoff,
        more: true,
    };
    Watch::new(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((item, st));
            }
            // Before every wait: the listener is what ends it early.
            st.registry.ensure_listener();
            if st.failing {
                tokio::time::sleep(st.backoff).await;
                st.backoff = st
                    .backoff
                    .saturating_mul(2)
                    .min(st.registry.shared.backoff_max);
            } else if !st.more {
                let interval = match st.registry.shared.backend {
                    Backend::Postgres => st.registry.shared.fallback_poll,
                    _ => st.registry.shared.poll_interval,
                };
                tokio::select! {
                    _ = st.rx.changed() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            st.rx.borrow_and_update();
            match st.poll().await {
                Ok(()) => {
                    if st.failing {
                        st.failing = false;
                        st.backoff = st.registry.shared.backoff_initial;
                        tracing::info!(revision = st.last, "registry watch recovered");
                        st.pending.push_back(Ok(Event::Progress {
                            revision: Revision::new(st.last as u64),
                        }));
                    }
                }
                Err(error) => {
                    if !st.failing {
                        tracing::warn!(%error, revision = st.last, "registry watch failed; retrying with backoff");
                    }
                    st.failing = true;
                    return Some((Err(error), st));
                }
            }
        }
    }))
}

impl State {
    async fn poll(&mut self) -> Result<(), Error> {
        let reg = &self.registry;
        let s = &reg.shared.statements;
        let pool = &reg.shared.pool;
        let op = "watch";
        let batch = i64::from(reg.shared.watch_batch);
        let rows = match &self.service {
            Some(name) => {
                sqlx::query(&s.events_service)
                    .bind(name.as_str().to_owned())
                    .bind(self.last)
                    .bind(batch)
                    .fetch_all(pool)
                    .await
            }
            None => {
                sqlx::query(&s.events_all)
                    .bind(self.last)
                    .bind(batch)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err(reg.err(op))?;
        // The compaction mark, from the same snapshot as the events (or, with no events, read
        // after them): if it passed `last`, events we needed may be gone, so start over from
        // a snapshot. With no events, the revision is read too: below `last`, the database
        // went backwards (restored from a backup, replaced), and the history the watcher knows
        // is not this one, so it starts over from a snapshot as well.
        let (compacted, current): (i64, Option<i64>) = match rows.first() {
            Some(row) => (row.try_get("compacted").map_err(reg.err(op))?, None),
            None => {
                let state = sqlx::query(&s.state)
                    .fetch_one(pool)
                    .await
                    .map_err(reg.err(op))?;
                let revision: i64 = state.try_get(0).map_err(reg.err(op))?;
                (state.try_get(1).map_err(reg.err(op))?, Some(revision))
            }
        };
        let behind = current.is_some_and(|revision| revision < self.last);
        if behind {
            tracing::warn!(
                watcher = self.last,
                database = current,
                "registry revision went backwards (database restored or replaced?); \
                 resetting the watcher to the database's state"
            );
        }
        if compacted > self.last || behind {
            let snapshot = reg.read_snapshot(self.service.as_ref(), op).await?;
            self.last = snapshot.revision.get() as i64;
            self.pending.push_back(Ok(Event::Reset(snapshot)));
            self.more = true;
            return Ok(());
        }
        self.more = rows.len() as i64 >= batch;
        let columns = match rows.first() {
            Some(row) => Columns::of(row).map_err(reg.err(op))?,
            None => return Ok(()),
        };
        for row in &rows {
            let revision: i64 = row.try_get(columns.revision).map_err(reg.err(op))?;
            self.last = revision;
            self.pending
                .push_back(decode_event(row, &columns, revision));
        }
        Ok(())
    }
}

fn decode_event(row: &sqlx::any::AnyRow, columns: &Columns, revision: i64) -> Result<Event, Error> {
    let revision_t = Revision::new(revision as u64);
    let kind = text_of(row, "kind");
    let corrupt = |field: &'static str, value: String, reason: String| {
        let record = CorruptRecord::new(
            text_of(row, "service"),
            text_of(row, "instance_id"),
            Some(revision_t),
            field,
            value,
            reason,
        );
        tracing::warn!(%record, "registry watch: corrupt stored event");
        Err(Error::Corrupt(record))
    };
    match kind.as_str() {
        "put" => match decode_instance(row, columns, None, Some(revision)) {
            Ok(instance) => Ok(Event::Put {
                revision: revision_t,
                instance,
            }),
            Err(record) => {
                tracing::warn!(%record, "registry watch: corrupt stored event");
                Err(Error::Corrupt(record))
            }
        },
        "delete" => {
            let service = text_of(row, "service");
            let id = text_of(row, "instance_id");
            match (ServiceName::new(&service), InstanceId::new(&id)) {
                (Ok(service), Ok(id)) => Ok(Event::Delete {
                    revision: revision_t,
                    service,
                    id,
                }),
                (Err(e), _) => corrupt("service", service, e.reason().to_owned()),
                (_, Err(e)) => corrupt("instance_id", id, e.reason().to_owned()),
            }
        }
        other => corrupt("kind", other.to_owned(), "must be put or delete".to_owned()),
    }
}

/// Holds one LISTEN connection and wakes the registry's watchers on every notification, and
/// after every LISTEN (the first and each one after a reconnection): notifications sent while
/// no connection was listening are lost, so every watcher re-reads `revision > last` as soon
/// as the new LISTEN is in place, rather than at its fallback poll.
///
/// Reconnection is done here, not inside sqlx's `PgListener` (whose eager reconnect would
/// re-LISTEN out of our sight), so that the re-read after each LISTEN is this function's
/// invariant rather than a library default's.
#[cfg(feature = "registry-postgres")]
pub(super) async fn listen(
    url: String,
    wake: tokio::sync::watch::Sender<u64>,
    redactor: super::redact::Redactor,
    initial: Duration,
    max: Duration,
) {
    /// Wakes every watcher when the listener ends, however it ends (a panic, or its runtime
    /// shutting down), so that they re-read and start a new one.
    struct WakeOnDrop<'a>(&'a tokio::sync::watch::Sender<u64>);
    impl Drop for WakeOnDrop<'_> {
        fn drop(&mut self) {
            self.0.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
    let _wake_on_drop = WakeOnDrop(&wake);
    let bump = || wake.send_modify(|n| *n = n.wrapping_add(1));
    let mut backoff = initial;
    loop {
        match listen_once(&url).await {
            Ok(mut listener) => {
                let listening_since = tokio::time::Instant::now();
                bump();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => bump(),
                        Ok(None) => {
                            tracing::info!("registry listener: connection lost; listening again");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %redactor.text(&e), "registry listener failed; reconnecting");
                            break;
                        }
                    }
                }
                // A connection that held up resets the backoff; one dropped right after its
                // LISTEN does not, so a server that keeps closing it is not hammered.
                if listening_since.elapsed() >= max {
                    backoff = initial;
                }
            }
            Err(e) => {
                tracing::warn!(error = %redactor.text(&e), "registry listener: cannot listen")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(max);
    }
}

/// A new connection that listens on the registry's channel.
#[cfg(feature = "registry-postgres")]
async fn listen_once(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.eager_reconnect(false);
    listener.listen("tower_mesh").await?;
    Ok(listener)
}
