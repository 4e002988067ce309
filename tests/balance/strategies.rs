//! Each strategy picks as documented: exact round robin, weights, least requests, P2C, the hashers.

use super::*;

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
