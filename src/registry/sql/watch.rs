//! Watching a SQL registry: read `revision > last`, woken by NOTIFY, a local write, or a timer.

use std::collections::VecDeque;
use std::time::Duration;

use sqlx::Row;

use crate::instance::{InstanceId, ServiceName};

use super::{decode_instance, text_of, Backend, Columns, SqlRegistry};
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
        st.registry.ensure_listener();
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((item, st));
            }
            if st.failing {
                tokio::time::sleep(st.backoff).await;
                st.backoff = (st.backoff * 2).min(st.registry.shared.backoff_max);
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
        // a snapshot.
        let compacted: i64 = match rows.first() {
            Some(row) => row.try_get("compacted").map_err(reg.err(op))?,
            None => {
                let state = sqlx::query(&s.state)
                    .fetch_one(pool)
                    .await
                    .map_err(reg.err(op))?;
                state.try_get(1).map_err(reg.err(op))?
            }
        };
        if compacted > self.last {
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

/// Holds one LISTEN connection and wakes the registry's watchers on every notification and on
/// every (re)connect, since notifications sent while disconnected are lost.
#[cfg(feature = "registry-postgres")]
pub(super) async fn listen(
    url: String,
    wake: tokio::sync::watch::Sender<u64>,
    redactor: super::Redactor,
    initial: Duration,
    max: Duration,
) {
    let bump = || wake.send_modify(|n| *n = n.wrapping_add(1));
    let mut backoff = initial;
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen("tower_mesh").await {
                Ok(()) => {
                    backoff = initial;
                    bump();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => bump(),
                            // The connection dropped; the next call reconnects. Resync.
                            Ok(None) => bump(),
                            Err(e) => {
                                tracing::warn!(error = %redactor.text(&e), "registry listener failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %redactor.text(&e), "registry listener: LISTEN failed")
                }
            },
            Err(e) => {
                tracing::warn!(error = %redactor.text(&e), "registry listener: cannot connect")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max);
    }
}
