//! The policy through the service-level breaker: when it opens, how it half-opens and closes,
//! rates, slow calls, ignored calls, the handle, jitter and classifiers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{advance, Instant};
use tower::{service_fn, BoxError, Service, ServiceExt};
use tower_layer::Layer;
use tower_test::mock;

use super::super::policy::Policy;
use super::*;

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
