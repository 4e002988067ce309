//! tower's readiness contract: no endpoints, panic threshold, slow start, behind `Buffer`, progress without requests.

use super::*;

/// Past the bound `poll_ready` is ready and the request fails at once with `NoEndpoints`
/// (tower's `Buffer` would die of an error from `poll_ready`); it stays so until an
/// endpoint is ready again.
#[tokio::test(start_paused = true)]
async fn no_endpoints_fails_requests_fast_after_bound() {
    let (changes, disco) = discovery::<u32, Echo>();
    let mut b = BalanceLayer::builder(RoundRobin::new())
        .no_endpoints_timeout(Duration::from_secs(1))
        .build()
        .expect("valid balancer settings")
        .build(disco);
    let start = Instant::now();
    ServiceExt::<u64>::ready(&mut b)
        .await
        .expect("never an error");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let err = b.call(1).await.expect_err("no endpoint");
    let ne = err.downcast_ref::<NoEndpoints>().expect("NoEndpoints");
    assert_eq!(ne.discovered(), 0);
    assert_eq!(ne.waited(), Duration::from_secs(1));
    // Still nothing: fails at once.
    tokio::time::advance(Duration::from_secs(5)).await;
    let start = Instant::now();
    let err = ServiceExt::<u64>::oneshot(&mut b, 1)
        .await
        .expect_err("no endpoint");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(err.is::<NoEndpoints>());
    // An endpoint that is never ready counts as none.
    let e = Echo::new(0, 1);
    e.set_ready(false);
    changes.insert(0, e.clone());
    assert!(ServiceExt::<u64>::oneshot(&mut b, 1).await.is_err());
    // It becomes ready: served, and the clock restarts.
    e.set_ready(true);
    assert_eq!(ServiceExt::<u64>::oneshot(&mut b, 1).await.unwrap(), 0);
    e.set_ready(false);
    let start = Instant::now();
    let err = ServiceExt::<u64>::oneshot(&mut b, 1)
        .await
        .expect_err("not ready");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.downcast_ref::<NoEndpoints>().unwrap().discovered(), 1);
}

/// `Duration::MAX` is accepted (it used to overflow the clock) and means "wait forever",
/// as `wait_for_endpoints` does.
#[tokio::test(start_paused = true)]
async fn no_endpoints_timeout_accepts_any_duration_and_can_wait_forever() {
    for layer in [
        BalanceLayer::builder(RoundRobin::new())
            .no_endpoints_timeout(Duration::MAX)
            .build()
            .expect("valid balancer settings"),
        BalanceLayer::builder(RoundRobin::new())
            .wait_for_endpoints()
            .build()
            .expect("valid balancer settings"),
    ] {
        let (changes, disco) = discovery::<u32, Echo>();
        let mut b = layer.build(disco);
        let c = changes.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            c.insert(7, Echo::new(7, 1));
        });
        let start = Instant::now();
        assert_eq!(ServiceExt::<u64>::oneshot(&mut b, 1).await.unwrap(), 7);
        assert_eq!(start.elapsed(), Duration::from_secs(3_600));
    }
}

#[tokio::test(start_paused = true)]
async fn waits_within_bound_for_an_endpoint() {
    let (changes, disco) = discovery::<u32, Echo>();
    let mut b = Balance::new(disco, RoundRobin::new());
    let c = changes.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.insert(7, Echo::new(7, 1));
    });
    let start = Instant::now();
    assert_eq!(ServiceExt::<u64>::oneshot(&mut b, 1).await.unwrap(), 7);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test]
async fn panic_threshold_spreads_or_fails() {
    // 4 endpoints, 2 healthy: 50% is not below the threshold: healthy ones only.
    let (_c, mut b, echoes) = setup(BalanceLayer::new(RoundRobin::new()), &[1, 1, 1, 1]);
    echoes[2].set_healthy(false);
    echoes[3].set_healthy(false);
    let c = counts(&mut b, 400);
    assert_eq!(
        (c.get(&0), c.get(&1), c.get(&2)),
        (Some(&200), Some(&200), None)
    );
    assert!(!b.endpoints().is_panic());
    // 1 of 4 healthy (25%): panic, spread over all four.
    echoes[1].set_healthy(false);
    send(&mut b, 0);
    send(&mut b, 0); // every endpoint has been polled again by now
    let c = counts(&mut b, 400);
    assert!(b.endpoints().is_panic());
    assert_eq!(c.len(), 4, "{c:?}");
    assert!(c.values().all(|&v| v == 100), "{c:?}");

    // Fail fast instead.
    let layer = BalanceLayer::builder(RoundRobin::new())
        .panic_mode(PanicMode::FailFast)
        .build()
        .expect("valid balancer settings");
    let (_c, mut b, echoes) = setup(layer, &[1, 1, 1, 1]);
    for e in &echoes[1..] {
        e.set_healthy(false);
    }
    // Ready (an error from `poll_ready` would kill a `Buffer`), then the request fails.
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    match poll_once(&mut b.call(0)) {
        Poll::Ready(Err(e)) => {
            let p = e.downcast_ref::<Panic>().expect("Panic");
            assert_eq!(
                (p.healthy(), p.discovered(), p.threshold_percent()),
                (1, 4, 50)
            );
        }
        other => panic!("expected panic error, got {other:?}"),
    }
    assert!(echoes.iter().all(|e| e.calls.load(Ordering::SeqCst) == 0));
    // Threshold 0 disables it.
    let layer = BalanceLayer::builder(RoundRobin::new())
        .panic_threshold_percent(0)
        .build()
        .expect("valid balancer settings");
    let (_c, mut b, echoes) = setup(layer, &[1, 1, 1, 1]);
    for e in &echoes[1..] {
        e.set_healthy(false);
    }
    let c = counts(&mut b, 100);
    assert_eq!(c[&0], 100);
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_new_endpoint() {
    let layer = BalanceLayer::builder(Weighted::new())
        .slow_start(SlowStart::new(Duration::from_secs(10)).min_weight_percent(10))
        .build()
        .expect("valid balancer settings");
    let (changes, mut b, _) = setup(layer, &[1, 1]);
    // Let the initial endpoints warm up completely.
    send(&mut b, 0);
    tokio::time::advance(Duration::from_secs(11)).await;
    let c = counts(&mut b, 1_000);
    assert_eq!(c[&0], 500);
    changes.insert(2, Echo::new(2, 1));
    let share =
        |b: &mut Bal<Weighted>| counts(b, 2_100).get(&2).copied().unwrap_or(0) as f64 / 2_100.0;
    // Just inserted: 10% of its weight, 0.1 / 2.1 of the traffic.
    let s0 = share(&mut b);
    assert!((s0 - 0.1 / 2.1).abs() < 0.01, "{s0}");
    tokio::time::advance(Duration::from_secs(5)).await;
    let s5 = share(&mut b);
    assert!((s5 - 0.5 / 2.5).abs() < 0.01, "{s5}");
    tokio::time::advance(Duration::from_secs(5)).await;
    let s10 = share(&mut b);
    assert!((s10 - 1.0 / 3.0).abs() < 0.01, "{s10}");
    assert!(!b.endpoints().is_warming());
}

#[tokio::test(start_paused = true)]
async fn slow_start_applies_to_least_requests_weights() {
    let layer = BalanceLayer::builder(LeastRequests::seeded(4))
        .slow_start(SlowStart::new(Duration::from_secs(10)).min_weight_percent(10))
        .build()
        .expect("valid balancer settings");
    let (changes, mut b, _) = setup(layer, &[1]);
    send(&mut b, 0);
    tokio::time::advance(Duration::from_secs(11)).await;
    changes.insert(1, Echo::new(1, 1));
    // Hold 22 requests open: the new endpoint (10% weight) takes about 1 in 11.
    let mut open = Vec::new();
    for r in 0..22 {
        assert!(poll_ready::<_, u64>(&mut b).is_ready());
        open.push(b.call(r));
    }
    let mut on_new = 0;
    for mut f in open {
        if matches!(poll_once(&mut f), Poll::Ready(Ok(1))) {
            on_new += 1;
        }
    }
    assert!((1..=3).contains(&on_new), "{on_new}");
}

/// Random inserts, removes, readiness flips, readiness errors and requests in flight:
/// no request reaches an endpoint that was removed, nothing panics.
/// One step in `rate` of those drawn to change the endpoint set does (1: 10% of all steps).
/// tower's `Buffer` dies for good when its service's `poll_ready` fails. A buffered
/// balancer started before any endpoint exists and left without one past the bound fails
/// those requests (with the typed error, found through the buffer), and serves as soon as
/// an endpoint appears.
#[tokio::test(start_paused = true)]
async fn behind_buffer_started_before_any_endpoint() {
    let (changes, disco) = discovery::<u32, Echo>();
    let balance = BalanceLayer::builder(RoundRobin::new())
        .no_endpoints_timeout(Duration::from_secs(1))
        .build()
        .expect("valid balancer settings")
        .build(disco);
    let mut client = tower::buffer::Buffer::new(balance, 16);
    let err = ServiceExt::<u64>::ready(&mut client)
        .await
        .unwrap()
        .call(1)
        .await
        .expect_err("no endpoint yet");
    assert!(err.is::<NoEndpoints>(), "{err}");
    // Idle for a while, still nothing.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let err = client
        .clone()
        .oneshot(2)
        .await
        .expect_err("no endpoint yet");
    assert!(err.is::<NoEndpoints>(), "{err}");
    // The first endpoint registers: served at once, by the same buffer.
    changes.insert(3, Echo::new(3, 1));
    assert_eq!(client.clone().oneshot(4).await.unwrap(), 3);
    for r in 0..10 {
        assert_eq!(client.clone().oneshot(r).await.unwrap(), 3);
    }
}

/// The same with the endpoints' breakers open, the other way for a balancer to have no
/// ready endpoint: a `Pending` endpoint, then ready again with no request flowing.
#[tokio::test(start_paused = true)]
async fn behind_buffer_all_endpoints_unready_then_back() {
    let (changes, disco) = discovery::<u32, Echo>();
    let e = Echo::new(0, 1);
    changes.insert(0, e.clone());
    let balance = BalanceLayer::new(RoundRobin::new()).build(disco);
    let client = tower::buffer::Buffer::new(balance, 16);
    assert_eq!(client.clone().oneshot(1).await.unwrap(), 0);
    e.set_ready(false);
    let err = client.clone().oneshot(2).await.expect_err("not ready");
    assert!(err.is::<NoEndpoints>(), "{err}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    e.set_ready(true);
    assert_eq!(client.clone().oneshot(3).await.unwrap(), 0);
}

/// tower #824: with no request flowing, an endpoint that turns ready is polled by the
/// worker (ready for the next request), and a removed endpoint is dropped.
#[tokio::test]
async fn progress_without_requests() {
    let (changes, disco) = discovery::<u32, Echo>();
    let e = Echo::new(0, 1);
    e.set_ready(false);
    changes.insert(0, e.clone());
    let mut b = BalanceLayer::new(RoundRobin::new()).build(disco);
    assert!(poll_ready::<_, u64>(&mut b).is_pending());
    assert_eq!(b.ready_len(), 0);
    let polls = e.polls.load(Ordering::SeqCst);
    e.set_ready(true);
    tokio::task::yield_now().await;
    assert_eq!(b.ready_len(), 1, "ready before any request");
    assert_eq!(e.polls.load(Ordering::SeqCst), polls + 1);
    // The next request goes straight to it: no further poll before the call.
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    assert_eq!(e.polls.load(Ordering::SeqCst), polls + 1);
    assert_eq!(
        poll_once(&mut b.call(1)).map(Result::unwrap),
        Poll::Ready(0)
    );

    // Removed by discovery: dropped with no request.
    let token = std::sync::Arc::clone(&e.calls);
    let before = std::sync::Arc::strong_count(&token);
    changes.remove(0);
    tokio::task::yield_now().await;
    assert_eq!(b.len(), 0);
    assert_eq!(
        std::sync::Arc::strong_count(&token),
        before - 1,
        "endpoint dropped"
    );
}

/// Before the first request the worker applies discovery too: an endpoint inserted and
/// removed again is never held.
#[tokio::test]
async fn removed_before_the_first_request_is_dropped() {
    let (changes, disco) = discovery::<u32, Echo>();
    let b = BalanceLayer::new(RoundRobin::new()).build(disco);
    let e = Echo::new(0, 1);
    let token = std::sync::Arc::clone(&e.calls);
    changes.insert(0, e);
    tokio::task::yield_now().await;
    assert_eq!(b.len(), 1);
    changes.remove(0);
    tokio::task::yield_now().await;
    assert_eq!(b.len(), 0);
    assert_eq!(std::sync::Arc::strong_count(&token), 1, "endpoint dropped");
}

/// Only endpoints whose wakers fired are polled again, never every unready one on every
/// `poll_ready`.
#[tokio::test]
async fn polls_only_woken_endpoints() {
    let (changes, disco) = discovery::<u32, Echo>();
    let echoes: Vec<Echo> = (0..1_000).map(|i| Echo::new(i, 1)).collect();
    for e in &echoes {
        e.set_ready(false);
        changes.insert(e.id, e.clone());
    }
    let mut b = BalanceLayer::new(RoundRobin::new()).build(disco);
    for _ in 0..100 {
        assert!(poll_ready::<_, u64>(&mut b).is_pending());
    }
    let polls =
        |echoes: &[Echo]| -> usize { echoes.iter().map(|e| e.polls.load(Ordering::SeqCst)).sum() };
    assert_eq!(polls(&echoes), 1_000, "each polled once");
    echoes[5].set_ready(true);
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    assert_eq!(polls(&echoes), 1_001);
    assert_eq!(echoes[5].polls.load(Ordering::SeqCst), 2);
    assert_eq!(send(&mut b, 0), 5);
}

/// The first Maglev table for 10,000 endpoints is filled on the blocking pool: the
/// balancer is not ready meanwhile, other tasks on the same (single) runtime thread keep
/// running, and it turns ready when the table is in, without another poll.
#[tokio::test(flavor = "current_thread")]
async fn maglev_first_table_is_filled_off_the_runtime_thread() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let (changes, disco) = discovery::<u32, Echo>();
    for id in 0..10_000 {
        changes.insert(id, Echo::new(id, 1));
    }
    let mut b = BalanceLayer::builder(Maglev::new(key_fn))
        .wait_for_endpoints()
        .build()
        .expect("valid balancer settings")
        .build(disco);
    assert!(
        poll_ready::<_, u64>(&mut b).is_pending(),
        "table not filled yet"
    );
    assert!(b.strategy().is_rebuilding());
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            t.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    });
    ServiceExt::<u64>::ready(&mut b).await.unwrap();
    ticker.abort();
    assert!(
        ticks.load(Ordering::SeqCst) > 0,
        "the runtime thread was not blocked"
    );
    assert_eq!(b.strategy().table_len(), 1_048_909);
    assert!(!b.strategy().is_rebuilding());
    let k = send(&mut b, 42);
    assert_eq!(send(&mut b, 42), k);
}

/// Thousands of endpoints churned through a buffered balancer: every one removed is
/// dropped and the balancer's size follows the live set.
#[tokio::test(start_paused = true)]
async fn churn_through_thousands_behind_buffer() {
    let (changes, disco) = discovery::<u32, Echo>();
    let balance = BalanceLayer::new(P2c::pending_requests().seeded(1)).build(disco);
    let client = tower::buffer::Buffer::new(balance, 64);
    let mut live: Vec<Echo> = Vec::new();
    let tokens: Vec<_> = (0..5_000u32)
        .map(|id| {
            let e = Echo::new(id, 1);
            let token = std::sync::Arc::clone(&e.calls);
            changes.insert(id, e.clone());
            live.push(e);
            if live.len() > 20 {
                changes.remove(live.remove(0).id);
            }
            token
        })
        .collect();
    for r in 0..100 {
        let id = client.clone().oneshot(r).await.unwrap();
        assert!(live.iter().any(|e| e.id == id));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = tokens
        .iter()
        .filter(|t| std::sync::Arc::strong_count(t) > 1)
        .count();
    assert_eq!(held, 20, "only the live endpoints are held");
}

#[test]
fn balance_and_worker_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Bal<AnyPick<u64>>>();
    check::<tower_mesh::balance::Worker<support::Discovery<u32, Echo>, RoundRobin>>();
}

/// The worker on one thread, callers on others: four tasks send through a `Buffer` while
/// another inserts, removes and flips endpoints, on a multi-threaded runtime. Every request
/// completes (answered, or failed fast with `NoEndpoints`), nothing deadlocks, and once the
/// churn stops the balancer holds exactly the live endpoints: every removed one was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_and_churn_on_a_multi_threaded_runtime() {
    let (changes, disco) = discovery::<u32, Echo>();
    let balance = BalanceLayer::builder(AnyPick::new(Strategy::LeastRequests).seeded(3))
        .no_endpoints_timeout(Duration::from_millis(5))
        .build()
        .expect("valid balancer settings")
        .build(disco);
    let client = tower::buffer::Buffer::new(balance, 256);
    let callers: Vec<_> = (0..4u64)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut ok = 0usize;
                for r in 0..2_000u64 {
                    match client.clone().oneshot(t * 10_000 + r).await {
                        Ok(_) => ok += 1,
                        Err(e) if e.is::<NoEndpoints>() => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    let mut rng = SmallRng::seed_from_u64(17);
    let mut live: Vec<Echo> = Vec::new();
    let mut tokens = Vec::new();
    for id in 0..3_000u32 {
        let e = Echo::new(id, rng.random_range(1..5));
        tokens.push(std::sync::Arc::clone(&e.calls));
        changes.insert(id, e.clone());
        live.push(e);
        if live.len() > 8 {
            changes.remove(live.remove(0).id);
        }
        if id % 3 == 0 {
            let e = &live[rng.random_range(0..live.len())];
            e.set_ready(!e.ready.load(Ordering::SeqCst));
        }
        if id % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for e in &live {
        e.set_ready(true);
    }
    let mut served = 0;
    for c in callers {
        served += c.await.unwrap();
    }
    assert!(served > 0);
    // The worker catches up with no request: only the live endpoints are held.
    for _ in 0..1_000 {
        let held = tokens
            .iter()
            .filter(|t| std::sync::Arc::strong_count(t) > 1)
            .count();
        if held == live.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let held = tokens
        .iter()
        .filter(|t| std::sync::Arc::strong_count(t) > 1)
        .count();
    assert_eq!(held, live.len(), "only the live endpoints are held");
    assert_eq!(client.clone().oneshot(0).await.map(|_| ()).ok(), Some(()));
}

/// `Balance` is cloneable without `Buffer`: clones started before the first endpoint
/// exists, each waiting in its own task, are all woken when one registers (a single waker
/// slot would wake only the last of them); they share the endpoints and their counts.
#[tokio::test(start_paused = true)]
async fn clones_wait_on_their_own_and_share_the_endpoints() {
    let (changes, disco) = discovery::<u32, Echo>();
    let b = BalanceLayer::builder(RoundRobin::new())
        .wait_for_endpoints()
        .build()
        .expect("valid balancer settings")
        .build(disco);
    let waiting: Vec<_> = (0..8).map(|r| tokio::spawn(b.clone().oneshot(r))).collect();
    // Idle for a while: every clone is still waiting.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(waiting.iter().all(|t| !t.is_finished()));
    let e = Echo::new(9, 1);
    changes.insert(9, e.clone());
    for t in waiting {
        assert_eq!(t.await.expect("task").expect("served"), 9);
    }
    assert_eq!(b.len(), 1);
    assert_eq!(b.clone().ready_len(), 1, "a clone sees the same endpoints");
}

/// The worker lives as long as any clone does: dropping the original keeps discovery
/// applied for the clones; dropping the last clone ends it (discovery is dropped).
#[tokio::test]
async fn worker_ends_with_the_last_clone() {
    let (changes, disco) = discovery::<u32, Echo>();
    let b = BalanceLayer::new(RoundRobin::new()).build(disco);
    let mut clone = b.clone();
    drop(b);
    changes.insert(1, Echo::new(1, 1));
    assert_eq!(ServiceExt::<u64>::oneshot(&mut clone, 1).await.unwrap(), 1);
    let e = Echo::new(2, 1);
    let token = std::sync::Arc::clone(&e.calls);
    changes.insert(2, e);
    changes.remove(1);
    tokio::task::yield_now().await;
    assert_eq!(clone.len(), 1, "the worker still applies discovery");
    drop(clone);
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        std::sync::Arc::strong_count(&token),
        1,
        "the worker ended and dropped the endpoints"
    );
}

/// Many clones called from tasks on a multi-threaded runtime while endpoints churn: every
/// request is served by a live endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_from_many_tasks_under_churn() {
    let (changes, disco) = discovery::<u32, Echo>();
    for i in 0..4 {
        changes.insert(i, Echo::new(i, 1));
    }
    let b = BalanceLayer::builder(P2c::pending_requests())
        .wait_for_endpoints()
        .build()
        .expect("valid balancer settings")
        .build(disco);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                for r in 0..200u64 {
                    let id = b.clone().oneshot(r + t).await.expect("served");
                    assert!(id < 1_000);
                }
            })
        })
        .collect();
    for step in 4..200u32 {
        changes.insert(step, Echo::new(step, 1));
        changes.remove(step - 4);
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(b.len(), 4);
}
