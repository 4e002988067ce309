//! What the commands print: aligned tables for people, JSON documents for scripts.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::health::report::{HealthCounts, InstanceHealth, ServiceHealth};
use crate::instance::{Health, Instance};
use crate::registry::CorruptRecord;

/// A table: a header and rows of cells, printed with every column as wide as its widest cell,
/// columns two spaces apart, numbers right-aligned, no trailing spaces.
pub(super) struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names; names ending in `>` are right-aligned (the `>` is not
    /// printed).
    pub(super) fn new(header: &[&'static str]) -> Self {
        Table {
            right: header.iter().map(|h| h.ends_with('>')).collect(),
            header: header.iter().map(|h| h.trim_end_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub(super) fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Writes `value` as pretty JSON and a newline.
pub(super) fn json(out: &mut dyn Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Writes a `warning:` line per record that did not decode.
pub(super) fn corrupt_lines(out: &mut dyn Write, corrupt: &[CorruptRecord]) -> std::io::Result<()> {
    for record in corrupt {
        writeln!(out, "warning: {record}")?;
    }
    Ok(())
}

/// Corrupt records as their messages.
pub(super) fn messages(corrupt: &[CorruptRecord]) -> Vec<String> {
    corrupt.iter().map(ToString::to_string).collect()
}

/// `list --json`.
#[derive(Serialize)]
pub(super) struct ListJson {
    pub(super) services: Vec<ServiceCounts>,
}

/// One service in `list --json`.
#[derive(Serialize)]
pub(super) struct ServiceCounts {
    pub(super) service: String,
    pub(super) instances: usize,
    pub(super) passing: usize,
    pub(super) warning: usize,
    pub(super) critical: usize,
    pub(super) maintenance: usize,
    pub(super) corrupt: Vec<String>,
}

impl ServiceCounts {
    pub(super) fn new(report: &ServiceHealth) -> Self {
        let c: &HealthCounts = report.counts();
        ServiceCounts {
            service: report.service().to_string(),
            instances: c.total(),
            passing: c.passing,
            warning: c.warning,
            critical: c.critical,
            maintenance: c.maintenance,
            corrupt: messages(report.corrupt()),
        }
    }

    pub(super) fn cells(&self) -> Vec<String> {
        vec![
            self.service.clone(),
            self.instances.to_string(),
            self.passing.to_string(),
            self.warning.to_string(),
            self.critical.to_string(),
            self.maintenance.to_string(),
        ]
    }
}

/// `show --json`.
#[derive(Serialize)]
pub(super) struct ShowJson<'a> {
    pub(super) service: String,
    pub(super) revision: u64,
    pub(super) instances: &'a [Instance],
    pub(super) corrupt: Vec<String>,
}

/// The cells of an instance in `show`'s table.
pub(super) fn show_cells(i: &Instance) -> Vec<String> {
    vec![
        i.id().to_string(),
        i.authority(),
        i.scheme().to_string(),
        i.version().to_owned(),
        i.weight().to_string(),
        i.zone().unwrap_or("-").to_owned(),
        i.health().to_string(),
        metadata(i.metadata()),
    ]
}

fn metadata(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cells of an instance in `health`'s table.
pub(super) fn health_cells(i: &InstanceHealth) -> Vec<String> {
    let instance = i.instance();
    vec![
        i.id().to_string(),
        instance.authority(),
        i.health().to_string(),
        instance
            .check()
            .map_or("-", |c| c.kind().as_str())
            .to_owned(),
        i.checked_at_ms().map_or_else(|| "-".to_owned(), rfc3339),
        // One line per row: a multi-line output would break the table.
        i.output().map_or_else(
            || "-".to_owned(),
            |o| o.split_whitespace().collect::<Vec<_>>().join(" "),
        ),
    ]
}

/// Milliseconds since the Unix epoch as `2026-11-30T23:41:07Z`.
fn rfc3339(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return ms.to_string();
    };
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime_serde::re::humantime::format_rfc3339_seconds(t).to_string()
}

/// The summary line above `health`'s table.
pub(super) fn health_summary(report: &ServiceHealth) -> String {
    let c = report.counts();
    format!(
        "service {}: {} instance{}, {} passing, {} warning, {} critical, {} maintenance (revision {})",
        report.service(),
        c.total(),
        if c.total() == 1 { "" } else { "s" },
        c.passing,
        c.warning,
        c.critical,
        c.maintenance,
        report.revision(),
    )
}

/// `register --json`.
#[derive(Serialize)]
pub(super) struct RegisterJson {
    pub(super) service: String,
    pub(super) id: String,
    pub(super) address: String,
    pub(super) revision: u64,
    pub(super) replaced: bool,
    pub(super) ttl_ms: Option<u64>,
}

/// `deregister --json`.
#[derive(Serialize)]
pub(super) struct DeregisterJson {
    pub(super) service: String,
    pub(super) id: String,
    pub(super) revision: u64,
}

/// `health NAME ID --set ... --json`.
#[derive(Serialize)]
pub(super) struct SetHealthJson {
    pub(super) service: String,
    pub(super) id: String,
    pub(super) health: Health,
    pub(super) output: Option<String>,
    pub(super) revision: u64,
}
