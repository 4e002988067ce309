use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use crate::balance::hash::{mix64, Table};
use crate::balance::hashed::{Fill, Hashed};
use crate::balance::{Endpoints, HashKey, Pick, RoundRobin, Tracking};

/// Lookup table sizes: primes, each about twice the one before. The smallest that is at
/// least 100 × endpoints is used (Envoy's advice for its Maglev table), the largest beyond
/// that.
pub(crate) const TABLE_SIZES: [u64; 10] = [
    65_537, 131_101, 262_217, 524_453, 1_048_909, 2_097_829, 4_195_679, 8_391_377, 16_782_781,
    33_565_577,
];

/// Consistent hashing through a Maglev lookup table (Eisenbud et al., *Maglev: A Fast and
/// Reliable Software Network Load Balancer*, NSDI 2016, section 3.4).
///
/// Every endpoint has a permutation of the table slots derived from its key (offset and
/// skip from two stable hashes); round by round, each endpoint tries its next preferred
/// slot and takes it if it is free (a heavier endpoint taking proportionally more turns),
/// until the table is full. A request goes to the slot its key hash maps to (multiply and
/// shift, no division): one lookup, O(1).
///
/// **Table size.** As Envoy advises, the table has at least 100 slots per endpoint: its
/// size M is the smallest prime of a list of roughly doubling primes (65,537, 131,101,
/// 262,217, 524,453, 1,048,909, ... 33,565,577) that is at least 100 × endpoints, so 2 MB
/// at 10,000 endpoints (2-byte entries below 65,535 endpoints). When the endpoint count
/// crosses one of these thresholds the table size changes and most keys move, as with any
/// change of Maglev's M. Every endpoint's share of the table is kept within 0.8% of its
/// weight's share (up to the rounding of one slot), and adding or removing one of N
/// endpoints moves about 1/N of the keys. (The paper's fill, where an endpoint whose
/// preference is taken searches on for a free slot in the same turn, gives exact shares
/// but moves more keys: each collision shifts the endpoint's later claims.)
///
/// **Unusable endpoints.** If the slot's endpoint is not usable, the next slots are tried
/// in turn, at most 64 of them; then, and for requests without a key, the fallback
/// strategy `F` (default [`RoundRobin`]) picks.
///
/// **Building.** Filling a table takes time (milliseconds for 65,537 slots, about a tenth
/// of a second for a million), so every table, the first included, is filled on tokio's
/// blocking pool, never on a runtime thread (outside a runtime, in place). The balancer is
/// not ready until the first table is filled. After a change, requests keep the previous
/// table's mapping, with removed endpoints skipped like unusable ones and added endpoints
/// not yet chosen by key, until the new table is ready; then every key moves to its new
/// owner at once, as after a synchronous rebuild. A table is never refilled when only
/// endpoint indices changed (the same endpoints and weights). A fill that fails (a bug)
/// is logged and the previous table kept.
pub struct Maglev<E, F = RoundRobin> {
    key: E,
    fallback: F,
    table: Hashed<MaglevFill>,
}

/// Maglev's fill and slot mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaglevFill;

impl Fill for MaglevFill {
    fn fill(&self, members: &[(u64, u32)]) -> Table {
        let keys: Vec<u64> = members.iter().map(|m| m.0).collect();
        let weights: Vec<u32> = members.iter().map(|m| m.1).collect();
        let m = table_size(members.len());
        // `u16::MAX` marks empty slots while filling, so 2-byte entries need fewer members.
        if keys.len() < usize::from(u16::MAX) {
            Table::Small(fill(&keys, &weights, m))
        } else {
            Table::Large(fill(&keys, &weights, m))
        }
    }

    #[inline]
    fn slot(h: u64, len: usize) -> usize {
        reduce(h, len)
    }

    fn is_small(&self, _n: usize) -> bool {
        false
    }
}

/// The table size for `endpoints` endpoints (see [`Maglev::table_size_for`]).
fn table_size(endpoints: usize) -> u64 {
    let want = (endpoints as u64).saturating_mul(100);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| m >= want)
        .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1])
}

impl<E: Clone, F: Clone> Clone for Maglev<E, F> {
    /// A clone shares the current table; a rebuild in progress stays with the original.
    fn clone(&self) -> Self {
        Maglev {
            key: self.key.clone(),
            fallback: self.fallback.clone(),
            table: self.table.clone(),
        }
    }
}

impl<E: fmt::Debug, F: fmt::Debug> fmt::Debug for Maglev<E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("key", &self.key)
            .field("fallback", &self.fallback)
            .field("table", &self.table)
            .finish()
    }
}

/// Maps a 64-bit hash onto `0..m` with a multiply and a shift instead of a division
/// (Lemire's fast range reduction).
#[inline]
fn reduce(h: u64, m: usize) -> usize {
    ((u128::from(h) * m as u128) >> 64) as usize
}

impl<E> Maglev<E, RoundRobin> {
    /// A Maglev table keyed by `key`, falling back to round robin.
    pub fn new(key: E) -> Self {
        Self::with_fallback(key, RoundRobin::new())
    }
}

impl<E, F> Maglev<E, F> {
    /// A Maglev table keyed by `key` that sends keyless requests to `fallback`.
    pub fn with_fallback(key: E, fallback: F) -> Self {
        Self {
            key,
            fallback,
            table: Hashed::new(MaglevFill),
        }
    }

    /// Whether tables are filled on tokio's blocking pool (default on). Off, every table is
    /// filled in the call that asks for it, before the next pick: on a runtime thread, that
    /// blocks it for as long as the fill takes (for tests and for callers that build their
    /// balancer off the runtime).
    pub fn background_rebuild(mut self, on: bool) -> Self {
        self.table.background = on;
        self
    }

    /// The table size used for `endpoints` endpoints.
    pub fn table_size_for(endpoints: usize) -> u64 {
        table_size(endpoints)
    }

    /// Number of slots in the lookup table in use (0 before the first table is filled).
    pub fn table_len(&self) -> usize {
        self.table.table_len()
    }

    /// The current index of the endpoint in slot `slot` of the lookup table, or `None` if
    /// that endpoint is no longer discovered (while a new table is being filled).
    pub fn slot(&self, slot: usize) -> Option<usize> {
        self.table.slot_owner(slot)
    }

    /// The current index of the endpoint that owns key hash `h` (ignores usability), if
    /// a table is in use and that endpoint is still discovered.
    pub fn lookup(&self, h: u64) -> Option<usize> {
        self.table.lookup(h)
    }

    /// Whether a new table is being filled in the background (the balancer switches to it
    /// as soon as it is ready, with or without traffic).
    pub fn is_rebuilding(&self) -> bool {
        self.table.is_rebuilding()
    }

    /// Blocks until a table being filled in the background is ready, and switches to it
    /// (for tests and orderly shutdowns; requests never wait for it).
    pub fn wait_for_rebuild(&mut self) {
        self.table.wait_for_rebuild();
    }
}

/// Upper bound on an endpoint's share of the table, relative to its weight's share.
const MAX_SHARE: f64 = 1.01;

/// Fill a Maglev table of size `m` (prime) for endpoints with key hashes `keys` and
/// weights `weights`.
///
/// Every endpoint walks its own permutation of the slots (offset and skip from its key
/// hash), one preference per round, heavier endpoints proportionally more often, in
/// key-hash order within a round, so the table depends on the endpoint set only. Unlike
/// the paper's fill, an endpoint that finds its preferred slot taken does not search on
/// for a free one in the same turn: it tries its next preference in the next round. A slot
/// thus goes to the endpoint that prefers it earliest, as in rendezvous hashing, so a change
/// to one endpoint moves few other keys; the paper's search-on makes every endpoint's later
/// claims depend on every earlier collision. Shares are bounded from above: an endpoint
/// stops at `MAX_SHARE` of its weight's share, so none takes more than 1% over its share
/// of the keys (at 100 slots per endpoint an endpoint may end a few percent under it).
/// Without the bound, shares vary by ±7% at 655 slots per endpoint and ±24% at 131;
/// a lower bound as well (every share within 1%) moves three to five times as many keys as
/// needed at 131 slots per endpoint.
///
/// Entries are of type `T`, which must hold every index below `keys.len()` and `T::EMPTY`
/// besides. Filling a 2-byte table touches half the memory of a 4-byte one, and the fill is
/// bound by memory: every probe lands at random in the table.
pub(crate) fn fill<T: Entry>(keys: &[u64], weights: &[u32], m: u64) -> Vec<T> {
    let n = keys.len();
    if n == 0 {
        return Vec::new();
    }
    let mut table = vec![T::EMPTY; m as usize];
    let offset: Vec<u64> = keys
        .iter()
        .map(|&k| mix64(k ^ 0x6d61_676c_6576) % m)
        .collect();
    let skip: Vec<u64> = keys
        .iter()
        .map(|&k| mix64(k ^ 0x736b_6970) % (m - 1) + 1)
        .collect();
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let share = |i: usize| m as f64 * f64::from(weights[i]) / total as f64;
    let mut cap: Vec<u64> = (0..n)
        .map(|i| ((share(i) * MAX_SHARE) as u64).max(1))
        .collect();
    // Current position in each endpoint's permutation: offset + j * skip (mod m), advanced
    // by one addition instead of a multiply and a division per probe.
    let mut pos = offset;
    let max_w = u64::from(*weights.iter().max().expect("n > 0"));
    let mut credit = vec![0u64; n];
    let mut count = vec![0u64; n];
    // Take turns in key-hash order, so that the table depends on the endpoint set only,
    // not on the order discovery reported it in.
    let mut active: Vec<usize> = (0..n).collect();
    active.sort_by_key(|&i| (keys[i], i));
    let order = active.clone();
    let mut free = m;
    while free > 0 {
        if active.is_empty() {
            // Every endpoint at its cap (the caps' rounding left slots over): the rest of
            // the table goes to all of them.
            cap.iter_mut().for_each(|c| *c = u64::MAX);
            active = order.clone();
        }
        // Skip the rounds in which no endpoint has the credit for a turn (far apart
        // weights, the heavy endpoints at their caps).
        let rounds = active
            .iter()
            .map(|&i| (max_w - credit[i]).div_ceil(u64::from(weights[i])))
            .min()
            .unwrap_or(1);
        if rounds > 1 {
            for &i in &active {
                credit[i] += (rounds - 1) * u64::from(weights[i]);
            }
        }
        // Endpoints at their caps leave the round (kept in order, removed in one pass).
        let mut capped = false;
        for &i in &active {
            // Weighted turns: an endpoint tries a preference each time its credit reaches
            // the largest weight (equal weights: one per round).
            credit[i] += u64::from(weights[i]);
            if credit[i] < max_w {
                continue;
            }
            credit[i] -= max_w;
            let c = pos[i];
            pos[i] = if c + skip[i] >= m {
                c + skip[i] - m
            } else {
                c + skip[i]
            };
            if table[c as usize] == T::EMPTY {
                table[c as usize] = T::from_index(i);
                count[i] += 1;
                free -= 1;
                capped |= count[i] >= cap[i];
                if free == 0 {
                    break;
                }
            }
        }
        if capped {
            active.retain(|&i| count[i] < cap[i]);
        }
    }
    table
}

/// A lookup-table entry: an endpoint index, or empty while the table fills.
pub(crate) trait Entry: Copy + Eq {
    const EMPTY: Self;
    fn from_index(i: usize) -> Self;
}

impl Entry for u16 {
    const EMPTY: Self = u16::MAX;
    #[inline]
    fn from_index(i: usize) -> Self {
        i as u16
    }
}

impl Entry for u32 {
    const EMPTY: Self = u32::MAX;
    #[inline]
    fn from_index(i: usize) -> Self {
        i as u32
    }
}

impl<E, F, Req> Pick<Req> for Maglev<E, F>
where
    E: HashKey<Req>,
    F: Pick<Req>,
{
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        self.fallback.rebuild(endpoints);
        self.table.rebuild(endpoints);
    }

    fn poll_built(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let table = self.table.poll_built(cx);
        let fallback = self.fallback.poll_built(cx);
        if table.is_ready() && fallback.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn is_rebuilding(&self) -> bool {
        self.table.is_rebuilding() || self.fallback.is_rebuilding()
    }

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &Req) -> usize {
        if let Some(h) = self.key.hash_key(req) {
            if let Some(i) = self.table.pick(endpoints, h) {
                return i;
            }
        }
        self.fallback.pick(endpoints, req)
    }

    fn tracking(&self) -> Tracking {
        self.fallback.tracking()
    }

    fn endpoint_changed<K>(&mut self, endpoints: &Endpoints<K>, i: usize) {
        self.fallback.endpoint_changed(endpoints, i);
    }

    fn wants_completions(&self) -> bool {
        self.fallback.wants_completions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::stable_hash;

    fn is_prime(n: u64) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn table_sizes_are_prime_and_chosen_by_count() {
        assert!(TABLE_SIZES.iter().all(|&m| is_prime(m)));
        assert!(TABLE_SIZES.windows(2).all(|w| w[1] > 2 * w[0] - 1));
        let size = Maglev::<(), RoundRobin>::table_size_for;
        assert_eq!(size(10), 65_537);
        assert_eq!(size(655), 65_537);
        assert_eq!(size(656), 131_101);
        assert_eq!(size(1_000), 131_101);
        // Envoy's advice, 100 slots per endpoint: about 2 MB (2-byte entries) at 10,000.
        assert_eq!(size(10_000), 1_048_909);
        assert_eq!(size(1_000_000), 33_565_577);
    }

    #[test]
    fn weighted_shares() {
        let keys: Vec<u64> = (0..4u64).map(|k| stable_hash(&k)).collect();
        let t = fill::<u32>(&keys, &[1, 1, 2, 4], 65_537);
        let mut counts = [0u64; 4];
        for &i in &t {
            counts[i as usize] += 1;
        }
        let unit = 65_537.0 / 8.0;
        for (i, w) in [1.0, 1.0, 2.0, 4.0].iter().enumerate() {
            // At most 1% over the weight's share; the light ones take the rest.
            let share = counts[i] as f64 / (unit * w);
            assert!((0.95..=1.01).contains(&share), "{counts:?}");
        }
    }
}
