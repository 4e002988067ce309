//! Lease expiry on SQL: one sweep finds the lapsing and the overdue instances, lets
//! self-preservation hold them back, then expires or removes each in a transaction of its own
//! that re-checks it, so several processes can reap one database and each lease expires once.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::write::Logged;
use super::SqlRegistry;
use crate::instance::{InstanceId, ServiceName};
use crate::registry::lease::Sweep;
use crate::registry::{Error, LeaseConfig, ReapReport};

impl SqlRegistry {
    pub(super) async fn sweep(&self, config: &LeaseConfig) -> Result<ReapReport, Error> {
        let op = "reap";
        let s = &self.shared.statements;
        let now = self.lease_time();
        let grace = config.grace_ms();
        let pool = &self.shared.pool;
        let counts = sqlx::query(&s.lease_counts)
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(self.err(op))?;
        let leased: i64 = counts.try_get(0).map_err(self.err(op))?;
        let lapsed: i64 = counts.try_get(1).map_err(self.err(op))?;
        let mut sweep = Sweep {
            lapsing: keys(
                sqlx::query(&s.lapsing)
                    .bind(now)
                    .fetch_all(pool)
                    .await
                    .map_err(self.err(op))?,
            ),
            // Turned critical at least a grace period ago.
            overdue: keys(
                sqlx::query(&s.overdue)
                    .bind(now)
                    .bind(grace)
                    .fetch_all(pool)
                    .await
                    .map_err(self.err(op))?,
            ),
        };
        let mut report = ReapReport::default();
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        config.preserve(count(lapsed), count(leased), &mut sweep, &mut report);
        // Each statement re-checks its condition: another reaper (or a heartbeat) may have
        // got there first, and then the instance is left alone.
        for (service, id) in sweep.lapsing {
            let expired = self.change(op, Logged::Put, |rev| {
                sqlx::query(&s.expire)
                    .bind(now)
                    .bind(rev)
                    .bind(service.as_str().to_owned())
                    .bind(id.as_str().to_owned())
                    .bind(now)
            });
            if expired.await?.is_some() {
                report.expired.push((service, id));
            }
        }
        for (service, id) in sweep.overdue {
            let removed = self.change(op, Logged::Delete(&service, &id), |_| {
                sqlx::query(&s.remove_overdue)
                    .bind(service.as_str().to_owned())
                    .bind(id.as_str().to_owned())
                    .bind(now)
                    .bind(grace)
            });
            if removed.await?.is_some() {
                report.deregistered.push((service, id));
            }
        }
        Ok(report)
    }
}

/// The instance keys of `(service, instance_id)` rows; a key that is not valid is logged and
/// left alone.
fn keys(rows: Vec<AnyRow>) -> Vec<(ServiceName, InstanceId)> {
    rows.iter()
        .filter_map(|r| {
            let service = r.try_get::<String, _>(0).ok()?;
            let id = r.try_get::<String, _>(1).ok()?;
            match (ServiceName::new(&service), InstanceId::new(&id)) {
                (Ok(s), Ok(i)) => Some((s, i)),
                _ => {
                    tracing::warn!(
                        service,
                        instance = id,
                        "reaper: corrupt stored instance key; left alone"
                    );
                    None
                }
            }
        })
        .collect()
}
