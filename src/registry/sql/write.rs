//! Writes: every change reserves its revisions under the revision counter's row lock, writes,
//! logs itself in the event log, notifies (PostgreSQL) and commits, in one transaction.

use sqlx::{Executor, Row};

use super::SqlRegistry;
use crate::instance::{InstanceId, ServiceName};
use crate::registry::{Error, HealthUpdate, Registration, Revision};

pub(super) type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// How a one-row [`change`](SqlRegistry::change) is logged for watchers.
pub(super) enum Logged<'a> {
    /// The row as written at the change's revision (an upsert or update).
    Put,
    /// The deletion of this instance.
    Delete(&'a ServiceName, &'a InstanceId),
}

fn not_found(service: &ServiceName, id: &InstanceId) -> Error {
    Error::NotFound {
        service: service.clone(),
        id: id.clone(),
    }
}

impl SqlRegistry {
    pub(super) async fn begin(&self, op: &'static str) -> Result<Tx<'_>, Error> {
        self.shared.pool.begin().await.map_err(self.err(op))
    }

    /// One change to one instance, in a transaction of its own: reserves the next revision,
    /// runs the statement `statement` makes with it and, if that touched a row, logs the
    /// change, notifies and commits. `None` if it touched no row: the transaction is rolled
    /// back and the revision is not used. Every single-instance write and both reaper steps
    /// go through here.
    pub(super) async fn change<'q>(
        &'q self,
        op: &'static str,
        logged: Logged<'_>,
        statement: impl FnOnce(i64) -> AnyQuery<'q>,
    ) -> Result<Option<Revision>, Error> {
        let mut tx = self.begin(op).await?;
        let rev = self.bump(&mut tx, 1, op).await?;
        let done = statement(rev)
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        if done.rows_affected() == 0 {
            tx.rollback().await.map_err(self.err(op))?;
            return Ok(None);
        }
        match logged {
            Logged::Put => self.finish(tx, rev - 1, rev, op).await?,
            Logged::Delete(service, id) => {
                self.log_delete(&mut tx, rev, service, id, op).await?;
                self.commit(tx, op).await?;
            }
        }
        Ok(Some(Revision::new(rev as u64)))
    }

    /// Reserves `n` revisions inside `tx` (holding the counter's row lock until commit) and
    /// returns the last.
    async fn bump(&self, tx: &mut Tx<'_>, n: i64, op: &'static str) -> Result<i64, Error> {
        let s = &self.shared.statements;
        if let Some(sql) = &s.bump_returning {
            let row = sqlx::query(sql)
                .bind(n)
                .fetch_one(&mut **tx)
                .await
                .map_err(self.err(op))?;
            row.try_get::<i64, _>(0).map_err(self.err(op))
        } else {
            let lock = s.lock_revision.as_deref().unwrap_or_default();
            let row = sqlx::query(lock)
                .fetch_one(&mut **tx)
                .await
                .map_err(self.err(op))?;
            let rev = row.try_get::<i64, _>(0).map_err(self.err(op))? + n;
            sqlx::query(s.set_revision.as_deref().unwrap_or_default())
                .bind(rev)
                .execute(&mut **tx)
                .await
                .map_err(self.err(op))?;
            Ok(rev)
        }
    }

    /// Copies the instances written at revisions `(from, to]` into the event log, notifies
    /// and commits.
    async fn finish(
        &self,
        mut tx: Tx<'_>,
        from: i64,
        to: i64,
        op: &'static str,
    ) -> Result<(), Error> {
        let s = &self.shared.statements;
        sqlx::query(&s.copy_events)
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        self.commit(tx, op).await
    }

    async fn commit(&self, mut tx: Tx<'_>, op: &'static str) -> Result<(), Error> {
        if let Some(notify) = self.shared.statements.notify {
            (&mut *tx).execute(notify).await.map_err(self.err(op))?;
        }
        tx.commit().await.map_err(self.err(op))?;
        self.woke();
        Ok(())
    }

    /// Logs the deletion of an instance at `rev`.
    async fn log_delete(
        &self,
        tx: &mut Tx<'_>,
        rev: i64,
        service: &ServiceName,
        id: &InstanceId,
        op: &'static str,
    ) -> Result<(), Error> {
        sqlx::query(&self.shared.statements.delete_event)
            .bind(rev)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .execute(&mut **tx)
            .await
            .map_err(self.err(op))?;
        Ok(())
    }

    pub(super) async fn deregister_instance(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Revision, Error> {
        let delete = &self.shared.statements.delete_instance;
        self.change("deregister", Logged::Delete(service, id), |_| {
            sqlx::query(delete)
                .bind(service.as_str().to_owned())
                .bind(id.as_str().to_owned())
        })
        .await?
        .ok_or_else(|| not_found(service, id))
    }

    pub(super) async fn set_instance_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        update: HealthUpdate,
    ) -> Result<Revision, Error> {
        let set_health = &self.shared.statements.set_health;
        let health = update.health();
        let last = update.into_last_check();
        let at = last.as_ref().map(|l| l.checked_at_ms());
        let output = last.map(|l| l.output().to_owned());
        self.change("set_health", Logged::Put, |rev| {
            sqlx::query(set_health)
                .bind(health.as_str())
                .bind(output)
                .bind(at)
                .bind(rev)
                .bind(service.as_str().to_owned())
                .bind(id.as_str().to_owned())
        })
        .await?
        .ok_or_else(|| not_found(service, id))
    }

    pub(super) async fn renew(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Revision>, Error> {
        let op = "heartbeat";
        let s = &self.shared.statements;
        let now = self.lease_time();
        let renew = || {
            sqlx::query(&s.heartbeat)
                .bind(now)
                .bind(service.as_str().to_owned())
                .bind(id.as_str().to_owned())
                .execute(&self.shared.pool)
        };
        if renew().await.map_err(self.err(op))?.rows_affected() > 0 {
            return Ok(None);
        }
        // Not renewed: unknown, leaseless, lapsed, or (MySQL) unchanged.
        let row = sqlx::query(&s.lease_state)
            .bind(service.as_str().to_owned())
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(self.err(op))?
            .ok_or_else(|| not_found(service, id))?;
        let ttl: Option<i64> = row.try_get(0).map_err(self.err(op))?;
        let lapsed: i64 = row.try_get(1).map_err(self.err(op))?;
        if ttl.is_none() {
            return Err(Error::NoLease {
                service: service.clone(),
                id: id.clone(),
            });
        }
        if lapsed == 0 {
            return Ok(None);
        }
        let revived = self
            .change(op, Logged::Put, |rev| {
                sqlx::query(&s.revive)
                    .bind(now)
                    .bind(rev)
                    .bind(service.as_str().to_owned())
                    .bind(id.as_str().to_owned())
            })
            .await?;
        if revived.is_none() {
            // Someone else revived it meanwhile; renew as usual.
            renew().await.map_err(self.err(op))?;
        }
        Ok(revived)
    }

    pub(super) async fn upsert(&self, registrations: Vec<Registration>) -> Result<Revision, Error> {
        const CHUNK: usize = 256;
        if registrations.is_empty() {
            return self.read_revision().await;
        }
        let op = "register";
        let now = self.lease_time();
        if let (Some(sql), [reg]) = (&self.shared.statements.register_one, &registrations[..]) {
            // One round trip, one implicit transaction.
            let row = bind_instance(sqlx::query(sql), reg, now)
                .fetch_one(&self.shared.pool)
                .await
                .map_err(self.err(op))?;
            let rev: i64 = row.try_get(0).map_err(self.err(op))?;
            self.woke();
            return Ok(Revision::new(rev as u64));
        }
        let mut tx = self.begin(op).await?;
        let n = registrations.len() as i64;
        let last = self.bump(&mut tx, n, op).await?;
        let first = last - n + 1;
        let mut rev = first;
        for chunk in registrations.chunks(CHUNK) {
            let sql = self.shared.statements.upsert(chunk.len());
            let mut query = sqlx::query(&sql);
            for reg in chunk {
                query = bind_instance(query, reg, now).bind(rev);
                rev += 1;
            }
            query.execute(&mut *tx).await.map_err(self.err(op))?;
        }
        self.finish(tx, first - 1, last, op).await?;
        Ok(Revision::new(last as u64))
    }

    pub(super) async fn compact_history(&self, up_to: Revision) -> Result<(), Error> {
        let op = "compact";
        let s = &self.shared.statements;
        let up_to = up_to.get() as i64;
        let mut tx = self.begin(op).await?;
        let moved = sqlx::query(&s.compact_state)
            .bind(up_to)
            .bind(up_to)
            .bind(up_to)
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?;
        if moved.rows_affected() > 0 {
            sqlx::query(&s.compact_events)
                .bind(up_to)
                .execute(&mut *tx)
                .await
                .map_err(self.err(op))?;
        }
        tx.commit().await.map_err(self.err(op))?;
        Ok(())
    }
}

/// Binds the instance columns up to `expires_at_ms` (sixteen parameters: the lease deadline is
/// `ttl + lease time`, see [`SqlRegistry::lease_time`]).
fn bind_instance<'q>(query: AnyQuery<'q>, reg: &Registration, now: i64) -> AnyQuery<'q> {
    let i = &reg.instance;
    let metadata = serde_json::to_string(i.metadata()).unwrap_or_default();
    // A validated check always serializes: every field is a plain number or string.
    let check = i
        .check()
        .map(|c| serde_json::to_string(c).unwrap_or_default());
    let last = i.last_check();
    let ttl = reg.ttl_ms();
    query
        .bind(i.service().as_str().to_owned())
        .bind(i.id().as_str().to_owned())
        .bind(i.host().to_owned())
        .bind(i64::from(i.port()))
        .bind(i.scheme().as_str())
        .bind(i.version().to_owned())
        .bind(i64::from(i.weight()))
        .bind(i.zone().map(str::to_owned))
        .bind(metadata)
        .bind(i.health().as_str())
        .bind(check)
        .bind(last.map(|l| l.output().to_owned()))
        .bind(last.map(|l| l.checked_at_ms()))
        .bind(ttl)
        .bind(ttl)
        .bind(now)
}
