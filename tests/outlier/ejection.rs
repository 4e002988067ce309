//! Ejection: returns without traffic, the cap, ejection-time growth and decay, and state
//! kept per key and released under churn.

use std::time::Duration;

use tokio::time::{sleep, Instant};
use tower::ServiceExt;
use tower_mesh::health::outlier::{Ejection, OutlierLayer, Reason, Rule};

use super::{calls, is_ready, settle, Backend, TICK};

const BASE: Duration = Duration::from_secs(10);

fn layer(max_percent: u32) -> OutlierLayer<usize> {
    OutlierLayer::builder()
        .consecutive_5xx(1)
        .base_ejection_time(BASE)
        .max_ejection_time(Duration::from_secs(25))
        .interval(Duration::from_secs(1))
        .max_ejection_percent(max_percent)
        .without_success_rate()
        .without_failure_percentage()
        .build()
        .unwrap()
}

/// An endpoint polled while ejected wakes at the end of its ejection, with nothing else
/// happening; one nobody polls is returned by the detector's interval.
#[tokio::test(start_paused = true)]
async fn ejected_endpoints_return_without_traffic() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let layer = OutlierLayer::builder()
        .consecutive_5xx(1)
        .base_ejection_time(BASE)
        .interval(Duration::from_secs(3))
        .max_ejection_percent(100)
        .on_ejection({
            let seen = seen.clone();
            move |e: &Ejection<usize>| seen.lock().unwrap().push(e.key)
        })
        .build::<usize>()
        .unwrap();
    let handle = layer.handle();
    let (a, b) = (Backend::new(), Backend::new());
    let mut polled = layer.layer_keyed(a.clone(), 0);
    let mut idle = layer.layer_keyed(b.clone(), 1);
    settle().await;
    a.answer(0);
    b.answer(0);
    calls(&mut polled, 1).await;
    calls(&mut idle, 1).await;
    let until = handle.ejection(&0).unwrap().until;
    assert!(handle.is_ejected(&1));
    assert_eq!(*seen.lock().unwrap(), [0, 1], "the hook saw both ejections");

    let waiter = tokio::spawn(async move {
        polled.ready().await.expect("never an error");
        (Instant::now(), polled)
    });
    let (at, mut polled) = waiter.await.unwrap();
    assert_eq!(at, until, "woken at the end of the ejection, not later");
    assert!(!handle.is_ejected(&0));
    // The unpolled one returns at the first interval tick after its ejection ends.
    assert!(handle.is_ejected(&1));
    sleep(Duration::from_secs(3)).await;
    assert!(!handle.is_ejected(&1));
    assert_eq!(handle.counters().returned, 2);
    assert!(is_ready(&mut polled) && is_ready(&mut idle));
    // The runs start again from zero after a return: one more failure ejects again.
    calls(&mut polled, 1).await;
    assert!(handle.is_ejected(&0));
    assert_eq!(handle.ejection(&0).unwrap().times, 2);
}

/// No more than `max_ejection_percent` of the endpoints are ejected at once, strictly; an
/// endpoint that leaves frees its place.
#[tokio::test(start_paused = true)]
async fn never_more_than_max_ejection_percent_ejected() {
    let layer = layer(20);
    let handle = layer.handle();
    let backends: Vec<Backend> = (0..10).map(|_| Backend::new()).collect();
    let mut svcs: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| Some(layer.layer_keyed(b.clone(), i)))
        .collect();
    for (b, svc) in backends.iter().zip(&mut svcs) {
        b.answer(0);
        calls(svc.as_mut().unwrap(), 1).await;
    }
    let mut ejected: Vec<usize> = handle.ejected().iter().map(|e| e.key).collect();
    ejected.sort();
    assert_eq!(ejected, [0, 1], "20% of 10");
    let counters = handle.counters();
    assert_eq!(counters.detected.get(Rule::Consecutive5xx), 10);
    assert_eq!(counters.overflow, 8);
    for svc in &mut svcs[2..] {
        assert!(
            is_ready(svc.as_mut().unwrap()),
            "refused ejections leave endpoints in"
        );
    }

    // Endpoint 0 leaves: 9 endpoints, one ejected; a second fits (2 of 9 is 22%, above 20%:
    // it does not).
    svcs[0] = None;
    assert_eq!(handle.endpoints(), 9);
    assert_eq!(handle.ejected().len(), 1);
    backends[2].answer(200);
    calls(svcs[2].as_mut().unwrap(), 1).await;
    backends[2].answer(0);
    calls(svcs[2].as_mut().unwrap(), 1).await;
    assert!(!handle.is_ejected(&2), "2 of 9 would be over 20%");
    // A tenth endpoint joins: 2 of 10 fits.
    let extra = Backend::new();
    let _extra = layer.layer_keyed(extra, 10);
    backends[3].answer(200);
    calls(svcs[3].as_mut().unwrap(), 1).await;
    backends[3].answer(0);
    calls(svcs[3].as_mut().unwrap(), 1).await;
    assert!(handle.is_ejected(&3));

    // One endpoint can always be ejected (Envoy's rule): 10% of 5 endpoints is half an
    // endpoint, yet the first outlier is ejected, and only it.
    let strict = self::layer(10);
    let mut few: Vec<_> = (0..5)
        .map(|i| strict.layer_keyed(Backend::new(), i))
        .collect();
    for svc in &mut few {
        svc.get_ref().answer(0);
        calls(svc, 1).await;
    }
    assert_eq!(strict.handle().ejected().len(), 1);
    assert_eq!(strict.handle().counters().overflow, 4);
}

/// The n-th ejection in a row lasts n × base, capped; each clean interval takes one off.
#[tokio::test(start_paused = true)]
async fn ejection_time_grows_with_each_ejection_and_decays_with_clean_intervals() {
    let layer = layer(100);
    let handle = layer.handle();
    let backend = Backend::new();
    let mut svc = layer.layer_keyed(backend.clone(), 0);
    settle().await;
    // Off the interval's grid (ticks at whole seconds from here), so that no ejection or
    // return coincides with a tick.
    sleep(Duration::from_millis(500)).await;
    backend.answer(0);

    let mut lengths = Vec::new();
    for _ in 0..3 {
        calls(&mut svc, 1).await;
        let e = handle.ejection(&0).unwrap();
        lengths.push((e.times, (e.until - e.since).as_secs()));
        svc.ready().await.unwrap(); // returns at the end of the ejection
    }
    assert_eq!(
        lengths,
        [(1, 10), (2, 20), (3, 25)],
        "base 10 s, capped at 25 s"
    );

    // The interval in which it returned is not clean; each one after it takes one off.
    assert_eq!(handle.times_ejected(&0), 3);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.times_ejected(&0), 3, "returned during this interval");
    sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.times_ejected(&0), 2);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.times_ejected(&0), 1);
    calls(&mut svc, 1).await;
    let e = handle.ejection(&0).unwrap();
    assert_eq!((e.times, e.until - e.since), (2, Duration::from_secs(20)));
    svc.ready().await.unwrap();
    sleep(Duration::from_secs(10)).await;
    assert_eq!(handle.times_ejected(&0), 0, "fully decayed");
    calls(&mut svc, 1).await;
    assert_eq!(
        handle.ejection(&0).unwrap().until - handle.ejection(&0).unwrap().since,
        BASE
    );
}

/// An early return through the handle (as a passing active check would do) wakes the
/// endpoint's poller at once.
#[tokio::test(start_paused = true)]
async fn uneject_through_the_handle_wakes_the_poller() {
    let layer = layer(100);
    let handle = layer.handle();
    let backend = Backend::new();
    let mut svc = layer.layer_keyed(backend.clone(), 7);
    backend.answer(0);
    calls(&mut svc, 1).await;
    let since = Instant::now();
    let waiter = tokio::spawn(async move {
        svc.ready().await.unwrap();
        Instant::now()
    });
    sleep(Duration::from_secs(2)).await;
    assert!(!waiter.is_finished());
    assert!(handle.uneject(&7));
    assert_eq!(waiter.await.unwrap(), since + Duration::from_secs(2));
    assert!(!handle.uneject(&7), "not ejected any more");
}

/// Services for one key share its state; it is released when the last is dropped, so a
/// stream of endpoints coming and going leaves nothing behind.
#[tokio::test(start_paused = true)]
async fn state_is_shared_per_key_and_released_under_churn() {
    let layer = layer(100);
    let handle = layer.handle();
    let backend = Backend::new();
    let mut first = layer.layer_keyed(backend.clone(), 1);
    let mut second = layer.layer_keyed(backend.clone(), 1);
    let clone = first.clone();
    assert_eq!(handle.endpoints(), 1);
    backend.answer(0);
    calls(&mut first, 1).await;
    assert!(!is_ready(&mut second), "the same endpoint");
    assert_eq!(
        first.ejection().map(|e| e.reason),
        Some(Reason::Consecutive5xx { failures: 1 })
    );
    drop(first);
    drop(clone);
    assert!(handle.is_ejected(&1), "still held by `second`");
    drop(second);
    assert_eq!(handle.endpoints(), 0);
    assert!(handle.ejected().is_empty());

    for round in 0..2_000 {
        let mut svc = layer.layer_keyed(backend.clone(), 100 + round);
        calls(&mut svc, 1).await; // every one fails and is ejected
        assert_eq!(handle.ejected().len(), 1);
    }
    assert_eq!(handle.endpoints(), 0);
    assert!(handle.ejected().is_empty());
}

/// The worker holds the detector weakly: dropping the layer and every endpoint and handle
/// ends it at its next tick.
#[tokio::test(start_paused = true)]
async fn the_worker_ends_with_the_detector() {
    let (layer, worker) = OutlierLayer::builder()
        .interval(Duration::from_secs(1))
        .build_pair::<u8>()
        .unwrap();
    let worker = tokio::spawn(worker);
    let svc = layer.layer_keyed(Backend::new(), 1);
    sleep(Duration::from_secs(5)).await;
    assert!(!worker.is_finished());
    drop(layer);
    sleep(Duration::from_secs(5)).await;
    assert!(
        !worker.is_finished(),
        "an endpoint still holds the detector"
    );
    drop(svc);
    sleep(Duration::from_secs(1) + TICK).await;
    assert!(worker.is_finished());
}
