//! Circuit breaker benchmarks against failsafe 1.3 and tower-resilience's circuit breaker,
//! all configured with the same policy: open after 5 consecutive failures, stay open 30 s.
//!
//! Run: `cargo bench --bench breaker --all-features -- --warm-up-time 1 --measurement-time 3`
//! (see `benches/README.md` for the measured ratios). After criterion's groups the binary
//! prints a `ratio ...` line per figure from alternating bursts (see [`report`]);
//! `BREAKER_REPORT=only` prints only those.

use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{service_fn, BoxError, Service, ServiceExt};
use tower_layer::Layer;
use tower_mesh::breaker::{CircuitBreakerLayer, EndpointBreakerLayer};

const FAILURES: u32 = 5;
const OPEN: Duration = Duration::from_secs(30);

/// The inner service: answers at once, `Ok` for `true` and `Err` for `false`. A plain type
/// (not a function pointer) so that, as with failsafe, which wraps a `ready` future built in
/// place, the compiler sees the future being made.
#[derive(Clone, Copy, Debug)]
struct Inner;

impl Service<bool> for Inner {
    type Response = ();
    type Error = &'static str;
    type Future = Ready<Result<(), &'static str>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, ok: bool) -> Self::Future {
        ready(if ok { Ok(()) } else { Err("down") })
    }
}

fn inner() -> Inner {
    Inner
}

/// Polls a service for readiness, calls it, and polls the response, spinning on `Pending`
/// (only tower-resilience, whose breaker sits behind an async mutex, can be pending here, and
/// only when two threads contend).
#[inline]
fn drive<S: Service<bool>>(svc: &mut S, ok: bool) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(_)) => panic!("readiness error"),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
    let mut fut = pin!(svc.call(ok));
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => return r.is_ok(),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
}

#[inline]
fn drive_failsafe<C: failsafe::futures::CircuitBreaker>(cb: &C, ok: bool) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(cb.call(ready(if ok { Ok(()) } else { Err("down") })));
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => return r.is_ok(),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
}

fn ours() -> tower_mesh::breaker::CircuitBreaker<Inner> {
    let builder = CircuitBreakerLayer::builder()
        .consecutive_failures(FAILURES)
        .open_duration(OPEN)
        .backoff_multiplier(1.0);
    // failsafe keeps no metrics either (the handle's counters are kept).
    #[cfg(feature = "metrics")]
    let builder = builder.metrics(false);
    builder.build().unwrap().layer(inner())
}

fn failsafe_cb() -> impl failsafe::futures::CircuitBreaker + Clone + Send + 'static {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            FAILURES,
            failsafe::backoff::constant(OPEN),
        ))
        .build()
}

type Resilience = tower_resilience::circuitbreaker::CircuitBreaker<
    Inner,
    tower_resilience::circuitbreaker::DefaultClassifier,
>;

fn resilience() -> Resilience {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .consecutive_failures(FAILURES as usize)
        .wait_duration_in_open(OPEN)
        .build()
        .unwrap()
        .layer_fn(inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// Only tower-resilience needs a tokio runtime context. tower-mesh's open breaker reads
// `tokio::time::Instant::now` on every rejection, as failsafe reads `std::time::Instant::now`:
// with tokio's `test-util` feature (on in benches through dev-dependencies) that is a mocked,
// mutex-guarded clock inside a runtime once any runtime of the process has paused its clock,
// which production builds do not have. So the criterion groups run before the paused-clock
// error-rate run (`main`), and `now` reads the system clock as in production.

fn closed(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("closed_call");
    let mut bare = inner();
    g.bench_function("bare_inner", |b| {
        b.iter(|| drive(&mut bare, black_box(true)))
    });
    let mut svc = ours();
    g.bench_function("tower_mesh", |b| {
        b.iter(|| drive(&mut svc, black_box(true)))
    });
    let cb = failsafe_cb();
    g.bench_function("failsafe", |b| {
        b.iter(|| drive_failsafe(&cb, black_box(true)))
    });
    let mut tr = resilience();
    g.bench_function("tower_resilience", |b| {
        let _guard = rt.enter();
        b.iter(|| drive(&mut tr, black_box(true)))
    });
    g.finish();
}

fn open(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("open_reject");
    let mut svc = ours();
    let cb = failsafe_cb();
    let mut tr = resilience();
    for _ in 0..FAILURES {
        drive(&mut svc, false);
        drive_failsafe(&cb, false);
        drive(&mut tr, false);
    }
    assert!(!drive(&mut svc, true), "tower-mesh breaker is open");
    assert!(!drive_failsafe(&cb, true), "failsafe breaker is open");
    assert!(!drive(&mut tr, true), "tower-resilience breaker is open");
    g.bench_function("tower_mesh", |b| {
        b.iter(|| drive(&mut svc, black_box(true)))
    });
    g.bench_function("failsafe", |b| {
        b.iter(|| drive_failsafe(&cb, black_box(true)))
    });
    g.bench_function("tower_resilience", |b| {
        b.iter(|| drive(&mut tr, black_box(true)))
    });
    g.finish();
}

/// Two threads hammering one breaker; reports the time for each thread to make `iters` calls:
/// from the first thread's start to the last thread's end, each read by the threads
/// themselves (a main thread descheduled after the barrier must not shorten it).
fn two_threads<T, F>(iters: u64, enter: bool, make: impl Fn() -> T, call: F) -> Duration
where
    T: Send + 'static,
    F: Fn(&mut T) -> bool + Send + Sync + Copy + 'static,
{
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let mut t = make();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let rt = runtime();
                let _guard = enter.then(|| rt.enter());
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(call(&mut t));
                }
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end - start
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_two_threads");
    let svc = ours();
    g.bench_function("tower_mesh", |b| {
        b.iter_custom(|iters| two_threads(iters, false, || svc.clone(), |s| drive(s, true)))
    });
    let cb = failsafe_cb();
    g.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, false, || cb.clone(), |cb| drive_failsafe(cb, true))
        })
    });
    let tr = resilience();
    g.bench_function("tower_resilience", |b| {
        b.iter_custom(|iters| two_threads(iters, true, || tr.clone(), |s| drive(s, true)))
    });
    g.finish();
}

/// One of ten backends always fails; a p2c balancer sends `REQUESTS` requests, one per
/// simulated millisecond (paused tokio time), with and without endpoint breakers (open 1 s,
/// doubling up to 30 s). Returns the client-visible error rates.
fn error_rates() -> (f64, f64) {
    const BACKENDS: usize = 10;
    const REQUESTS: usize = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let backend = |i: usize| {
        service_fn(move |_: ()| {
            ready(if i == 0 {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            })
        })
    };
    rt.block_on(async {
        let plain: Vec<_> = (0..BACKENDS)
            .map(|i| PendingRequests::new(backend(i), CompleteOnResponse::default()))
            .collect();
        let mut balance = Balance::new(ServiceList::new(plain));
        let mut errors_without = 0;
        for _ in 0..REQUESTS {
            if balance.ready().await.unwrap().call(()).await.is_err() {
                errors_without += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }

        let layer = EndpointBreakerLayer::builder()
            .consecutive_failures(FAILURES)
            .open_duration(Duration::from_secs(1))
            .max_open_duration(OPEN)
            .build_endpoint()
            .unwrap();
        let guarded: Vec<_> = (0..BACKENDS)
            .map(|i| PendingRequests::new(layer.layer(backend(i)), CompleteOnResponse::default()))
            .collect();
        let mut balance = Balance::new(ServiceList::new(guarded));
        let mut errors_with = 0;
        for _ in 0..REQUESTS {
            if balance.ready().await.unwrap().call(()).await.is_err() {
                errors_with += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        (
            errors_without as f64 / REQUESTS as f64,
            errors_with as f64 / REQUESTS as f64,
        )
    })
}

criterion_group!(benches, closed, open, contended);

/// Bursts per benchmark in the ratio report, and calls per burst.
const BURSTS: usize = 20;
const CALLS: u64 = 200_000;

/// Nanoseconds per call of `calls` calls of `f`.
fn per_call(calls: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

/// The ratio report: tower-mesh and failsafe timed in `BURSTS` alternating bursts of `CALLS`
/// calls each, keeping each one's fastest burst. On a shared machine other processes only
/// ever add time, so the fastest bursts compare the two with the least interference; the
/// alternation gives both the same conditions.
fn report() {
    let line = |name: &str, ours: f64, theirs: f64| {
        println!(
            "ratio {name} tower_mesh/failsafe {:.3} ({ours:.2} ns vs {theirs:.2} ns)",
            ours / theirs
        )
    };

    let (mut bare, mut svc, cb) = (inner(), ours(), failsafe_cb());
    let mut best = [f64::MAX; 3];
    for _ in 0..BURSTS {
        best[0] = best[0].min(per_call(CALLS, || {
            black_box(drive(&mut bare, black_box(true)));
        }));
        best[1] = best[1].min(per_call(CALLS, || {
            black_box(drive(&mut svc, black_box(true)));
        }));
        best[2] = best[2].min(per_call(CALLS, || {
            black_box(drive_failsafe(&cb, black_box(true)));
        }));
    }
    println!("report bare_inner {:.2} ns", best[0]);
    line("closed_call", best[1], best[2]);

    let rt = runtime();
    let _guard = rt.enter();
    let (mut svc, cb) = (ours(), failsafe_cb());
    for _ in 0..FAILURES {
        drive(&mut svc, false);
        drive_failsafe(&cb, false);
    }
    assert!(!drive(&mut svc, true) && !drive_failsafe(&cb, true), "open");
    let mut rejections = |name: &str| {
        let mut best = [f64::MAX; 2];
        for _ in 0..BURSTS {
            best[0] = best[0].min(per_call(CALLS, || {
                black_box(drive(&mut svc, black_box(true)));
            }));
            best[1] = best[1].min(per_call(CALLS, || {
                black_box(drive_failsafe(&cb, black_box(true)));
            }));
        }
        line(name, best[0], best[1]);
    };
    rejections("open_reject");
    drop(_guard);
    // The same outside any runtime: tokio's `Instant::now` is then the system clock with
    // no mock-clock mutex (the `test-util` feature that dev-dependencies turn on puts one
    // in front of it inside a runtime; production builds have none).
    rejections("open_reject_outside_runtime");

    let (svc, cb) = (ours(), failsafe_cb());
    let mut best = [f64::MAX; 2];
    for _ in 0..BURSTS {
        let ours = two_threads(CALLS, false, || svc.clone(), |s| drive(s, true));
        best[0] = best[0].min(ours.as_nanos() as f64 / CALLS as f64);
        let theirs = two_threads(CALLS, false, || cb.clone(), |cb| drive_failsafe(cb, true));
        best[1] = best[1].min(theirs.as_nanos() as f64 / CALLS as f64);
    }
    line("contended_two_threads", best[0], best[1]);
}

fn main() {
    // Before anything pauses a tokio clock (see the note above `closed`).
    let only_report = std::env::var("BREAKER_REPORT").is_ok_and(|v| v == "only");
    if !only_report {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    report();
    let (without, with) = error_rates();
    println!(
        "end_to_end_error_rate: without breakers {:.4}%, with endpoint breakers {:.4}%, ratio {:.5}",
        without * 100.0,
        with * 100.0,
        with / without
    );
}
