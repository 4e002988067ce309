//! The SQL each backend runs. Bound parameters only; `?` placeholders are rewritten to `$n`
//! for PostgreSQL.

use super::Backend;

/// The effective health: `critical` while the lease is lapsed.
const EFFECTIVE_HEALTH: &str = "CASE WHEN lease_expired = 1 THEN 'critical' ELSE health END";

/// The health-check columns, in the order `bind_instance` binds them: the spec
/// (JSON), and the last check's output and time.
const CHECK_COLUMNS: &str = "health_check, check_output, checked_at_ms";

/// The lease time in SQL, with one parameter: on SQLite the client's clock (one machine); on
/// PostgreSQL and MySQL the server's clock in epoch milliseconds (UTC, immune to the session's
/// time zone) plus an offset that only a test's manual clock makes non-zero. Every machine
/// sharing the database then measures leases with the same clock.
fn lease_now(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "?",
        Backend::Postgres => {
            "(CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp()) * 1000) AS BIGINT) + ?)"
        }
        Backend::MySql => {
            "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 + ?)"
        }
    }
}

#[derive(Debug)]
pub(super) struct Statements {
    pub(super) bump_returning: Option<String>,
    pub(super) lock_revision: Option<String>,
    pub(super) set_revision: Option<String>,
    pub(super) copy_events: String,
    pub(super) delete_event: String,
    pub(super) delete_instance: String,
    pub(super) heartbeat: String,
    pub(super) lease_state: String,
    pub(super) revive: String,
    pub(super) set_health: String,
    pub(super) state: String,
    pub(super) snapshot_service: String,
    pub(super) snapshot_all: String,
    pub(super) services: String,
    pub(super) events_service: String,
    pub(super) events_all: String,
    pub(super) compact_state: String,
    pub(super) compact_events: String,
    pub(super) lease_counts: String,
    pub(super) lapsing: String,
    pub(super) overdue: String,
    pub(super) expire: String,
    pub(super) remove_overdue: String,
    /// PostgreSQL: one statement that takes a revision, upserts, logs the event and notifies.
    pub(super) register_one: Option<String>,
    pub(super) snapshot_isolation: Option<&'static str>,
    pub(super) notify: Option<&'static str>,
    backend: Backend,
}

fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

impl Statements {
    pub(super) fn new(backend: Backend) -> Self {
        let p = |sql: &str| match backend {
            Backend::Postgres => dollar(sql),
            _ => sql.to_owned(),
        };
        let select_instance = format!(
            "SELECT service, instance_id, host, port, scheme, version, weight, zone, metadata, \
             {EFFECTIVE_HEALTH} AS health, {CHECK_COLUMNS}, revision FROM mesh_instances"
        );
        // The compaction mark rides along, read in the same statement (one snapshot).
        let select_event = format!(
            "SELECT revision, kind, service, instance_id, host, port, scheme, version, weight, \
             zone, metadata, health, {CHECK_COLUMNS}, \
             (SELECT compacted FROM mesh_state WHERE id = 1) AS compacted FROM mesh_events"
        );
        let mysql = backend == Backend::MySql;
        let now = lease_now(backend);
        Statements {
            bump_returning: (!mysql).then(|| {
                p("UPDATE mesh_state SET revision = revision + ? WHERE id = 1 RETURNING revision")
            }),
            lock_revision: mysql
                .then(|| "SELECT revision FROM mesh_state WHERE id = 1 FOR UPDATE".to_owned()),
            set_revision: mysql
                .then(|| "UPDATE mesh_state SET revision = ? WHERE id = 1".to_owned()),
            copy_events: p(&format!(
                "INSERT INTO mesh_events (revision, kind, service, instance_id, host, port, \
                 scheme, version, weight, zone, metadata, health, {CHECK_COLUMNS}) \
                 SELECT revision, 'put', service, instance_id, host, port, scheme, version, \
                 weight, zone, metadata, {EFFECTIVE_HEALTH}, {CHECK_COLUMNS} \
                 FROM mesh_instances WHERE revision > ? AND revision <= ?"
            )),
            delete_event: p(
                "INSERT INTO mesh_events (revision, kind, service, instance_id) \
                 VALUES (?, 'delete', ?, ?)",
            ),
            delete_instance: p("DELETE FROM mesh_instances WHERE service = ? AND instance_id = ?"),
            heartbeat: p(&format!(
                "UPDATE mesh_instances SET expires_at_ms = {now} + ttl_ms \
                 WHERE service = ? AND instance_id = ? AND ttl_ms IS NOT NULL \
                 AND lease_expired = 0"
            )),
            lease_state: p("SELECT ttl_ms, lease_expired FROM mesh_instances \
                 WHERE service = ? AND instance_id = ?"),
            revive: p(&format!(
                "UPDATE mesh_instances SET lease_expired = 0, critical_since_ms = NULL, \
                 expires_at_ms = {now} + ttl_ms, revision = ? \
                 WHERE service = ? AND instance_id = ? AND lease_expired = 1"
            )),
            set_health: p("UPDATE mesh_instances SET health = ?, check_output = ?, \
                 checked_at_ms = ?, revision = ? WHERE service = ? AND instance_id = ?"),
            state: "SELECT revision, compacted FROM mesh_state WHERE id = 1".to_owned(),
            // The service is the one asked for: not read back in every row.
            snapshot_service: p(&format!(
                "SELECT instance_id, host, port, scheme, version, weight, zone, metadata, \
                 {EFFECTIVE_HEALTH} AS health, {CHECK_COLUMNS}, revision FROM mesh_instances \
                 WHERE service = ? ORDER BY instance_id"
            )),
            snapshot_all: format!("{select_instance} ORDER BY service, instance_id"),
            services: "SELECT DISTINCT service FROM mesh_instances ORDER BY service".to_owned(),
            events_service: p(&format!(
                "{select_event} WHERE service = ? AND revision > ? ORDER BY revision LIMIT ?"
            )),
            events_all: p(&format!(
                "{select_event} WHERE revision > ? ORDER BY revision LIMIT ?"
            )),
            compact_state: p(
                "UPDATE mesh_state SET compacted = ? WHERE id = 1 AND compacted < ? \
                 AND revision >= ?",
            ),
            compact_events: p("DELETE FROM mesh_events WHERE revision <= ?"),
            // Self-preservation's window: all leases, and those lapsed right now.
            lease_counts: p(&format!(
                "SELECT COUNT(*), COUNT(CASE WHEN expires_at_ms <= {now} THEN 1 END) \
                 FROM mesh_instances WHERE ttl_ms IS NOT NULL"
            )),
            lapsing: p(&format!(
                "SELECT service, instance_id FROM mesh_instances WHERE ttl_ms IS NOT NULL \
                 AND lease_expired = 0 AND expires_at_ms <= {now} ORDER BY service, instance_id"
            )),
            // The grace period counts from when the instance turned critical.
            overdue: p(&format!(
                "SELECT service, instance_id FROM mesh_instances WHERE lease_expired = 1 \
                 AND critical_since_ms <= {now} - ? ORDER BY service, instance_id"
            )),
            expire: p(&format!(
                "UPDATE mesh_instances SET lease_expired = 1, critical_since_ms = {now}, \
                 revision = ? WHERE service = ? AND instance_id = ? AND ttl_ms IS NOT NULL \
                 AND lease_expired = 0 AND expires_at_ms <= {now}"
            )),
            remove_overdue: p(&format!(
                "DELETE FROM mesh_instances WHERE service = ? AND instance_id = ? \
                 AND lease_expired = 1 AND critical_since_ms <= {now} - ?"
            )),
            register_one: (backend == Backend::Postgres).then(|| {
                format!(
                    "WITH r AS (UPDATE mesh_state SET revision = revision + 1 WHERE id = 1 \
                     RETURNING revision), \
                     i AS (INSERT INTO mesh_instances (service, instance_id, host, port, scheme, \
                     version, weight, zone, metadata, health, {CHECK_COLUMNS}, ttl_ms, \
                     expires_at_ms, lease_expired, critical_since_ms, revision) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                     $15 + {now}, 0, NULL, r.revision \
                     FROM r {conflict} RETURNING service, instance_id, host, port, scheme, \
                     version, weight, zone, metadata, health, {CHECK_COLUMNS}, lease_expired, \
                     revision), \
                     e AS (INSERT INTO mesh_events (revision, kind, service, instance_id, host, \
                     port, scheme, version, weight, zone, metadata, health, {CHECK_COLUMNS}) \
                     SELECT revision, 'put', service, instance_id, host, port, scheme, version, \
                     weight, zone, metadata, {EFFECTIVE_HEALTH}, {CHECK_COLUMNS} FROM i) \
                     SELECT r.revision FROM r, pg_notify('tower_mesh', '') AS n",
                    conflict = Self::on_conflict(Backend::Postgres),
                    now = lease_now(Backend::Postgres).replace('?', "$16"),
                )
            }),
            snapshot_isolation: (backend == Backend::Postgres)
                .then_some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
            notify: (backend == Backend::Postgres).then_some("NOTIFY tower_mesh"),
            backend,
        }
    }

    /// A multi-row upsert of `rows` instances.
    pub(super) fn upsert(&self, rows: usize) -> String {
        let mut sql = String::from(
            "INSERT INTO mesh_instances (service, instance_id, host, port, scheme, version, \
             weight, zone, metadata, health, health_check, check_output, checked_at_ms, ttl_ms, \
             expires_at_ms, lease_expired, critical_since_ms, revision) VALUES ",
        );
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? + ");
            sql.push_str(lease_now(self.backend));
            sql.push_str(", 0, NULL, ?)");
        }
        sql.push(' ');
        sql.push_str(&Self::on_conflict(self.backend));
        if self.backend == Backend::Postgres {
            dollar(&sql)
        } else {
            sql
        }
    }

    fn on_conflict(backend: Backend) -> String {
        let cols = [
            "host",
            "port",
            "scheme",
            "version",
            "weight",
            "zone",
            "metadata",
            "health",
            "health_check",
            "check_output",
            "checked_at_ms",
            "ttl_ms",
            "expires_at_ms",
            "lease_expired",
            "critical_since_ms",
            "revision",
        ];
        match backend {
            Backend::MySql => {
                let sets: Vec<_> = cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
                format!("ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
            _ => {
                let sets: Vec<_> = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
                format!(
                    "ON CONFLICT (service, instance_id) DO UPDATE SET {}",
                    sets.join(", ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_for_postgres() {
        assert_eq!(dollar("a = ? AND b = ?"), "a = $1 AND b = $2");
        let s = Statements::new(Backend::Postgres);
        assert!(s.upsert(2).contains("$34") && !s.upsert(2).contains("$35"));
        assert!(s.register_one.as_deref().unwrap().contains("$16"));
        assert!(!s.upsert(2).contains('?'));
        let m = Statements::new(Backend::MySql);
        assert!(m.upsert(1).contains("VALUES(host)"));
        assert!(m.bump_returning.is_none() && m.lock_revision.is_some());
    }
}
