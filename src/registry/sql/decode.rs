//! Reading instances back: snapshots, and decoding rows into instances, where any field that
//! does not decode becomes a [`CorruptRecord`] rather than an error for the whole read.

use std::str::FromStr;

use futures_util::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::{Executor, Row};

use super::SqlRegistry;
use crate::instance::{Check, Field, Health, Instance, LastCheck, Scheme, ServiceName};
use crate::registry::{CorruptRecord, Error, Revision, Snapshot};

impl SqlRegistry {
    /// The instances of `service` (or of all services) and the revision they are consistent
    /// at, read in one transaction.
    pub(super) async fn read_snapshot(
        &self,
        service: Option<&ServiceName>,
        op: &'static str,
    ) -> Result<Snapshot, Error> {
        let s = &self.shared.statements;
        let mut tx = self.begin(op).await?;
        if let Some(iso) = s.snapshot_isolation {
            (&mut *tx).execute(iso).await.map_err(self.err(op))?;
        }
        let state = sqlx::query(&s.state)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.err(op))?;
        let revision: i64 = state.try_get(0).map_err(self.err(op))?;
        let mut snapshot = Snapshot {
            revision: Revision::new(revision as u64),
            ..Snapshot::default()
        };
        // Rows are decoded as they arrive, while the database produces the next ones.
        let query = match service {
            Some(name) => sqlx::query(&s.snapshot_service).bind(name.as_str().to_owned()),
            None => sqlx::query(&s.snapshot_all),
        };
        {
            let mut rows = query.fetch(&mut *tx);
            let mut columns = None;
            while let Some(row) = rows.try_next().await.map_err(self.err(op))? {
                let columns = match &columns {
                    Some(c) => c,
                    None => columns.insert(Columns::of(&row).map_err(self.err(op))?),
                };
                let rev = row.try_get::<i64, _>(columns.revision).ok();
                match decode_instance(&row, columns, service, rev) {
                    Ok(i) => snapshot.instances.push(i),
                    Err(c) => {
                        tracing::warn!(record = %c, "registry: corrupt stored instance");
                        snapshot.corrupt.push(c);
                    }
                }
            }
        }
        tx.rollback().await.map_err(self.err(op))?;
        Ok(snapshot)
    }

    /// The services with at least one instance; a stored name that is not valid is logged
    /// and left out.
    pub(super) async fn read_services(&self) -> Result<Vec<ServiceName>, Error> {
        let op = "services";
        let rows = sqlx::query(&self.shared.statements.services)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(self.err(op))?;
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(self.err(op))?;
            match ServiceName::new(&name) {
                Ok(n) => names.push(n),
                Err(e) => tracing::warn!(error = %e, "registry: corrupt stored service name"),
            }
        }
        Ok(names)
    }

    /// The latest revision.
    pub(super) async fn read_revision(&self) -> Result<Revision, Error> {
        let row = sqlx::query(&self.shared.statements.state)
            .fetch_one(&self.shared.pool)
            .await
            .map_err(self.err("revision"))?;
        let rev: i64 = row.try_get(0).map_err(self.err("revision"))?;
        Ok(Revision::new(rev as u64))
    }
}

/// Where an instance's columns are in a result set: found by name once per result set, then
/// read by position in every row.
pub(super) struct Columns {
    /// Absent when the query was for one service.
    service: Option<usize>,
    id: usize,
    host: usize,
    port: usize,
    scheme: usize,
    version: usize,
    weight: usize,
    zone: usize,
    metadata: usize,
    health: usize,
    check: usize,
    check_output: usize,
    checked_at: usize,
    pub(super) revision: usize,
}

impl Columns {
    pub(super) fn of(row: &AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Column;
        let at = |name: &str| row.try_column(name).map(|c| c.ordinal());
        Ok(Columns {
            service: at("service").ok(),
            id: at("instance_id")?,
            host: at("host")?,
            port: at("port")?,
            scheme: at("scheme")?,
            version: at("version")?,
            weight: at("weight")?,
            zone: at("zone")?,
            metadata: at("metadata")?,
            health: at("health")?,
            check: at("health_check")?,
            check_output: at("check_output")?,
            checked_at: at("checked_at_ms")?,
            revision: at("revision")?,
        })
    }
}

/// Decodes an instance row (or an event row of kind `put`); any field that does not decode is
/// a [`CorruptRecord`] naming the service, the instance and the field.
pub(super) fn decode_instance(
    row: &AnyRow,
    columns: &Columns,
    service: Option<&ServiceName>,
    revision: Option<i64>,
) -> Result<Instance, CorruptRecord> {
    let service_text = || match (service, columns.service) {
        (Some(s), _) => s.to_string(),
        (None, Some(index)) => text_at(row, index),
        (None, None) => "<unknown>".to_owned(),
    };
    let corrupt = |field: &'static str, value: String, reason: String| {
        CorruptRecord::new(
            service_text(),
            text_at(row, columns.id),
            revision.map(|r| Revision::new(r as u64)),
            field,
            truncate(value),
            reason,
        )
    };
    // Borrowed from the row: the builder makes the only copy.
    let text = |field: &'static str, index: usize| -> Result<&str, CorruptRecord> {
        row.try_get::<&str, _>(index)
            .map_err(|e| corrupt(field, text_at(row, index), e.to_string()))
    };
    let int = |field: &'static str, index: usize| -> Result<i64, CorruptRecord> {
        row.try_get::<i64, _>(index)
            .map_err(|e| corrupt(field, text_at(row, index), e.to_string()))
    };
    let service = match (service, columns.service) {
        (Some(s), _) => s.as_str(),
        (None, Some(index)) => text("service", index)?,
        (None, None) => return Err(corrupt("service", "NULL".to_owned(), "missing".to_owned())),
    };
    let id = text("instance_id", columns.id)?;
    let host = text("host", columns.host)?;
    let port = int("port", columns.port)?;
    let scheme = text("scheme", columns.scheme)?;
    let scheme = Scheme::from_str(scheme)
        .map_err(|e| corrupt("scheme", scheme.to_owned(), e.reason().to_owned()))?;
    let version = text("version", columns.version)?;
    let weight = int("weight", columns.weight)?;
    let zone = row
        .try_get::<Option<&str>, _>(columns.zone)
        .map_err(|e| corrupt("zone", text_at(row, columns.zone), e.to_string()))?;
    let metadata_text = text("metadata", columns.metadata)?;
    let metadata = serde_json::from_str(metadata_text)
        .map_err(|e| corrupt("metadata", metadata_text.to_owned(), e.to_string()))?;
    let health = text("health", columns.health)?;
    let health = Health::from_str(health)
        .map_err(|e| corrupt("health", health.to_owned(), e.reason().to_owned()))?;
    let check = long_text(row, columns.check)
        .map_err(|e| corrupt("health_check", text_at(row, columns.check), e))?
        .map(|text| {
            serde_json::from_str::<Check>(&text)
                .map_err(|e| corrupt("health_check", text, e.to_string()))
        })
        .transpose()?;
    let last_check = decode_last_check(row, columns, &corrupt)?;
    let port = u32::try_from(port)
        .map_err(|_| corrupt("port", port.to_string(), "must be in 1..=65535".to_owned()))?;
    let weight = u32::try_from(weight).map_err(|_| {
        corrupt(
            "weight",
            weight.to_string(),
            "must not be negative".to_owned(),
        )
    })?;
    let mut builder = Instance::builder(service, id)
        .host(host)
        .port(port)
        .scheme(scheme)
        .version(version)
        .weight(weight)
        .metadata_map(metadata)
        .health(health);
    if let Some(zone) = zone {
        builder = builder.zone(zone);
    }
    if let Some(check) = check {
        builder = builder.check(check);
    }
    let built = builder.build().map_err(|e| {
        let field = match e.field() {
            Field::Service => "service",
            Field::Id => "instance_id",
            Field::Host => "host",
            Field::Port => "port",
            Field::Version => "version",
            Field::Weight => "weight",
            Field::Zone => "zone",
            Field::Metadata => "metadata",
            _ => "instance",
        };
        corrupt(field, e.value().to_owned(), e.reason().to_owned())
    })?;
    Ok(built.with_last_check(last_check))
}

/// The last check's output and time: both or neither.
fn decode_last_check(
    row: &AnyRow,
    columns: &Columns,
    corrupt: &impl Fn(&'static str, String, String) -> CorruptRecord,
) -> Result<Option<LastCheck>, CorruptRecord> {
    let output = long_text(row, columns.check_output)
        .map_err(|e| corrupt("check_output", text_at(row, columns.check_output), e))?;
    let at = row
        .try_get::<Option<i64>, _>(columns.checked_at)
        .map_err(|e| {
            corrupt(
                "checked_at_ms",
                text_at(row, columns.checked_at),
                e.to_string(),
            )
        })?;
    match (output, at) {
        (None, None) => Ok(None),
        (Some(output), Some(at)) => LastCheck::stored(output, at)
            .map(Some)
            .map_err(|e| corrupt("check_output", e.value().to_owned(), e.reason().to_owned())),
        (Some(output), None) => Err(corrupt(
            "checked_at_ms",
            "NULL".to_owned(),
            format!("missing while check_output is {}", truncate(output)),
        )),
        (None, Some(at)) => Err(corrupt(
            "check_output",
            "NULL".to_owned(),
            format!("missing while checked_at_ms is {at}"),
        )),
    }
}

/// A nullable `TEXT` column. MySQL's `TEXT` reaches sqlx's `Any` driver as a blob (the
/// protocol's type for both), so bytes are accepted too, if they are UTF-8.
fn long_text(row: &AnyRow, index: usize) -> Result<Option<String>, String> {
    match row.try_get::<Option<String>, _>(index) {
        Ok(text) => Ok(text),
        Err(text_err) => match row.try_get::<Option<Vec<u8>>, _>(index) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| format!("not UTF-8: {}", e.utf8_error())),
            Err(_) => Err(text_err.to_string()),
        },
    }
}

/// A column's value as text, for error reports.
fn text_at(row: &AnyRow, index: usize) -> String {
    match row.try_get::<Option<String>, _>(index) {
        Ok(Some(s)) => s,
        Ok(None) => "NULL".to_owned(),
        Err(_) => match row.try_get::<i64, _>(index) {
            Ok(n) => n.to_string(),
            Err(_) => match row.try_get::<Vec<u8>, _>(index) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => "<undecodable>".to_owned(),
            },
        },
    }
}

pub(super) fn text_of(row: &AnyRow, column: &str) -> String {
    match row.try_get::<Option<String>, _>(column) {
        Ok(Some(s)) => s,
        Ok(None) => "NULL".to_owned(),
        Err(_) => match row.try_get::<i64, _>(column) {
            Ok(n) => n.to_string(),
            Err(_) => "<undecodable>".to_owned(),
        },
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
