//! The endpoint breaker's readiness: not ready while open, woken when it may admit a call, and
//! live under concurrent transitions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::advance;
use tower::Service;
use tower_layer::Layer;
use tower_test::mock;

use super::*;

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
