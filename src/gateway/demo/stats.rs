//! The demo's load generator, its counts, the live table and the summary.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::time::Instant;

use crate::mesh::{Client, Mesh};

/// What the load generator saw: per row (a backend, or `gateway` for answers no backend
/// gave), this second's latencies and errors, and each phase's totals.
pub(super) struct Stats {
    names: Vec<&'static str>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Row → latencies (µs) of successful requests this second.
    tick: HashMap<String, Vec<u64>>,
    tick_errors: HashMap<String, u64>,
    /// Phase → row → (requests, errors).
    phases: Vec<HashMap<String, (u64, u64)>>,
}

impl Stats {
    pub(super) fn new(names: &[&'static str], phases: usize) -> Self {
        Self {
            names: names.to_vec(),
            inner: Mutex::new(Inner {
                phases: vec![HashMap::new(); phases],
                ..Inner::default()
            }),
        }
    }

    fn record(&self, phase: usize, row: String, latency: Duration, ok: bool) {
        let mut inner = crate::sync::lock(&self.inner);
        let totals = inner.phases[phase].entry(row.clone()).or_default();
        totals.0 += 1;
        if ok {
            inner
                .tick
                .entry(row)
                .or_default()
                .push(latency.as_micros() as u64);
        } else {
            totals.1 += 1;
            *inner.tick_errors.entry(row).or_default() += 1;
        }
    }

    pub(super) fn print_tick(
        &self,
        out: &mut (dyn Write + Send),
        elapsed: Duration,
        health: &HashMap<String, String>,
        breakers: &HashMap<String, String>,
    ) -> std::io::Result<()> {
        let (tick, errors) = {
            let mut inner = crate::sync::lock(&self.inner);
            (
                std::mem::take(&mut inner.tick),
                std::mem::take(&mut inner.tick_errors),
            )
        };
        writeln!(
            out,
            "  t={:>3}s  {:<8} {:>6} {:>8} {:>8} {:>6}  {:<10} health",
            elapsed.as_secs(),
            "instance",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "breaker",
        )?;
        let mut rows: Vec<&str> = self.names.clone();
        if tick.contains_key("gateway") || errors.contains_key("gateway") {
            rows.push("gateway");
        }
        for name in rows {
            let mut lat = tick.get(name).cloned().unwrap_or_default();
            lat.sort_unstable();
            let errs = errors.get(name).copied().unwrap_or(0);
            let pct = |p: f64| -> String {
                if lat.is_empty() {
                    return "-".into();
                }
                let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
                format!("{:.1}", lat[i] as f64 / 1000.0)
            };
            writeln!(
                out,
                "          {:<8} {:>6} {:>8} {:>8} {:>6}  {:<10} {}",
                name,
                lat.len() as u64 + errs,
                pct(0.5),
                pct(0.99),
                errs,
                breakers.get(name).map_or("-", String::as_str),
                health.get(name).map_or("gone", String::as_str),
            )?;
        }
        Ok(())
    }

    pub(super) fn print_summary(
        &self,
        out: &mut (dyn Write + Send),
        phases: &[&str],
        observed: &Observed,
        b4_gone: bool,
    ) -> std::io::Result<()> {
        let inner = crate::sync::lock(&self.inner);
        writeln!(
            out,
            "\nsummary: share of requests per phase (errors in brackets)"
        )?;
        write!(out, "  {:<30}", "phase")?;
        for name in &self.names {
            write!(out, " {:>12}", name)?;
        }
        writeln!(out, " {:>12}", "no backend")?;
        let (mut total, mut failed) = (0u64, 0u64);
        let mut shares = vec![HashMap::new(); phases.len()];
        for (i, phase) in phases.iter().enumerate() {
            let counts = &inner.phases[i];
            let sum: u64 = counts.values().map(|c| c.0).sum();
            total += sum;
            failed += counts.values().map(|c| c.1).sum::<u64>();
            write!(out, "  {:<30}", format!("{}. {phase}", i + 1))?;
            for name in self.names.iter().copied().chain(["gateway"]) {
                let (n, e) = counts.get(name).copied().unwrap_or((0, 0));
                let share = if sum == 0 {
                    0.0
                } else {
                    100.0 * n as f64 / sum as f64
                };
                shares[i].insert(name, share);
                write!(out, " {:>12}", format!("{share:.0}% [{e}]"))?;
            }
            writeln!(out)?;
        }
        let share = |phase: usize, name: &str| shares[phase].get(name).copied().unwrap_or(0.0);
        writeln!(out, "\nwhat happened:")?;
        writeln!(
            out,
            "  b2 slowed: its share went from {:.0}% to {:.0}%",
            share(0, "b2"),
            share(1, "b2")
        )?;
        writeln!(
            out,
            "  b3 failing: endpoint breaker opened: {}; health check marked it critical: {}",
            yes(observed.b3_breaker_opened),
            yes(observed.b3_critical)
        )?;
        writeln!(
            out,
            "  b3 healed: back to passing: {}; share in the last phase {:.0}%",
            yes(observed.b3_passing_again),
            share(4, "b3")
        )?;
        writeln!(
            out,
            "  b4 stopped: deregistered: {}; share in the last phase {:.0}%",
            yes(b4_gone),
            share(4, "b4")
        )?;
        let rate = if total == 0 {
            0.0
        } else {
            100.0 * failed as f64 / total as f64
        };
        writeln!(
            out,
            "demo finished: {total} requests, {failed} errors ({rate:.2}%)"
        )?;
        Ok(())
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Events seen in the per-second samples.
#[derive(Debug, Default)]
pub(super) struct Observed {
    pub(super) b3_breaker_opened: bool,
    pub(super) b3_critical: bool,
    pub(super) b3_passing_again: bool,
}

impl Observed {
    pub(super) fn note(
        &mut self,
        phase: usize,
        health: &HashMap<String, String>,
        breakers: &HashMap<String, String>,
    ) {
        let b3_health = health.get("b3").map(String::as_str);
        if phase == 2 {
            self.b3_breaker_opened |= breakers.get("b3").is_some_and(|s| s != "closed");
            self.b3_critical |= b3_health == Some("critical");
        }
        if phase >= 3 && self.b3_critical {
            self.b3_passing_again |= b3_health == Some("passing");
        }
    }
}

/// Each instance's health in the registry now.
pub(super) async fn health(mesh: &Mesh) -> HashMap<String, String> {
    mesh.discover_service("demo")
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.id().to_string(), i.health().to_string()))
        .collect()
}

/// Each endpoint breaker's state now.
pub(super) fn breakers(client: &Client) -> HashMap<String, String> {
    client
        .endpoint_breakers()
        .into_iter()
        .map(|(id, h)| (id.to_string(), h.state().as_str().to_owned()))
        .collect()
}

/// One load-generating task: GETs through the gateway back to back until `done`.
pub(super) async fn generate(
    addr: SocketAddr,
    stats: Arc<Stats>,
    phase: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}/api/work")
        .parse()
        .expect("a valid URI");
    while !done.load(Ordering::SeqCst) {
        let started = Instant::now();
        let result = client.get(uri.clone()).await;
        let latency = started.elapsed();
        let phase = phase.load(Ordering::SeqCst);
        match result {
            Ok(rsp) => {
                let status = rsp.status();
                let body = rsp.into_body().collect().await.map(|b| b.to_bytes());
                let name = match &body {
                    Ok(b) if b.len() <= 4 && b.starts_with(b"b") => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    _ => "gateway".to_owned(),
                };
                stats.record(phase, name, latency, status.is_success() && body.is_ok());
            }
            Err(_) => {
                stats.record(phase, "gateway".into(), latency, false);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
