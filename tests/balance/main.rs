//! Integration tests for `tower_mesh::balance`.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_mesh::balance::error::{NoEndpoints, Panic};
use tower_mesh::balance::{
    stable_hash, AnyPick, Balance, BalanceLayer, LeastRequests, Maglev, P2c, PanicMode, Pick,
    Random, RingHash, RoundRobin, SlowStart, Strategy, Weighted,
};

use support::{discovery, poll_once, poll_ready, send, settle, setup, Bal, Echo};

fn counts<P: Pick<u64>>(b: &mut Bal<P>, n: usize) -> HashMap<u32, usize> {
    let mut m = HashMap::new();
    for r in 0..n {
        *m.entry(send(b, r as u64)).or_default() += 1;
    }
    m
}

fn key_fn(r: &u64) -> Option<u64> {
    Some(stable_hash(r))
}

#[tokio::test]
async fn round_robin_is_exact() {
    let (_c, mut b, _) = setup(BalanceLayer::new(RoundRobin::new()), &[1, 1, 1, 1]);
    let seq: Vec<u32> = (0..12).map(|r| send(&mut b, r)).collect();
    assert_eq!(seq[..4], seq[4..8]);
    assert_eq!(seq[..4], seq[8..12]);
    let set: HashSet<u32> = seq[..4].iter().copied().collect();
    assert_eq!(set.len(), 4);
    let c = counts(&mut b, 4_000);
    assert!(c.values().all(|&v| v == 1_000), "{c:?}");
}

#[tokio::test]
async fn round_robin_skips_endpoints_that_are_not_ready() {
    let (_c, mut b, echoes) = setup(BalanceLayer::new(RoundRobin::new()), &[1, 1, 1]);
    send(&mut b, 0);
    echoes[1].set_ready(false);
    // Endpoint 1 woke its poller when it turned pending: polled again, it takes nothing.
    let c = counts(&mut b, 300);
    assert_eq!(c.get(&1), None, "{c:?}");
    assert_eq!(c[&0] + c[&2], 300);
    echoes[1].set_ready(true);
    let c = counts(&mut b, 300);
    assert_eq!(c[&1], 100, "{c:?}");
}

#[tokio::test]
async fn weighted_within_one_percent() {
    let weights = [1, 2, 3, 4, 10];
    let (_c, mut b, _) = setup(BalanceLayer::new(Weighted::new()), &weights);
    let c = counts(&mut b, 10_000);
    let total: u32 = weights.iter().sum();
    for (i, &w) in weights.iter().enumerate() {
        let expect = 10_000.0 * f64::from(w) / f64::from(total);
        let got = c[&(i as u32)] as f64;
        assert!(
            (got - expect).abs() / expect <= 0.01,
            "{i}: {got} vs {expect}"
        );
    }
}

#[tokio::test]
async fn weighted_is_smooth() {
    // nginx: weights a=5, b=1, c=1 give a a b a c a a.
    let (_c, mut b, _) = setup(BalanceLayer::new(Weighted::new()), &[5, 1, 1]);
    let seq: Vec<u32> = (0..7).map(|r| send(&mut b, r)).collect();
    assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[tokio::test]
async fn random_weighted_distribution() {
    let weights = [1, 3];
    let (_c, mut b, _) = setup(BalanceLayer::new(Random::seeded(7)), &weights);
    let c = counts(&mut b, 20_000);
    let share = c[&1] as f64 / 20_000.0;
    assert!((share - 0.75).abs() < 0.02, "{c:?}");
}

#[tokio::test]
async fn least_requests_prefers_idle_and_weights() {
    let (_c, mut b, _) = setup(BalanceLayer::new(LeastRequests::seeded(1)), &[1, 1, 1]);
    // Hold two requests open: the third goes to the idle endpoint.
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    let f1 = b.call(0);
    assert!(poll_ready::<_, u64>(&mut b).is_ready());
    let f2 = b.call(1);
    let id1 = send(&mut b, 2);
    // The held ones are on two endpoints, the third request on the remaining one.
    let mut held = HashSet::new();
    let (mut f1, mut f2) = (f1, f2);
    held.insert(match poll_once(&mut f1) {
        Poll::Ready(Ok(id)) => id,
        _ => unreachable!(),
    });
    held.insert(match poll_once(&mut f2) {
        Poll::Ready(Ok(id)) => id,
        _ => unreachable!(),
    });
    assert_eq!(held.len(), 2);
    assert!(!held.contains(&id1));

    // With weights 1 and 3, three requests in flight on the heavy one weigh as one on the
    // light one.
    let (_c, mut b, _) = setup(BalanceLayer::new(LeastRequests::seeded(2)), &[1, 3]);
    let mut open = Vec::new();
    for r in 0..40 {
        assert!(poll_ready::<_, u64>(&mut b).is_ready());
        open.push(b.call(r));
    }
    let mut on = [0usize; 2];
    for mut f in open {
        if let Poll::Ready(Ok(id)) = poll_once(&mut f) {
            on[id as usize] += 1;
        }
    }
    assert_eq!(on, [10, 30]);
}

#[tokio::test]
async fn least_requests_exact_over_many_endpoints() {
    // 100 endpoints: the tree index is in use.
    let (_c, mut b, _) = setup(BalanceLayer::new(LeastRequests::seeded(8)), &[1; 100]);
    let mut open = Vec::new();
    for r in 0..300 {
        assert!(poll_ready::<_, u64>(&mut b).is_ready());
        open.push(b.call(r));
    }
    for i in 0..100 {
        assert_eq!(b.endpoints().in_flight(i), 3);
    }
    // Complete one request: the next pick goes to the endpoint it finished on.
    let mut f = open.swap_remove(17);
    let id = match poll_once(&mut f) {
        Poll::Ready(Ok(id)) => id,
        other => panic!("{other:?}"),
    };
    drop(f);
    assert!(poll_ready::<_, u64>(&mut b).is_ready());
    let mut g = b.call(1_000);
    assert!(matches!(poll_once(&mut g), Poll::Ready(Ok(got)) if got == id));
}

#[tokio::test]
async fn least_requests_breaks_ties_at_random() {
    let (_c, mut b, _) = setup(BalanceLayer::new(LeastRequests::seeded(3)), &[1, 1, 1, 1]);
    let c = counts(&mut b, 4_000);
    assert_eq!(c.len(), 4);
    assert!(c.values().all(|&v| v > 800), "{c:?}");
}

#[tokio::test]
async fn p2c_pending_balances_open_requests() {
    let (_c, mut b, _) = setup(
        BalanceLayer::new(P2c::pending_requests().seeded(9)),
        &[1, 1, 1, 1],
    );
    let mut open = Vec::new();
    for r in 0..400 {
        assert!(poll_ready::<_, u64>(&mut b).is_ready());
        open.push(b.call(r));
    }
    let mut on = [0usize; 4];
    for mut f in open {
        if let Poll::Ready(Ok(id)) = poll_once(&mut f) {
            on[id as usize] += 1;
        }
    }
    // P2C keeps the spread tight: never more than a few apart.
    let (lo, hi) = (on.iter().min().unwrap(), on.iter().max().unwrap());
    assert!(hi - lo <= 4, "{on:?}");
}

#[tokio::test]
async fn hashers_are_stable_and_fall_back_without_a_key() {
    for strategy in [Strategy::RingHash, Strategy::Maglev] {
        let layer = BalanceLayer::new(AnyPick::new(strategy).with_key(key_fn).seeded(1));
        let (changes, mut b, _) = setup(layer, &[1, 1, 1, 1, 1]);
        settle(&mut b).await;
        let before: Vec<u32> = (0..1_000).map(|k| send(&mut b, k)).collect();
        let again: Vec<u32> = (0..1_000).map(|k| send(&mut b, k)).collect();
        assert_eq!(before, again, "{strategy}");
        // Remove endpoint 2: only its keys move.
        changes.remove(2);
        settle(&mut b).await;
        let after: Vec<u32> = (0..1_000).map(|k| send(&mut b, k)).collect();
        let mut moved_elsewhere = 0;
        for k in 0..1_000 {
            if before[k] != 2 {
                moved_elsewhere += usize::from(before[k] != after[k]);
            } else {
                assert_ne!(after[k], 2);
            }
        }
        // The ring moves only the removed endpoint's keys; Maglev may move a few more
        // (the paper's "minimal disruption" is near-minimal, not minimal).
        match strategy {
            Strategy::RingHash => assert_eq!(moved_elsewhere, 0),
            _ => assert!(moved_elsewhere <= 10, "{strategy}: {moved_elsewhere}"),
        }
        // Put it back: the original mapping returns.
        changes.insert(2, Echo::new(2, 1));
        settle(&mut b).await;
        let back: Vec<u32> = (0..1_000).map(|k| send(&mut b, k)).collect();
        assert_eq!(before, back, "{strategy}");
    }

    // Keyless requests use the fallback (round robin by default).
    let layer = BalanceLayer::new(Maglev::new(|_: &u64| None::<u64>));
    let (_c, mut b, _) = setup(layer, &[1, 1, 1]);
    settle(&mut b).await;
    let c = counts(&mut b, 300);
    assert!(c.values().all(|&v| v == 100), "{c:?}");
    let layer = BalanceLayer::new(RingHash::with_fallback(
        |_: &u64| None::<u64>,
        Random::seeded(1),
    ));
    let (_c, mut b, _) = setup(layer, &[1, 1, 1]);
    settle(&mut b).await;
    assert_eq!(counts(&mut b, 300).len(), 3);
}

#[tokio::test]
async fn hasher_skips_an_endpoint_that_is_not_ready() {
    let layer = BalanceLayer::new(Maglev::new(key_fn));
    let (_c, mut b, echoes) = setup(layer, &[1, 1, 1]);
    settle(&mut b).await;
    let before: Vec<u32> = (0..300).map(|k| send(&mut b, k)).collect();
    echoes[0].set_ready(false);
    let during: Vec<u32> = (0..300).map(|k| send(&mut b, k)).collect();
    for k in 0..300 {
        assert_ne!(during[k], 0);
        if before[k] != 0 {
            assert_eq!(before[k], during[k]);
        }
    }
}

#[tokio::test]
async fn strategies_by_name() {
    for name in Strategy::NAMES {
        let s: Strategy = name.parse().unwrap();
        assert_eq!(s.name(), name);
        let pick = AnyPick::from_name(name).unwrap().with_key(key_fn).seeded(5);
        let (_c, mut b, _) = setup(BalanceLayer::new(pick), &[1, 2, 3]);
        settle(&mut b).await;
        let c = counts(&mut b, 600);
        assert_eq!(c.values().sum::<usize>(), 600, "{name}");
    }
    let err = AnyPick::<u64>::from_name("fastest").unwrap_err();
    assert_eq!(err.name(), "fastest");
    assert!(err.to_string().contains("\"fastest\""), "{err}");
    assert!(err.to_string().contains("round_robin"), "{err}");
}

/// tower issue #856: after a removal, a pick made before it must not send the request to
/// the endpoint that now sits at the picked index (or to the removed one).
#[tokio::test]
async fn discovery_change_invalidates_cached_pick() {
    let (changes, disco) = discovery::<u32, tower_mesh::balance::WithWeight<_>>();
    let mut handles = Vec::new();
    for id in 0..3u32 {
        let (svc, mut h) = tower_test::mock::pair::<u64, u32>();
        h.allow(10);
        changes.insert(id, tower_mesh::balance::WithWeight::new(svc, 1));
        handles.push(h);
    }
    let mut b = Balance::new(disco, RoundRobin::new());
    // Ready; round robin would pick endpoint 0 next.
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    // Endpoint 0 goes away (its index is reused by endpoint 2 after swap-remove).
    changes.remove(0);
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    assert_eq!(b.len(), 2);
    let _f = b.call(42);
    // Endpoint 0's mock was dropped: it received nothing.
    let mut h0 = handles.remove(0);
    assert!(poll_once(&mut Box::pin(h0.next_request())).is_ready_and_none());
    // Exactly one live endpoint got the request.
    let mut got = 0;
    for h in handles.iter_mut() {
        if let Poll::Ready(Some((req, _send))) = poll_once(&mut Box::pin(h.next_request())) {
            assert_eq!(req, 42);
            got += 1;
        }
    }
    assert_eq!(got, 1);
}

trait ReadyNone {
    fn is_ready_and_none(&self) -> bool;
}

impl<T> ReadyNone for Poll<Option<T>> {
    fn is_ready_and_none(&self) -> bool {
        matches!(self, Poll::Ready(None))
    }
}

#[tokio::test]
async fn endpoint_failing_readiness_is_removed() {
    let (changes, disco) = discovery::<u32, tower_mesh::balance::WithWeight<_>>();
    let mut handles = Vec::new();
    for id in 0..2u32 {
        let (svc, mut h) = tower_test::mock::pair::<u64, u32>();
        h.allow(10);
        changes.insert(id, tower_mesh::balance::WithWeight::new(svc, 1));
        handles.push(h);
    }
    let mut b = Balance::new(disco, RoundRobin::new());
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    // Endpoint 0 takes the request and has no capacity left: not ready until it wakes.
    handles[0].allow(0);
    let _f = b.call(1);
    assert_eq!(b.ready_len(), 1);
    // It wakes with an error: removed at the next poll (or by the worker).
    handles[0].send_error("boom");
    assert!(matches!(poll_ready::<_, u64>(&mut b), Poll::Ready(Ok(()))));
    assert_eq!(b.len(), 1);
    assert_eq!(b.endpoints().key(0), &1);
}

/// Past the bound `poll_ready` is ready and the request fails at once with `NoEndpoints`
/// (tower's `Buffer` would die of an error from `poll_ready`); it stays so until an
/// endpoint is ready again.
#[tokio::test(start_paused = true)]
async fn no_endpoints_fails_requests_fast_after_bound() {
    let (changes, disco) = discovery::<u32, Echo>();
    let mut b = BalanceLayer::new(RoundRobin::new())
        .no_endpoints_timeout(Duration::from_secs(1))
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
        BalanceLayer::new(RoundRobin::new()).no_endpoints_timeout(Duration::MAX),
        BalanceLayer::new(RoundRobin::new()).wait_for_endpoints(),
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
    let layer = BalanceLayer::new(RoundRobin::new()).panic_mode(PanicMode::FailFast);
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
    let layer = BalanceLayer::new(RoundRobin::new()).panic_threshold_percent(0);
    let (_c, mut b, echoes) = setup(layer, &[1, 1, 1, 1]);
    for e in &echoes[1..] {
        e.set_healthy(false);
    }
    let c = counts(&mut b, 100);
    assert_eq!(c[&0], 100);
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_new_endpoint() {
    let layer = BalanceLayer::new(Weighted::new())
        .slow_start(SlowStart::new(Duration::from_secs(10)).min_weight_percent(10));
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
    let layer = BalanceLayer::new(LeastRequests::seeded(4))
        .slow_start(SlowStart::new(Duration::from_secs(10)).min_weight_percent(10));
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
async fn churn(strategy: Strategy, steps: usize, seed: u64, rate: u32, cap: usize) {
    churn_from(strategy, 0, steps, seed, rate, cap).await
}

/// [`churn`], starting from `start` endpoints.
async fn churn_from(
    strategy: Strategy,
    start: u32,
    steps: usize,
    seed: u64,
    rate: u32,
    cap: usize,
) {
    use std::sync::{Arc, Mutex};
    let mut rng = SmallRng::seed_from_u64(seed);
    let live: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let (changes, disco) = discovery::<u32, support::Probe>();
    let pick = AnyPick::new(strategy).with_key(key_fn).seeded(seed);
    let mut b = BalanceLayer::new(pick).build(disco);
    let mut endpoints: HashMap<u32, support::Probe> = HashMap::new();
    let mut next_id = 0u32;
    let mut open = Vec::new();
    let mut served = 0usize;
    let mut failed = 0usize;
    for _ in 0..start {
        let p = support::Probe::new(next_id, rng.random_range(1..5), live.clone());
        live.lock().unwrap().insert(next_id);
        changes.insert(next_id, p.clone());
        endpoints.insert(next_id, p);
        next_id += 1;
    }
    for step in 0..steps {
        let mut roll = rng.random_range(0..100);
        let changes_set = roll <= 8 || roll == 15;
        if changes_set && rate > 1 && rng.random_range(0..rate) != 0 {
            roll = 99; // a request instead
        }
        match roll {
            0..=4 if endpoints.len() < cap => {
                let p = support::Probe::new(next_id, rng.random_range(1..5), live.clone());
                live.lock().unwrap().insert(next_id);
                changes.insert(next_id, p.clone());
                endpoints.insert(next_id, p);
                next_id += 1;
            }
            5..=8 if !endpoints.is_empty() => {
                let id = *endpoints
                    .keys()
                    .nth(rng.random_range(0..endpoints.len()))
                    .unwrap();
                endpoints.remove(&id);
                live.lock().unwrap().remove(&id);
                changes.remove(id);
            }
            9..=14 if !endpoints.is_empty() => {
                let p = endpoints
                    .values()
                    .nth(rng.random_range(0..endpoints.len()))
                    .unwrap();
                p.flip_ready();
            }
            15 if !endpoints.is_empty() => {
                // This endpoint's next readiness check fails: the balancer drops it.
                let id = *endpoints
                    .keys()
                    .nth(rng.random_range(0..endpoints.len()))
                    .unwrap();
                let p = endpoints.remove(&id).unwrap();
                p.fail_next();
                failed += 1;
            }
            16..=40 if !open.is_empty() => {
                let i = rng.random_range(0..open.len());
                let mut f: tower_mesh::balance::future::ResponseFuture<_> = open.swap_remove(i);
                assert!(poll_once(&mut f).is_ready());
            }
            _ => match poll_ready::<_, u64>(&mut b) {
                Poll::Ready(Ok(())) => {
                    open.push(b.call(step as u64));
                    served += 1;
                }
                Poll::Pending if b.endpoints().usable_len() > 0 => {
                    // Endpoints are ready but the strategy's first table is still being
                    // built on the blocking pool: wait for it (the clock does not move
                    // meanwhile).
                    ServiceExt::<u64>::ready(&mut b).await.unwrap();
                }
                Poll::Ready(Err(_)) | Poll::Pending => {}
            },
        }
    }
    assert!(served > steps / 10, "{strategy}: served {served}");
    // Every endpoint still discovered is in the balancer; failed ones are gone once polled.
    let _ = poll_ready::<_, u64>(&mut b);
    assert!(b.len() >= endpoints.len() && b.len() <= endpoints.len() + failed);
}

#[tokio::test(start_paused = true)]
async fn churn_stress() {
    for (i, s) in [
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::LeastRequests,
        Strategy::P2c,
        Strategy::P2cPending,
        Strategy::Random,
    ]
    .into_iter()
    .enumerate()
    {
        churn(s, 100_000, i as u64, 1, 40).await;
    }
    // Least requests indexes more than 64 endpoints with a tree: churn that too.
    churn(Strategy::LeastRequests, 100_000, 99, 1, 150).await;
}

#[tokio::test(start_paused = true)]
async fn churn_stress_hashers() {
    // Rebuilding a hash table costs far more than a pick (a Maglev table has 65,537 slots):
    // change the set 20 (ring) or 100 (Maglev) times less often, for as many steps.
    churn(Strategy::RingHash, 100_000, 11, 20, 40).await;
    churn(Strategy::Maglev, 100_000, 12, 100, 40).await;
    // Maglev fills its tables on the blocking pool while requests go on over the old one:
    // no request may reach a removed endpoint meanwhile either. (From 80 endpoints, the
    // first table is waited for; without it nothing can be served.)
    churn_from(Strategy::Maglev, 80, 20_000, 13, 10, 120).await;
}

/// Peak EWMA steers traffic away from a slow endpoint (paused time, seeded RNG).
#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_avoids_slow_endpoint() {
    use tower::discover::ServiceList;
    use tower_mesh::balance::WithWeight;

    let endpoints: Vec<_> = (0..5u64)
        .map(|i| {
            let latency = Duration::from_millis(if i == 0 { 100 } else { 10 });
            WithWeight::new(
                tower::service_fn(move |_: u64| async move {
                    tokio::time::sleep(latency).await;
                    Ok::<_, std::convert::Infallible>(i)
                }),
                1,
            )
        })
        .collect();
    let mut b = BalanceLayer::new(P2c::peak_ewma().seeded(3)).build(ServiceList::new(endpoints));
    let mut slow = 0;
    for r in 0..1_000u64 {
        if b.ready().await.unwrap().call(r).await.unwrap() == 0 {
            slow += 1;
        }
    }
    // Round robin would send 200 there; the peak estimate keeps it to a handful.
    assert!(slow <= 10, "slow endpoint got {slow} of 1000");
}

/// The per-endpoint counters, read back from a real recorder after real picks: requests
/// per endpoint, the endpoint removed for failing readiness, and a request that found no
/// endpoint.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_count_requests_failures_and_no_endpoints() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use support::Probe;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A recorder for this thread only (the test runs on a current-thread runtime), so
    // other tests' balancers do not count here.
    let _local = metrics::set_default_local_recorder(&recorder);

    let live = std::sync::Arc::new(std::sync::Mutex::new(HashSet::from([0u32, 1, 2])));
    let (changes, disco) = discovery::<u32, Probe>();
    let probes: Vec<Probe> = (0..3).map(|id| Probe::new(id, 1, live.clone())).collect();
    for (id, p) in probes.iter().enumerate() {
        changes.insert(id as u32, p.clone());
    }
    let mut b = BalanceLayer::new(RoundRobin::new())
        .no_endpoints_timeout(Duration::from_secs(1))
        .build(disco);
    let mut picked: HashMap<u32, u64> = HashMap::new();
    for r in 0..30u64 {
        let id = ServiceExt::<u64>::oneshot(&mut b, r).await.unwrap();
        *picked.entry(id).or_default() += 1;
    }
    // Endpoint 2 fails its next readiness check and is removed; the others are drained.
    probes[2].fail_next();
    probes[0].flip_ready();
    probes[1].flip_ready();
    // They woke their poller when they changed: polled again before the next request.
    let err = loop {
        match ServiceExt::<u64>::oneshot(&mut b, 0).await {
            Ok(id) => *picked.entry(id).or_default() += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is::<NoEndpoints>(), "{err}");
    assert_eq!(b.len(), 2);
    let total: u64 = picked.values().sum();
    assert_eq!(total, 30, "{picked:?}");

    let mut requests: HashMap<String, u64> = HashMap::new();
    let (mut failures, mut none) = (HashMap::new(), 0);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let DebugValue::Counter(v) = value else {
            continue;
        };
        let key = key.key();
        let endpoint = key
            .labels()
            .find(|l| l.key() == "endpoint")
            .map(|l| l.value().to_owned());
        match (key.name(), endpoint) {
            ("tower_mesh_balance_requests_total", Some(e)) => {
                requests.insert(e, v);
            }
            ("tower_mesh_balance_endpoint_failures_total", Some(e)) => {
                failures.insert(e, v);
            }
            ("tower_mesh_balance_no_endpoints_total", None) => none += v,
            (name, e) => panic!("unexpected counter {name} {e:?}"),
        }
    }
    let expected: HashMap<String, u64> =
        picked.iter().map(|(id, n)| (id.to_string(), *n)).collect();
    assert_eq!(requests, expected);
    assert_eq!(requests.values().sum::<u64>(), total);
    assert_eq!(failures, HashMap::from([("2".to_owned(), 1)]));
    assert_eq!(none, 1);
}

/// tower's `Buffer` dies for good when its service's `poll_ready` fails. A buffered
/// balancer started before any endpoint exists and left without one past the bound fails
/// those requests (with the typed error, found through the buffer), and serves as soon as
/// an endpoint appears.
#[tokio::test(start_paused = true)]
async fn behind_buffer_started_before_any_endpoint() {
    let (changes, disco) = discovery::<u32, Echo>();
    let balance = BalanceLayer::new(RoundRobin::new())
        .no_endpoints_timeout(Duration::from_secs(1))
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
    let mut b = BalanceLayer::new(Maglev::new(key_fn))
        .wait_for_endpoints()
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
    let balance = BalanceLayer::new(AnyPick::new(Strategy::LeastRequests).seeded(3))
        .no_endpoints_timeout(Duration::from_millis(5))
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
