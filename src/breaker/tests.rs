use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{advance, Instant};
use tower::{service_fn, BoxError, Service, ServiceExt};
use tower_layer::Layer;
use tower_test::mock;

use super::*;

type Call = Result<&'static str, &'static str>;

/// A service whose request is its result.
fn echo() -> impl Service<
    Call,
    Response = &'static str,
    Error = BoxError,
    Future = Ready<Result<&'static str, BoxError>>,
> + Clone {
    service_fn(|r: Call| ready(r.map_err(BoxError::from)))
}

fn quick() -> Builder {
    let b = CircuitBreakerLayer::builder()
        .name("test")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(10))
        .max_open_duration(Duration::from_secs(35));
    // Without metrics, closed-state calls take the reference-count-free path.
    #[cfg(feature = "metrics")]
    let b = b.metrics(false);
    b
}

async fn run<S>(svc: &mut S, r: Call) -> Result<&'static str, BoxError>
where
    S: Service<Call, Response = &'static str>,
    S::Error: Into<BoxError>,
{
    svc.ready()
        .await
        .map_err(Into::into)?
        .call(r)
        .await
        .map_err(Into::into)
}

fn is_open(e: &BoxError) -> bool {
    error::Open::find(&**e).is_some()
}

#[tokio::test(start_paused = true)]
async fn defaults() {
    let (layer, handle) = CircuitBreakerLayer::builder().build_with_handle().unwrap();
    assert_eq!(handle.name(), "breaker");
    let mut svc = layer.layer(echo());
    for _ in 0..4 {
        assert!(!is_open(&run(&mut svc, Err("x")).await.unwrap_err()));
    }
    assert_eq!(handle.state(), State::Closed);
    run(&mut svc, Err("x")).await.unwrap_err();
    assert_eq!(
        handle.state(),
        State::Open,
        "opens after 5 consecutive failures"
    );
    let until = handle.open_until().unwrap();
    assert_eq!(
        until - Instant::now(),
        Duration::from_secs(5),
        "default open duration 5 s"
    );
    advance(Duration::from_secs(5)).await;
    // One probe (default K = 1), one success closes (default success threshold 1).
    run(&mut svc, Ok("a")).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    let p = Policy::default();
    assert_eq!(p.minimum_calls, 20);
    assert_eq!(p.window, Window::Count(100));
    assert_eq!(p.open_max, Duration::from_secs(300));
    assert_eq!(p.multiplier, 2.0);
    assert_eq!(p.jitter, 0.0);
    assert_eq!(p.half_open_probes, 1);
    assert_eq!(p.success_threshold, 1);
    assert_eq!(p.failure_rate, None);
    assert_eq!(p.slow_call_rate, None);
}

use super::policy::Policy;

#[tokio::test(start_paused = true)]
async fn success_breaks_the_run() {
    let (layer, handle) = quick().build_with_handle().unwrap();
    let mut svc = layer.layer(echo());
    for _ in 0..5 {
        run(&mut svc, Err("x")).await.unwrap_err();
        run(&mut svc, Err("x")).await.unwrap_err();
        run(&mut svc, Ok("ok")).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.counters().failures, 10);
    assert_eq!(handle.counters().successes, 5);
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_without_touching_inner() {
    let (layer, handle) = quick().build_with_handle().unwrap();
    let (inner, mut backend) = mock::pair::<&'static str, &'static str>();
    let mut svc = mock::Spawn::new(layer.layer(inner));
    for _ in 0..3 {
        backend.allow(1);
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call("req");
        let (_, send) = backend.next_request().await.unwrap();
        send.send_error("boom");
        fut.await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Open);
    backend.allow(0);
    // Ready at once although the inner service is not: the rejection is in the future.
    assert_eq!(svc.poll_ready().map(|r| r.is_ok()), Poll::Ready(true));
    let err = svc.call("req").await.unwrap_err();
    let open = err.as_open().expect("an Open error");
    assert_eq!(open.name(), "test");
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_after(), Some(Duration::from_secs(10)));
    assert!(open.to_string().contains("\"test\""), "{open}");
    assert!(
        futures_util::FutureExt::now_or_never(backend.next_request()).is_none(),
        "inner never called"
    );
    assert_eq!(handle.counters().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_and_reopens_with_backoff() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let (layer, handle) = quick()
        .on_state_change(move |t: &Transition<'_>| {
            ev.lock().unwrap().push((t.from, t.to, t.open_for))
        })
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(echo());
    for _ in 0..3 {
        run(&mut svc, Err("x")).await.unwrap_err();
    }
    advance(Duration::from_secs(9)).await;
    assert!(is_open(&run(&mut svc, Ok("a")).await.unwrap_err()));
    advance(Duration::from_secs(1)).await;
    // Probe fails: reopen for 20 s.
    assert!(!is_open(&run(&mut svc, Err("x")).await.unwrap_err()));
    assert_eq!(handle.state(), State::Open);
    advance(Duration::from_secs(19)).await;
    assert!(is_open(&run(&mut svc, Ok("a")).await.unwrap_err()));
    advance(Duration::from_secs(1)).await;
    run(&mut svc, Err("x")).await.unwrap_err();
    // Third opening: 40 s capped at 35 s.
    assert_eq!(
        handle.open_until().unwrap() - Instant::now(),
        Duration::from_secs(35)
    );
    advance(Duration::from_secs(35)).await;
    run(&mut svc, Ok("a")).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    // After a full close the open duration starts again from the base.
    for _ in 0..3 {
        run(&mut svc, Err("x")).await.unwrap_err();
    }
    assert_eq!(
        handle.open_until().unwrap() - Instant::now(),
        Duration::from_secs(10)
    );
    let s = |a, b, d: Option<u64>| (a, b, d.map(Duration::from_secs));
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            s(State::Closed, State::Open, Some(10)),
            s(State::Open, State::HalfOpen, None),
            s(State::HalfOpen, State::Open, Some(20)),
            s(State::Open, State::HalfOpen, None),
            s(State::HalfOpen, State::Open, Some(35)),
            s(State::Open, State::HalfOpen, None),
            s(State::HalfOpen, State::Closed, None),
            s(State::Closed, State::Open, Some(10)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_k_probes_and_needs_success_threshold() {
    let (layer, handle) = quick()
        .half_open_probes(2)
        .success_threshold(3)
        .build_with_handle()
        .unwrap();
    let (inner, mut backend) = mock::pair::<&'static str, &'static str>();
    let svc = layer.layer(inner);
    handle.force_open();
    handle.reset();
    let mut s = mock::Spawn::new(svc.clone());
    for _ in 0..3 {
        backend.allow(1);
        assert!(s.poll_ready().is_ready());
        let f = s.call("x");
        backend.next_request().await.unwrap().1.send_error("e");
        f.await.unwrap_err();
    }
    advance(Duration::from_secs(10)).await;
    backend.allow(10);
    let mut a = mock::Spawn::new(svc.clone());
    let mut b = mock::Spawn::new(svc.clone());
    let mut c = mock::Spawn::new(svc.clone());
    assert!(a.poll_ready().is_ready());
    assert!(b.poll_ready().is_ready());
    assert_eq!(handle.state(), State::HalfOpen);
    let fa = a.call("a");
    let fb = b.call("b");
    assert!(c.poll_ready().is_ready());
    let err = c.call("c").await.unwrap_err();
    assert_eq!(err.as_open().unwrap().state(), State::HalfOpen);
    let (_, ra) = backend.next_request().await.unwrap();
    let (_, rb) = backend.next_request().await.unwrap();
    ra.send_response("ok");
    fa.await.unwrap();
    // One success, one in flight: a third probe could still be needed.
    assert!(c.poll_ready().is_ready());
    let fc = c.call("c");
    let (_, rc) = backend.next_request().await.unwrap();
    rb.send_response("ok");
    fb.await.unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    rc.send_response("ok");
    fc.await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_releases_its_permit() {
    let (layer, handle) = quick().build_with_handle().unwrap();
    let (inner, mut backend) = mock::pair::<&'static str, &'static str>();
    let svc = layer.layer(inner);
    handle.force_open();
    handle.reset();
    let mut s = mock::Spawn::new(svc.clone());
    for _ in 0..3 {
        backend.allow(1);
        assert!(s.poll_ready().is_ready());
        let f = s.call("x");
        backend.next_request().await.unwrap().1.send_error("e");
        f.await.unwrap_err();
    }
    advance(Duration::from_secs(10)).await;
    backend.allow(10);
    // A probe future dropped before completing.
    assert!(s.poll_ready().is_ready());
    let f = s.call("probe");
    drop(f);
    // A permit taken by poll_ready and dropped with its service.
    let mut t = mock::Spawn::new(svc.clone());
    assert!(t.poll_ready().is_ready());
    drop(t);
    // Still half-open, with the permit free again.
    assert_eq!(handle.state(), State::HalfOpen);
    assert!(s.poll_ready().is_ready());
    let f = s.call("probe");
    let _ = backend.next_request().await.unwrap();
    let (_, r) = backend.next_request().await.unwrap();
    r.send_response("ok");
    f.await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_count_window() {
    let (layer, handle) = quick()
        .without_consecutive_failures()
        .failure_rate(0.5)
        .window(Window::Count(10))
        .minimum_calls(4)
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(echo());
    for _ in 0..3 {
        run(&mut svc, Err("x")).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed, "below minimum calls");
    handle.reset();
    for _ in 0..10 {
        run(&mut svc, Ok("a")).await.unwrap();
    }
    for _ in 0..4 {
        run(&mut svc, Err("x")).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed, "4 of the last 10 failed");
    run(&mut svc, Err("x")).await.unwrap_err();
    assert_eq!(handle.state(), State::Open, "5 of the last 10 failed");
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_time_window() {
    let (layer, handle) = quick()
        .without_consecutive_failures()
        .failure_rate(0.5)
        .window(Window::Time(2))
        .minimum_calls(2)
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(echo());
    run(&mut svc, Err("x")).await.unwrap_err();
    advance(Duration::from_secs(5)).await;
    // The old failure has left the window.
    run(&mut svc, Ok("a")).await.unwrap();
    run(&mut svc, Ok("a")).await.unwrap();
    advance(Duration::from_secs(1)).await;
    run(&mut svc, Err("x")).await.unwrap_err();
    assert_eq!(handle.state(), State::Closed, "1 of 3");
    run(&mut svc, Err("x")).await.unwrap_err();
    assert_eq!(handle.state(), State::Open, "2 of 4");
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_opens() {
    let slow = Arc::new(AtomicUsize::new(0));
    let s2 = slow.clone();
    let (layer, handle) = quick()
        .without_consecutive_failures()
        .slow_calls(Duration::from_millis(100), 0.5)
        .window(Window::Count(4))
        .minimum_calls(4)
        .on_slow_call(move |c: &SlowCall<'_>| {
            assert!(c.elapsed >= Duration::from_millis(100));
            s2.fetch_add(1, Ordering::SeqCst);
        })
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(service_fn(|d: u64| async move {
        tokio::time::sleep(Duration::from_millis(d)).await;
        Ok::<_, BoxError>(())
    }));
    svc.ready().await.unwrap().call(10).await.unwrap();
    svc.ready().await.unwrap().call(150).await.unwrap();
    svc.ready().await.unwrap().call(10).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    svc.ready().await.unwrap().call(100).await.unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(slow.load(Ordering::SeqCst), 2);
    assert_eq!(handle.counters().slow, 2);
}

/// A half-open probe slower than the slow-call duration reopens the breaker, as a failed
/// probe would; a fast one closes it.
#[tokio::test(start_paused = true)]
async fn slow_probe_reopens() {
    let (layer, handle) = quick()
        .without_consecutive_failures()
        .slow_calls(Duration::from_millis(100), 0.5)
        .window(Window::Count(2))
        .minimum_calls(2)
        .open_duration(Duration::from_secs(10))
        .backoff_multiplier(1.0)
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(service_fn(|d: u64| async move {
        tokio::time::sleep(Duration::from_millis(d)).await;
        Ok::<_, BoxError>(())
    }));
    svc.ready().await.unwrap().call(150).await.unwrap();
    svc.ready().await.unwrap().call(150).await.unwrap();
    assert_eq!(handle.state(), State::Open);

    tokio::time::advance(Duration::from_secs(10)).await;
    // The probe answers, slowly: the breaker opens again.
    svc.ready().await.unwrap().call(150).await.unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.counters().slow, 3);

    tokio::time::advance(Duration::from_secs(10)).await;
    svc.ready().await.unwrap().call(10).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_calls_do_not_count() {
    let (layer, handle) = quick()
        .classifier(|r: &Result<&'static str, BoxError>| match r {
            Err(e) if e.to_string() == "ignore" => Outcome::Ignored,
            Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        })
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(echo());
    run(&mut svc, Err("x")).await.unwrap_err();
    run(&mut svc, Err("x")).await.unwrap_err();
    for _ in 0..10 {
        run(&mut svc, Err("ignore")).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.counters().ignored, 10);
    assert_eq!(handle.counters().consecutive_failures, 2);
    run(&mut svc, Err("x")).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn handle_forces_disables_and_resets() {
    let rejected = Arc::new(AtomicUsize::new(0));
    let r2 = rejected.clone();
    let (layer, handle) = quick()
        .on_rejected(move |o: &error::Open| {
            assert_eq!(o.name(), "test");
            r2.fetch_add(1, Ordering::SeqCst);
        })
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(echo());
    handle.force_open();
    assert_eq!(handle.state(), State::ForcedOpen);
    advance(Duration::from_secs(3600)).await;
    let err = run(&mut svc, Ok("a")).await.unwrap_err();
    let open = error::Open::find(&*err).unwrap();
    assert_eq!(open.state(), State::ForcedOpen);
    assert_eq!(open.retry_at(), None);
    handle.disable();
    for _ in 0..10 {
        run(&mut svc, Err("x")).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Disabled);
    handle.reset();
    assert_eq!(handle.state(), State::Closed);
    run(&mut svc, Ok("a")).await.unwrap();
    assert_eq!(rejected.load(Ordering::SeqCst), 1);
    assert_eq!(handle.counters().transitions, 3);
    assert!(format!("{handle:?}").contains("Closed"));
}

#[tokio::test(start_paused = true)]
async fn late_outcomes_from_an_older_state_are_ignored() {
    let (layer, handle) = quick().consecutive_failures(1).build_with_handle().unwrap();
    let (inner, mut backend) = mock::pair::<&'static str, &'static str>();
    let mut a = mock::Spawn::new(layer.layer(inner.clone()));
    let mut b = mock::Spawn::new(layer.layer(inner));
    backend.allow(2);
    assert!(a.poll_ready().is_ready());
    assert!(b.poll_ready().is_ready());
    let fa = a.call("a");
    let fb = b.call("b");
    let (_, ra) = backend.next_request().await.unwrap();
    let (_, rb) = backend.next_request().await.unwrap();
    ra.send_error("e");
    fa.await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    advance(Duration::from_secs(10)).await;
    backend.allow(1);
    assert!(a.poll_ready().is_ready());
    assert_eq!(handle.state(), State::HalfOpen);
    // A call admitted while closed succeeding now is not a probe success.
    rb.send_response("ok");
    fb.await.unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn endpoint_breaker_is_pending_while_open_and_wakes() {
    let layer = quick().build_endpoint().unwrap();
    let (inner, mut backend) = mock::pair::<&'static str, &'static str>();
    let ep = layer.layer_named(inner, "ep-1");
    let handle = ep.handle();
    assert_eq!(handle.name(), "ep-1");
    let mut ep = mock::Spawn::new(ep);
    for _ in 0..3 {
        backend.allow(1);
        assert!(ep.poll_ready().is_ready());
        let f = ep.call("x");
        backend.next_request().await.unwrap().1.send_error("e");
        f.await.unwrap_err();
    }
    backend.allow(10);
    assert!(
        ep.poll_ready().is_pending(),
        "open: not ready, never an error"
    );
    assert!(!ep.is_woken());
    advance(Duration::from_secs(9)).await;
    assert!(!ep.is_woken());
    advance(Duration::from_secs(1)).await;
    tokio::task::yield_now().await;
    assert!(ep.is_woken(), "woken when it may half-open");
    assert!(ep.poll_ready().is_ready());
    assert_eq!(handle.state(), State::HalfOpen);
    // A second endpoint service sharing the breaker waits for the probe.
    let mut other = mock::Spawn::new(EndpointBreaker::from_shared(
        ep.get_ref().get_ref().clone(),
        handle.shared.clone(),
        DefaultClassifier,
    ));
    assert!(other.poll_ready().is_pending());
    let f = ep.call("probe");
    backend.next_request().await.unwrap().1.send_response("ok");
    f.await.unwrap();
    assert!(other.is_woken(), "woken when the probe ends");
    assert!(other.poll_ready().is_ready());
    assert_eq!(handle.state(), State::Closed);
    // A handle change wakes a forced-open endpoint.
    handle.force_open();
    let mut third = mock::Spawn::new(layer.layer(mock::pair::<(), ()>().0));
    let h3 = third.get_ref().handle();
    h3.force_open();
    assert!(third.poll_ready().is_pending());
    h3.reset();
    assert!(third.is_woken());
}

#[test]
fn build_errors_name_the_value() {
    let e = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        error::BuildError::ZeroCount {
            setting: "consecutive_failures"
        }
    );
    let e = CircuitBreakerLayer::builder()
        .failure_rate(1.5)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("1.5"), "{e}");
    let e = CircuitBreakerLayer::builder()
        .open_duration(Duration::from_secs(10))
        .max_open_duration(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert!(matches!(e, error::BuildError::MaxBelowBase { .. }));
    let e = CircuitBreakerLayer::builder()
        .without_consecutive_failures()
        .build()
        .unwrap_err();
    assert_eq!(e, error::BuildError::NoTripCondition);
    let e = CircuitBreakerLayer::builder()
        .half_open_probes(1 << 20)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("1048576"), "{e}");
    let e = CircuitBreakerLayer::builder()
        .jitter(2.0)
        .build()
        .unwrap_err();
    assert_eq!(e, error::BuildError::InvalidJitter { value: 2.0 });
    let e = CircuitBreakerLayer::builder()
        .backoff_multiplier(0.5)
        .build()
        .unwrap_err();
    assert_eq!(e, error::BuildError::InvalidMultiplier { value: 0.5 });
    let e = CircuitBreakerLayer::builder()
        .open_duration(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        error::BuildError::ZeroDuration {
            setting: "open_duration"
        }
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_is_bounded_and_seeded() {
    let durations = |seed| {
        let (_, handle) = quick().jitter(0.5).seed(seed).build_with_handle().unwrap();
        (0..5)
            .map(|_| {
                handle
                    .shared
                    .transition(handle.shared_generation(), State::Closed, State::Open);
                let d = handle.open_until().unwrap() - Instant::now();
                handle.reset();
                d
            })
            .collect::<Vec<_>>()
    };
    let a = durations(7);
    assert_eq!(a, durations(7));
    for d in a {
        assert!(
            d >= Duration::from_secs(10) && d < Duration::from_secs(15),
            "{d:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn http_classifier_counts_server_errors() {
    let (layer, handle) = quick()
        .classifier(HttpClassifier::server_errors())
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(service_fn(|status: u16| async move {
        Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
    }));
    for status in [404, 500, 502, 200, 500, 503] {
        svc.ready().await.unwrap().call(status).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    svc.ready().await.unwrap().call(500).await.unwrap();
    assert_eq!(handle.state(), State::Open);
}

impl Handle {
    fn shared_generation(&self) -> u32 {
        self.shared.generation()
    }
}

/// 64 tasks race for the probe permits of a half-open breaker; exactly K win, every time.
#[test]
fn racing_tasks_admit_exactly_k_probes() {
    const K: u32 = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let (_, handle) = quick()
            .half_open_probes(K)
            .success_threshold(K)
            .build_with_handle()
            .unwrap();
        let shared = handle.shared.clone();
        for _ in 0..10_000 {
            let g = shared.generation();
            shared.transition(g, State::Closed, State::Open);
            shared.transition(g + 1, State::Open, State::HalfOpen);
            let barrier = Arc::new(tokio::sync::Barrier::new(64));
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let shared = shared.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        shared.try_acquire().ok()
                    })
                })
                .collect();
            let mut permits = Vec::new();
            for t in tasks {
                if let Some(p) = t.await.unwrap() {
                    permits.push(p);
                }
            }
            assert_eq!(permits.len(), K as usize);
            drop(permits);
            assert_eq!(shared.state(), State::HalfOpen);
            handle.reset();
        }
    });
}

/// The same race through the `Service` API: 64 tasks, each with a clone of the service-level
/// breaker, call a half-open breaker whose inner calls never finish; exactly K reach the inner
/// service, the rest are rejected with `Open`, and dropping the probes frees their permits.
#[test]
fn racing_service_clones_admit_exactly_k_probes() {
    const K: usize = 2;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let (layer, handle) = quick()
            .half_open_probes(K as u32)
            .success_threshold(K as u32)
            .build_with_handle()
            .unwrap();
        let reached = Arc::new(AtomicUsize::new(0));
        let r2 = reached.clone();
        let svc = layer.layer(service_fn(move |_: ()| {
            r2.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), BoxError>>()
        }));
        let shared = handle.shared.clone();
        for _ in 0..1_000 {
            let g = shared.generation();
            shared.transition(g, State::Closed, State::Open);
            shared.transition(g + 1, State::Open, State::HalfOpen);
            reached.store(0, Ordering::SeqCst);
            let barrier = Arc::new(tokio::sync::Barrier::new(64));
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let mut svc = svc.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        svc.ready().await.unwrap();
                        let mut fut = Box::pin(svc.call(()));
                        match futures_util::FutureExt::now_or_never(&mut fut) {
                            Some(Err(e)) => {
                                assert!(e.is_open(), "{e}");
                                None
                            }
                            Some(Ok(())) => unreachable!("the inner call never finishes"),
                            None => Some(fut),
                        }
                    })
                })
                .collect();
            let mut probes = Vec::new();
            for t in tasks {
                probes.extend(t.await.unwrap());
            }
            assert_eq!(probes.len(), K);
            assert_eq!(reached.load(Ordering::SeqCst), K);
            drop(probes);
            assert_eq!(
                shared.word_snapshot().inflight(),
                0,
                "dropped probes free their permits"
            );
            assert_eq!(shared.state(), State::HalfOpen);
            handle.reset();
        }
    });
}

/// The `metrics` counters and gauge, read back from a real recorder: calls by outcome,
/// transitions and the state; a breaker built with `metrics(false)` reports nothing.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_report_outcomes_transitions_and_state() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::collections::HashMap;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This thread only (current-thread runtime), so other tests' breakers do not count here.
    let _local = metrics::set_default_local_recorder(&recorder);

    let (layer, handle) = quick()
        .name("metered")
        .metrics(true)
        .consecutive_failures(2)
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(echo());
    for _ in 0..3 {
        run(&mut svc, Ok("ok")).await.unwrap();
    }
    run(&mut svc, Err("x")).await.unwrap_err();
    run(&mut svc, Err("x")).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    assert!(is_open(&run(&mut svc, Ok("ok")).await.unwrap_err()));

    let (silent, _) = quick()
        .name("silent")
        .metrics(false)
        .build_with_handle()
        .unwrap();
    let mut quiet = silent.layer(echo());
    run(&mut quiet, Ok("ok")).await.unwrap();

    let mut calls = HashMap::new();
    let (mut transitions, mut state) = (HashMap::new(), None);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
        };
        assert_eq!(label("breaker").as_deref(), Some("metered"), "{key:?}");
        match (key.name(), value) {
            ("tower_mesh_breaker_calls_total", DebugValue::Counter(v)) => {
                calls.insert(label("outcome").unwrap(), v);
            }
            ("tower_mesh_breaker_transitions_total", DebugValue::Counter(v)) => {
                transitions.insert((label("from").unwrap(), label("to").unwrap()), v);
            }
            ("tower_mesh_breaker_state", DebugValue::Gauge(v)) => state = Some(v.into_inner()),
            (name, v) => panic!("unexpected metric {name} {v:?}"),
        }
    }
    assert_eq!(calls.get("success"), Some(&3), "{calls:?}");
    assert_eq!(calls.get("failure"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("rejected"), Some(&1), "{calls:?}");
    assert_eq!(
        transitions.get(&("closed".to_owned(), "open".to_owned())),
        Some(&1),
        "{transitions:?}"
    );
    assert_eq!(state, Some(1.0), "the gauge says open");
}

/// Waits for a thread's answer, failing (instead of hanging the test run) if it never comes:
/// a guard against a `poll_ready` that spins, not a timing assertion.
fn answer_of<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} never returned: it spins"))
}

/// The breaker closes between the endpoint breaker's closed-state check and its taking a
/// permit (here an `on_rejected` hook resets it, as a reset or a successful probe on another
/// thread can): `poll_ready` is ready at once instead of dropping and retaking a permit for
/// ever.
#[test]
fn endpoint_breaker_closed_while_taking_a_permit_is_ready() {
    let target: Arc<std::sync::OnceLock<Handle>> = Arc::default();
    let hook_target = target.clone();
    let layer = quick()
        .on_rejected(move |_: &error::Open| {
            if let Some(handle) = hook_target.get() {
                handle.reset();
            }
        })
        .build_endpoint()
        .unwrap();
    let mut ep = layer.layer_named(echo(), "ep");
    let handle = ep.handle();
    handle.force_open();
    target.set(handle.clone()).unwrap();
    let (ep, ready) = answer_of("EndpointBreaker::poll_ready", move || {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let ready = ep.poll_ready(&mut cx);
        (ep, ready)
    });
    assert!(matches!(ready, Poll::Ready(Ok(()))), "{ready:?}");
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.counters().rejected, 1);
    // The permit it took is used by the call, and counted.
    let mut ep = ep;
    let out = futures_util::FutureExt::now_or_never(ep.call(Ok("a"))).unwrap();
    assert_eq!(out.unwrap(), "a");
    assert_eq!(handle.counters().successes, 1);
}

/// Endpoint breakers sharing one breaker stay live while another thread closes it under
/// them: two pollers call through their own `EndpointBreaker` (every third call fails, which
/// opens the breaker; it half-opens after 20 µs, and a successful probe closes it), while a
/// third thread resets it in a loop. The second poller goes on alone after the first is done,
/// so that a poll caught spinning has no other poller's failure to reopen the breaker and end
/// the spin. Every `poll_ready` returns; every call's outcome is counted.
#[test]
fn endpoint_breakers_stay_live_under_concurrent_reset_and_close() {
    const POLLS: [usize; 2] = [5_000, 50_000];
    let (_, handle) = quick()
        .consecutive_failures(1)
        .open_duration(Duration::from_micros(20))
        .max_open_duration(Duration::from_micros(20))
        .build_with_handle()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resetter = {
        let (handle, stop) = (handle.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                handle.reset();
            }
        })
    };
    let pollers: Vec<_> = (0..2)
        .map(|p| {
            let shared = handle.shared.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                // The endpoint breaker's open-state wake-up is a tokio timer.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let _entered = rt.enter();
                let mut ep = EndpointBreaker::from_shared(echo(), shared, DefaultClassifier);
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let mut calls = 0usize;
                for i in 0..POLLS[p] {
                    if ep.poll_ready(&mut cx).is_ready() {
                        let r: Call = if (i + p) % 3 == 0 { Err("x") } else { Ok("a") };
                        let _ = futures_util::FutureExt::now_or_never(ep.call(r)).unwrap();
                        calls += 1;
                    }
                }
                let _ = tx.send(calls);
            });
            rx
        })
        .collect();
    let mut calls = 0;
    for rx in pollers {
        calls += rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a poller never finished: poll_ready spins");
    }
    stop.store(true, Ordering::Relaxed);
    resetter.join().unwrap();
    let c = handle.counters();
    assert!(calls > 0);
    assert_eq!(c.successes + c.failures, calls as u64, "{c:?}");
}
