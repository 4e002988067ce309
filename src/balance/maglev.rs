use std::hash::Hash;

use crate::balance::hash::{first_usable, mix64, stable_hash, Table};
use crate::balance::{Endpoints, HashKey, Pick, RoundRobin, Tracking};

/// Lookup table sizes: primes, the smallest of them at least 1,000 × endpoints is used
/// (the largest beyond that).
pub(crate) const TABLE_SIZES: [u64; 3] = [65_537, 655_373, 6_553_451];

/// Consistent hashing through a Maglev lookup table (Eisenbud et al., *Maglev: A Fast and
/// Reliable Software Network Load Balancer*, NSDI 2016, section 3.4).
///
/// Every endpoint has a permutation of the table slots derived from its key (offset and
/// skip from two stable hashes); round by round, each endpoint tries its next preferred
/// slot and takes it if it is free (a heavier endpoint taking proportionally more turns),
/// until the table is full. A request goes to the slot its key hash maps to (multiply and
/// shift, no division): one lookup, O(1). The table size M is the smallest of 65,537 /
/// 655,373 / 6,553,451 that is at least 1,000 × endpoints. Every endpoint's share of the
/// table is kept within 0.8% of its weight's share, and adding or removing one of N
/// endpoints moves about 1.0–1.1 × 1/N of the keys at N = 100 and 1,000. (The paper's fill,
/// where an endpoint whose preference is taken searches on for a free slot in the same
/// turn, gives exact shares but moved 1.65 × 1/N at N = 1,000: each collision shifts the
/// endpoint's later claims.) A rebuild at 1,000 endpoints takes about 2 s in a release
/// build. If the slot's endpoint is not usable, the next slots
/// are tried in turn. Requests without a key go to the fallback strategy `F` (default
/// [`RoundRobin`]).
#[derive(Debug, Clone)]
pub struct Maglev<E, F = RoundRobin> {
    key: E,
    fallback: F,
    table: Table,
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
            table: Table::Large(Vec::new()),
        }
    }

    /// The table size used for `endpoints` endpoints.
    pub fn table_size_for(endpoints: usize) -> u64 {
        let want = endpoints as u64 * 1_000;
        TABLE_SIZES
            .iter()
            .copied()
            .find(|&m| m >= want)
            .unwrap_or(TABLE_SIZES[2])
    }

    /// Number of slots in the lookup table (0 before the first rebuild).
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// The endpoint index in slot `slot` of the lookup table.
    pub fn slot(&self, slot: usize) -> usize {
        self.table.get(slot)
    }

    /// The endpoint index for key hash `h`, if the table is not empty (ignores usability).
    pub fn lookup(&self, h: u64) -> Option<usize> {
        if self.table.len() == 0 {
            None
        } else {
            Some(self.table.get(reduce(h, self.table.len())))
        }
    }
}

/// Upper and lower bound on an endpoint's share of the table, relative to its weight.
const MAX_SHARE: f64 = 1.008;
const MIN_SHARE: f64 = 0.992;

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
/// claims depend on every earlier collision, which moved 1.65 × 1/N of the keys at
/// N = 1,000. Shares are bounded: an endpoint stops at `MAX_SHARE` of its weight's share,
/// and once the free slots are only just enough to bring every endpoint to `MIN_SHARE` of
/// its share, only the endpoints below it continue.
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
    let floor: Vec<u64> = (0..n).map(|i| (share(i) * MIN_SHARE) as u64).collect();
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
    // Free slots, and slots still needed to bring every endpoint to its floor.
    let mut free = m;
    let mut deficit: u64 = floor.iter().sum();
    let mut last_phase = false;
    while free > 0 {
        if !last_phase && free == deficit {
            // Only just enough free slots left for the floors: the endpoints below theirs
            // take them, one preference per round each.
            last_phase = true;
            active = order
                .iter()
                .copied()
                .filter(|&i| count[i] < floor[i])
                .collect();
            continue;
        }
        if !last_phase {
            if active.is_empty() {
                // Every endpoint at its cap (only with more than m / 125 endpoints): the
                // rest of the table goes to all of them.
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
        }
        let mut k = 0;
        while k < active.len() {
            let i = active[k];
            if !last_phase {
                // Weighted turns: an endpoint tries a preference each time its credit
                // reaches the largest weight (equal weights: one per round).
                credit[i] += u64::from(weights[i]);
                if credit[i] < max_w {
                    k += 1;
                    continue;
                }
                credit[i] -= max_w;
            }
            let c = pos[i];
            pos[i] = if c + skip[i] >= m {
                c + skip[i] - m
            } else {
                c + skip[i]
            };
            if table[c as usize] == T::EMPTY {
                table[c as usize] = T::from_index(i);
                if count[i] < floor[i] {
                    deficit -= 1;
                }
                count[i] += 1;
                free -= 1;
                let limit = if last_phase { floor[i] } else { cap[i] };
                if count[i] >= limit {
                    active.remove(k);
                    if free == 0 || (!last_phase && free == deficit) {
                        break;
                    }
                    continue;
                }
                if free == 0 || (!last_phase && free == deficit) {
                    break;
                }
            }
            k += 1;
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
        let keys: Vec<u64> = endpoints.keys.iter().map(stable_hash).collect();
        let m = Self::table_size_for(keys.len());
        // `u16::MAX` marks empty slots while filling, so 2-byte entries need fewer endpoints.
        self.table = if keys.len() < usize::from(u16::MAX) {
            Table::Small(fill(&keys, &endpoints.weights, m))
        } else {
            Table::Large(fill(&keys, &endpoints.weights, m))
        };
    }

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &Req) -> usize {
        let Some(h) = self.key.hash_key(req) else {
            return self.fallback.pick(endpoints, req);
        };
        let m = self.table.len();
        let c = reduce(h, m);
        let first = self.table.get(c);
        if endpoints.is_usable(first) {
            return first;
        }
        match first_usable(endpoints, m, c, |c| self.table.get(c)) {
            Some(i) => i,
            None => self.fallback.pick(endpoints, req),
        }
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

    fn is_prime(n: u64) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn table_sizes_are_prime_and_chosen_by_count() {
        assert!(TABLE_SIZES.iter().all(|&m| is_prime(m)));
        assert_eq!(Maglev::<(), RoundRobin>::table_size_for(10), 65_537);
        assert_eq!(Maglev::<(), RoundRobin>::table_size_for(65), 65_537);
        assert_eq!(Maglev::<(), RoundRobin>::table_size_for(66), 655_373);
        assert_eq!(Maglev::<(), RoundRobin>::table_size_for(1_000), 6_553_451);
        assert_eq!(Maglev::<(), RoundRobin>::table_size_for(100_000), 6_553_451);
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
            let share = counts[i] as f64 / (unit * w);
            assert!((share - 1.0).abs() < 0.01, "{counts:?}");
        }
    }
}
