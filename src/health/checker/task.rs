//! The check loop of one instance: probe at the interval (plus jitter), count successes and
//! failures in a row, and write the health to the registry when the verdict changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::probe::{authority, probe_tcp, HttpProber, Outcome};
use crate::instance::{Check, CheckKind, Health, Instance, InstanceId, LastCheck};
use crate::registry::{HealthUpdate, Registry};

/// Counters shared by a checker's tasks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) checks: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) write_errors: AtomicU64,
}

/// One instance's check loop.
pub(crate) struct CheckTask<R> {
    pub(crate) registry: R,
    pub(crate) instance: Instance,
    pub(crate) check: Check,
    pub(crate) http: HttpProber,
    pub(crate) stats: Arc<Stats>,
    pub(crate) checker: InstanceId,
    /// The instance's health as registered (updated by the checker's watch).
    pub(crate) registered: tokio::sync::watch::Receiver<Health>,
}

/// The probe of one kind, made once per task.
// One per check task, made once and never moved: without `tonic` (no large gRPC variant)
// the HTTP prober is simply the largest.
#[allow(clippy::large_enum_variant)]
enum Prober {
    Http(HttpProber),
    Tcp,
    #[cfg(feature = "tonic")]
    Grpc(super::grpc::GrpcProber),
    #[cfg(not(feature = "tonic"))]
    GrpcUnavailable,
}

impl<R: Registry> CheckTask<R> {
    /// Runs until aborted (when the instance leaves, its check changes, or it moves to another
    /// checker).
    pub(crate) async fn run(self) {
        let CheckTask {
            registry,
            instance,
            check,
            http,
            stats,
            checker,
            mut registered,
        } = self;
        let port = check.port().unwrap_or(instance.port());
        let target = authority(instance.host(), port);
        let mut prober = match check.kind() {
            CheckKind::Http(_) => Prober::Http(http),
            CheckKind::Tcp => Prober::Tcp,
            #[cfg(feature = "tonic")]
            CheckKind::Grpc(grpc) => Prober::Grpc(super::grpc::GrpcProber::new(
                &target,
                grpc.service(),
                check.timeout(),
            )),
            #[cfg(not(feature = "tonic"))]
            CheckKind::Grpc(_) => Prober::GrpcUnavailable,
        };
        // The verdict starts at the registered health: a checker that takes an instance over
        // writes nothing until its own results change it.
        let mut verdict = instance.health();
        let (mut successes, mut failures) = (0u32, 0u32);
        // A `Warning` published by someone else (outlier detection reporting an ejection)
        // while this checker's verdict is `Passing`: the next successful check clears it.
        let mut clear_warning = false;
        // The first probe comes after a random part of the jitter, so a checker that starts
        // with many instances does not probe them all at once.
        let mut next = Instant::now() + jitter(check.jitter());
        loop {
            tokio::time::sleep_until(next).await;
            let started = Instant::now();
            let outcome = match tokio::time::timeout(check.timeout(), async {
                match (&mut prober, check.kind()) {
                    (Prober::Http(http), CheckKind::Http(spec)) => http.probe(&target, spec).await,
                    #[cfg(feature = "tonic")]
                    (Prober::Grpc(grpc), _) => grpc.probe().await,
                    #[cfg(not(feature = "tonic"))]
                    (Prober::GrpcUnavailable, _) => Outcome::fail(
                        "gRPC health checks need the `tonic` feature, which this checker lacks",
                    ),
                    _ => probe_tcp(instance.host(), port).await,
                }
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Outcome::timed_out(check.timeout()),
            };
            let elapsed = started.elapsed();
            stats.checks.fetch_add(1, Ordering::Relaxed);
            if !outcome.ok {
                stats.failures.fetch_add(1, Ordering::Relaxed);
            }
            record_metrics(check.kind().as_str(), outcome.ok, elapsed);
            tracing::trace!(
                service = %instance.service(),
                instance = %instance.id(),
                ok = outcome.ok,
                output = %outcome.output,
                "health check"
            );
            if outcome.ok {
                successes = successes.saturating_add(1);
                failures = 0;
            } else {
                failures = failures.saturating_add(1);
                successes = 0;
            }
            if registered.has_changed().unwrap_or(false) {
                let now = *registered.borrow_and_update();
                clear_warning = now == Health::Warning && verdict == Health::Passing;
            }
            let wanted = if outcome.ok && successes >= check.healthy_threshold() {
                Health::Passing
            } else if !outcome.ok && failures >= check.unhealthy_threshold() {
                Health::Critical
            } else {
                verdict
            };
            let clear = clear_warning && outcome.ok && wanted == Health::Passing;
            if wanted != verdict || clear {
                match write(&registry, &instance, wanted, &outcome).await {
                    Ok(()) => {
                        clear_warning = false;
                        stats.writes.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            checker = %checker,
                            service = %instance.service(),
                            instance = %instance.id(),
                            from = %verdict,
                            to = %wanted,
                            output = %outcome.output,
                            "health transition"
                        );
                        verdict = wanted;
                    }
                    Err(error) => {
                        // The verdict stays, so the next check tries the write again.
                        stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            service = %instance.service(),
                            instance = %instance.id(),
                            to = %wanted,
                            %error,
                            "could not write a health transition; retrying after the next check"
                        );
                    }
                }
            }
            next =
                started + check.interval_for(verdict == Health::Critical) + jitter(check.jitter());
        }
    }
}

/// Writes a transition with the check's output and time.
async fn write<R: Registry>(
    registry: &R,
    instance: &Instance,
    health: Health,
    outcome: &Outcome,
) -> Result<(), crate::registry::Error> {
    let last = LastCheck::new(outcome.output.clone(), registry.clock().now_ms());
    registry
        .set_health_with(
            instance.service(),
            instance.id(),
            HealthUpdate::new(health).with_last_check(last),
        )
        .await
        .map(drop)
}

/// A random wait in `0..=max`.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=ms))
}

#[cfg(feature = "metrics")]
fn record_metrics(kind: &'static str, ok: bool, elapsed: Duration) {
    metrics::counter!(
        "tower_mesh_health_checks_total",
        "kind" => kind,
        "result" => if ok { "pass" } else { "fail" }
    )
    .increment(1);
    metrics::histogram!("tower_mesh_health_check_duration_seconds", "kind" => kind)
        .record(elapsed.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
fn record_metrics(_kind: &'static str, _ok: bool, _elapsed: Duration) {}
