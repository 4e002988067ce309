//! Deterministic checks of the consistent hashers: key movement and Maglev balance.

use std::time::Duration;

use tokio::time::Instant;

use super::endpoints::{Endpoints, HEALTHY, READY};
use super::{mix64, Maglev, Pick, RingHash};

pub(crate) fn endpoint_set(ids: &[u32]) -> Endpoints<u32> {
    let now = Instant::now();
    let mut e = Endpoints::new(None, Duration::from_millis(1), Duration::from_secs(1));
    for &id in ids {
        e.push(id, 1, now);
        let i = e.len() - 1;
        e.set_flags(i, READY | HEALTHY);
    }
    e
}

/// Owner key of `samples` key hashes under strategy `lookup` over `ids`.
fn owners<P>(mut p: P, ids: &[u32], samples: u64, lookup: impl Fn(&P, u64) -> usize) -> Vec<u32>
where
    P: Pick<u64>,
{
    let set = endpoint_set(ids);
    p.rebuild(&set);
    (0..samples)
        .map(|k| *set.key(lookup(&p, mix64(k))))
        .collect()
}

fn moved(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

/// Mean fraction of keys moved when one endpoint is added to `0..n` (each of `events`
/// different ones in turn) and when one is removed from `0..n` (each of the first
/// `events` in turn).
pub(crate) fn movement<P: Pick<u64> + Clone>(
    p: &P,
    n: u32,
    events: u32,
    samples: u64,
    lookup: impl Fn(&P, u64) -> usize + Copy,
) -> (f64, f64) {
    let base: Vec<u32> = (0..n).collect();
    let o = owners(p.clone(), &base, samples, lookup);
    let (mut add, mut remove) = (0.0, 0.0);
    for j in 0..events {
        let mut added = base.clone();
        added.push(n + j);
        let removed: Vec<u32> = base.iter().copied().filter(|&i| i != j).collect();
        add += moved(&o, &owners(p.clone(), &added, samples, lookup));
        remove += moved(&o, &owners(p.clone(), &removed, samples, lookup));
    }
    (add / f64::from(events), remove / f64::from(events))
}

fn key(r: &u64) -> Option<u64> {
    Some(*r)
}

type KeyFn = fn(&u64) -> Option<u64>;

fn ring() -> RingHash<KeyFn> {
    RingHash::new(key as KeyFn)
}

fn maglev() -> Maglev<KeyFn> {
    Maglev::new(key as KeyFn)
}

#[test]
fn ring_hash_key_movement_near_minimal() {
    for n in [100u32, 1_000] {
        let (add, remove) = movement(&ring(), n, 4, 200_000, |p, h| p.lookup(h).unwrap());
        let bound = 1.2 / f64::from(n);
        assert!(add <= bound, "ring n={n}: add moved {add}, bound {bound}");
        assert!(
            remove <= bound,
            "ring n={n}: remove moved {remove}, bound {bound}"
        );
        assert!(add > 0.5 / f64::from(n) && remove > 0.5 / f64::from(n));
    }
}

/// N = 100: a table of 65,537 slots (655 per endpoint); mean of 8 adds and 8 removes.
#[test]
fn maglev_key_movement_near_minimal_n100() {
    let (add, remove) = movement(&maglev(), 100, 8, 400_000, |p, h| p.lookup(h).unwrap());
    let bound = 1.2 / 100.0;
    assert!(add <= bound, "maglev add moved {add}, bound {bound}");
    assert!(
        remove <= bound,
        "maglev remove moved {remove}, bound {bound}"
    );
}

/// No endpoint's share of the N = 1,000 table (131,101 slots, Envoy's 100 per endpoint)
/// exceeds the mean by more than 1%; the fill bounds shares from above only, so a few end
/// some percent under it.
#[test]
fn maglev_shares_bounded_n1000() {
    let ids: Vec<u32> = (0..1_000).collect();
    let mut m = maglev();
    m.rebuild(&endpoint_set(&ids));
    assert_eq!(m.table_len(), 131_101);
    let mut counts = vec![0u64; ids.len()];
    for c in 0..m.table_len() {
        counts[m.slot(c).unwrap()] += 1;
    }
    let mean = m.table_len() as f64 / ids.len() as f64;
    let max = *counts.iter().max().unwrap() as f64 / mean;
    let min = *counts.iter().min().unwrap() as f64 / mean;
    assert!(max <= 1.01 && min >= 0.8, "max/mean {max}, min/mean {min}");
}

/// At N = 1,000 the table has 131,101 slots (Envoy's 100 per endpoint, 131 each): with
/// shares bounded to 1% over the mean, a change moves about twice the minimal 1/N of the
/// keys (with 6,553,451 slots it moved 1.1 × 1/N; see `benches/README.md`). Mean of 8
/// adds and 8 removes; run with
/// `cargo test --release --all-features --lib -- --ignored maglev_key_movement`.
#[test]
#[ignore = "slow without optimisations; run with --release -- --ignored"]
fn maglev_key_movement_near_minimal_n1000() {
    let (add, remove) = movement(&maglev(), 1_000, 8, 400_000, |p, h| p.lookup(h).unwrap());
    let bound = 2.5 / 1_000.0;
    assert!(add <= bound, "maglev add moved {add}, bound {bound}");
    assert!(
        remove <= bound,
        "maglev remove moved {remove}, bound {bound}"
    );
}

#[test]
fn maglev_table_balance() {
    for n in [10u32, 100] {
        let ids: Vec<u32> = (0..n).collect();
        let set = endpoint_set(&ids);
        let mut m = maglev();
        m.rebuild(&set);
        let mut counts = vec![0u64; n as usize];
        for c in 0..m.table_len() {
            counts[m.slot(c).unwrap()] += 1;
        }
        let mean = m.table_len() as f64 / f64::from(n);
        let max = *counts.iter().max().unwrap() as f64;
        assert!(max / mean <= 1.01, "n={n}: max/mean {}", max / mean);
    }
}

/// A removed endpoint's load slot is not handed to a new endpoint while a request is still
/// in flight on it; once idle it is reused, so churn does not grow the slots without bound.
/// Completions of requests on removed endpoints are not reported as anyone's.
#[test]
fn load_slots_are_reused_only_when_idle() {
    let now = Instant::now();
    let mut set = endpoint_set(&[0, 1, 2]);
    set.loads.collect_completions(true);
    let held = set.guard(1);
    assert_eq!(set.in_flight(1), 1);
    let held_slot = set.hot[1].slot;
    set.swap_remove(1);
    let mut next = 3;
    for _ in 0..1_000 {
        set.push(next, 1, now);
        next += 1;
        let last = set.len() - 1;
        assert_ne!(set.hot[last].slot, held_slot);
        assert_eq!(set.in_flight(last), 0);
        set.swap_remove(0);
    }
    let grown = set.loads.slot_count();
    assert!(grown <= 200, "{grown} slots for 3 endpoints");
    drop(held);
    let mut done = Vec::new();
    set.take_completions(&mut done);
    assert!(done.is_empty(), "{done:?}");
    let mut reused = false;
    for _ in 0..1_000 {
        set.push(next, 1, now);
        next += 1;
        reused |= set.hot[set.len() - 1].slot == held_slot;
        set.swap_remove(0);
    }
    assert!(reused);
    assert_eq!(set.loads.slot_count(), grown);
    // A completion on a live endpoint is reported under its current index.
    drop(set.guard(1));
    set.take_completions(&mut done);
    assert_eq!(done, [1]);
}

/// The load table's segments of doubling size give every slot id its own counter: slots
/// well past the first segments count independently, and a guard outliving the endpoint
/// set (and the balancer) still releases its count.
#[test]
fn load_table_segments_count_every_slot() {
    let ids: Vec<u32> = (0..5_000).collect();
    let set = endpoint_set(&ids);
    let probes = [0, 1, 63, 64, 191, 192, 1_000, 4_031, 4_032, 4_999];
    let held: Vec<_> = probes
        .iter()
        .flat_map(|&i| (0..=i % 3).map(move |_| i))
        .map(|i| set.guard(i))
        .collect();
    for i in 0..set.len() {
        let want = if probes.contains(&i) { i % 3 + 1 } else { 0 };
        assert_eq!(set.in_flight(i), want, "endpoint {i}");
    }
    let table = std::sync::Arc::clone(&set.loads.table);
    drop(set);
    drop(held);
    assert_eq!(std::sync::Arc::strong_count(&table), 1);
}

/// Every `u32` slot id has a segment, and consecutive ids fill each segment in order.
#[test]
fn load_slot_ids_map_onto_segments() {
    use super::load::locate;
    let mut next = (0, 0);
    for slot in (0..100_000).chain(u32::MAX - 100_000..=u32::MAX) {
        let (k, off) = locate(slot);
        if slot < 100_000 {
            assert!(
                next == (k, off) || (off == 0 && k == next.0 + 1),
                "slot {slot}"
            );
            next = (k, off + 1);
        }
        assert!(k < super::load::SEGMENTS && off < 64 << k, "slot {slot}");
    }
}

fn poll_built<P: Pick<u64>>(p: &mut P) -> std::task::Poll<()> {
    let waker = futures_util::task::noop_waker();
    p.poll_built(&mut std::task::Context::from_waker(&waker))
}

/// Inside a runtime every Maglev table, the first included, is filled on tokio's blocking
/// pool: the strategy is not ready until the first one is. After a change, until the new
/// table is ready the old one keeps every key of the endpoints that remain where it was
/// and skips the removed endpoint; then the table is the one a synchronous rebuild makes.
/// A second change while filling is picked up by one more fill; a set that is the same
/// again (only the indices moved) needs none.
#[tokio::test(flavor = "current_thread")]
async fn maglev_fills_tables_off_the_runtime() {
    let ids: Vec<u32> = (0..100).collect();
    let set = endpoint_set(&ids);
    let mut m = maglev();
    m.rebuild(&set);
    assert!(
        m.is_rebuilding(),
        "the first table is filled in the background too"
    );
    assert_eq!(m.table_len(), 0);
    m.wait_for_rebuild();
    assert!(poll_built(&mut m).is_ready());
    assert_eq!(m.table_len(), 65_537);
    let owner =
        |m: &Maglev<KeyFn>, set: &Endpoints<u32>, k: u64| m.lookup(mix64(k)).map(|i| *set.key(i));
    let before: Vec<u32> = (0..20_000).map(|k| owner(&m, &set, k).unwrap()).collect();

    // Remove endpoint 7; the survivors' indices change too.
    let without: Vec<u32> = ids.iter().copied().rev().filter(|&i| i != 7).collect();
    let set2 = endpoint_set(&without);
    m.rebuild(&set2);
    assert!(m.is_rebuilding());
    assert!(
        poll_built(&mut m).is_ready(),
        "the old table serves meanwhile"
    );
    for (k, &was) in before.iter().enumerate() {
        let now = owner(&m, &set2, k as u64);
        if was == 7 {
            assert_eq!(now, None, "key {k} of the removed endpoint");
        } else {
            assert_eq!(now, Some(was), "key {k} stays with its endpoint meanwhile");
        }
    }
    // Picks go on meanwhile, never to the removed endpoint.
    for k in 0..1_000u64 {
        assert_ne!(*set2.key(m.pick(&set2, &mix64(k))), 7);
    }
    m.wait_for_rebuild();
    assert!(!m.is_rebuilding());
    let mut sync = maglev().background_rebuild(false);
    sync.rebuild(&set2);
    assert!(!sync.is_rebuilding());
    for c in 0..m.table_len() {
        assert_eq!(
            m.slot(c).map(|i| *set2.key(i)),
            sync.slot(c).map(|i| *set2.key(i)),
            "slot {c}"
        );
    }

    // The same endpoints in another order: no refill.
    let shuffled: Vec<u32> = without.iter().copied().rev().collect();
    let set3 = endpoint_set(&shuffled);
    m.rebuild(&set3);
    assert!(!m.is_rebuilding());
    assert_eq!(owner(&m, &set3, 1), owner(&sync, &set2, 1));

    // Two changes in a row: the second is filled after the first lands.
    let set4 = endpoint_set(&ids[..90]);
    m.rebuild(&set4);
    let set5 = endpoint_set(&ids[..80]);
    m.rebuild(&set5);
    m.wait_for_rebuild();
    assert!(!m.is_rebuilding());
    let mut sync5 = maglev().background_rebuild(false);
    sync5.rebuild(&set5);
    for k in 0..20_000u64 {
        assert_eq!(owner(&m, &set5, k), owner(&sync5, &set5, k), "key {k}");
    }
}

/// A rollout replaces every endpoint while the new table is being filled: the old table
/// maps every key to a removed endpoint, and a keyed pick gives up after a bounded probe
/// and lets the fallback choose among the new endpoints.
#[tokio::test(flavor = "current_thread")]
async fn maglev_pick_during_a_full_rollout_is_bounded() {
    let old: Vec<u32> = (0..1_000).collect();
    let mut m = maglev();
    m.rebuild(&endpoint_set(&old));
    m.wait_for_rebuild();
    assert_eq!(m.table_len(), 131_101);
    let new: Vec<u32> = (5_000..5_010).collect();
    let set = endpoint_set(&new);
    m.rebuild(&set);
    assert!(m.is_rebuilding());
    assert_eq!(m.lookup(mix64(1)), None, "the old table knows none of them");
    let mut seen = std::collections::HashSet::new();
    for k in 0..1_000u64 {
        seen.insert(*set.key(m.pick(&set, &mix64(k))));
    }
    assert_eq!(seen.len(), new.len(), "the fallback spreads them");
    m.wait_for_rebuild();
    assert!(m.lookup(mix64(1)).is_some());
}

/// Rings of more than 16,384 points are built off the runtime like Maglev tables; small
/// ones in place.
#[tokio::test(flavor = "current_thread")]
async fn ring_builds_large_rings_off_the_runtime() {
    let mut small = ring();
    small.rebuild(&endpoint_set(&(0..10).collect::<Vec<_>>()));
    assert!(!small.is_rebuilding());
    assert!(small.table_len() > 0);

    let ids: Vec<u32> = (0..1_000).collect();
    let set = endpoint_set(&ids);
    let mut r = ring();
    r.rebuild(&set);
    assert!(r.is_rebuilding());
    r.wait_for_rebuild();
    assert!(poll_built(&mut r).is_ready());
    let mut sync = ring().background_rebuild(false);
    sync.rebuild(&set);
    for k in 0..10_000u64 {
        assert_eq!(r.lookup(mix64(k)), sync.lookup(mix64(k)), "key {k}");
    }
}
