use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::balance::hash::{mix64, stable_hash, Table};
use crate::balance::{Endpoints, HashKey, Pick, RoundRobin, Tracking};

/// Tables up to this size are filled in the call that asks for them (a few milliseconds);
/// larger ones in the background once a first table exists.
const SYNC_MAX: u64 = TABLE_SIZES[0];

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
/// endpoint's later claims.) If the slot's endpoint is not usable, the next slots are tried
/// in turn. Requests without a key go to the fallback strategy `F` (default [`RoundRobin`]).
///
/// Filling a table takes time: about 35 ms for 655,373 slots (66 to 655 endpoints) and about
/// 1 s for 6,553,451 (from 656 endpoints) in a release build. So that a discovery change
/// does not stall the request that follows it, tables beyond 65,537 slots are refilled on a
/// background thread once a first table exists (see
/// [`background_rebuild`](Self::background_rebuild)): until the new table is ready, requests
/// keep the old table's mapping, with removed endpoints skipped like unusable ones and
/// added endpoints not yet chosen by key; then every key moves to its new owner at once, as
/// after a synchronous rebuild. A table is never refilled when only endpoint indices
/// changed (the same endpoints and weights).
pub struct Maglev<E, F = RoundRobin> {
    key: E,
    fallback: F,
    built: Arc<Built>,
    /// Member of `built` → current endpoint index (`NONE`: no longer discovered).
    to_index: Vec<u32>,
    /// Key hash and weight of every current endpoint, by index.
    current: Vec<(u64, u32)>,
    /// A table being filled for `current` (or for an earlier set if `stale`).
    pending: Option<Arc<Rebuild>>,
    /// The endpoint set changed again while `pending` was being filled.
    stale: bool,
    background: bool,
}

/// `to_index` of a member that is no longer discovered.
const NONE: u32 = u32::MAX;

/// A filled table and the endpoints it was filled for.
#[derive(Debug)]
struct Built {
    /// Slot → member (position in `members`).
    table: Table,
    /// Key hash and weight of each member.
    members: Vec<(u64, u32)>,
}

impl Built {
    fn empty() -> Self {
        Built {
            table: Table::Large(Vec::new()),
            members: Vec::new(),
        }
    }

    /// Fills the table for `members` (key hash, weight), in their order.
    fn fill(members: Vec<(u64, u32)>) -> Self {
        let keys: Vec<u64> = members.iter().map(|m| m.0).collect();
        let weights: Vec<u32> = members.iter().map(|m| m.1).collect();
        let m = table_size(members.len());
        // `u16::MAX` marks empty slots while filling, so 2-byte entries need fewer members.
        let table = if keys.len() < usize::from(u16::MAX) {
            Table::Small(fill(&keys, &weights, m))
        } else {
            Table::Large(fill(&keys, &weights, m))
        };
        Built { table, members }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A table being filled on a background thread.
#[derive(Debug)]
struct Rebuild {
    thread: Mutex<Option<JoinHandle<Built>>>,
    built: Mutex<Option<Built>>,
}

impl Rebuild {
    fn start(members: Vec<(u64, u32)>) -> Result<Arc<Self>, Vec<(u64, u32)>> {
        // The members go back to the caller if no thread can be started.
        let shared = Arc::new(Mutex::new(Some(members)));
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("tower-mesh-maglev".into())
            .spawn(move || {
                let members = lock(&for_thread).take().unwrap_or_default();
                Built::fill(members)
            });
        match spawned {
            Ok(thread) => Ok(Arc::new(Rebuild {
                thread: Mutex::new(Some(thread)),
                built: Mutex::new(None),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for a Maglev rebuild; filling in place");
                Err(lock(&shared).take().unwrap_or_default())
            }
        }
    }

    fn is_finished(&self) -> bool {
        lock(&self.thread)
            .as_ref()
            .is_none_or(JoinHandle::is_finished)
    }

    /// Blocks until the table is filled.
    fn wait(&self) {
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            match thread.join() {
                Ok(built) => *lock(&self.built) = Some(built),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// The filled table, if it is ready.
    fn take(&self) -> Option<Built> {
        if !self.is_finished() {
            return None;
        }
        self.wait();
        lock(&self.built).take()
    }
}

/// The table size for `endpoints` endpoints (see [`Maglev::table_size_for`]).
fn table_size(endpoints: usize) -> u64 {
    let want = endpoints as u64 * 1_000;
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| m >= want)
        .unwrap_or(TABLE_SIZES[2])
}

impl<E: Clone, F: Clone> Clone for Maglev<E, F> {
    /// A clone shares the current table; a rebuild in progress stays with the original.
    fn clone(&self) -> Self {
        Maglev {
            key: self.key.clone(),
            fallback: self.fallback.clone(),
            built: self.built.clone(),
            to_index: self.to_index.clone(),
            current: self.current.clone(),
            pending: None,
            stale: false,
            background: self.background,
        }
    }
}

impl<E: fmt::Debug, F: fmt::Debug> fmt::Debug for Maglev<E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("key", &self.key)
            .field("fallback", &self.fallback)
            .field("table_len", &self.built.table.len())
            .field("endpoints", &self.current.len())
            .field("rebuilding", &self.pending.is_some())
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
            built: Arc::new(Built::empty()),
            to_index: Vec::new(),
            current: Vec::new(),
            pending: None,
            stale: false,
            background: true,
        }
    }

    /// Whether tables beyond 65,537 slots are refilled on a background thread once a first
    /// table exists (default on). Off, every rebuild fills the table before the next pick.
    pub fn background_rebuild(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// The table size used for `endpoints` endpoints.
    pub fn table_size_for(endpoints: usize) -> u64 {
        table_size(endpoints)
    }

    /// Number of slots in the lookup table (0 before the first rebuild).
    pub fn table_len(&self) -> usize {
        self.built.table.len()
    }

    /// The current index of the endpoint in slot `slot` of the lookup table, or `None` if
    /// that endpoint is no longer discovered (while a new table is being filled).
    pub fn slot(&self, slot: usize) -> Option<usize> {
        self.index_of(self.built.table.get(slot))
    }

    /// The current index of the endpoint that owns key hash `h` (ignores usability), if
    /// the table is not empty and that endpoint is still discovered.
    pub fn lookup(&self, h: u64) -> Option<usize> {
        if self.built.table.len() == 0 {
            None
        } else {
            self.slot(reduce(h, self.built.table.len()))
        }
    }

    /// Whether a new table is being filled in the background (the next pick after it is
    /// ready switches to it).
    pub fn is_rebuilding(&self) -> bool {
        self.pending.is_some()
    }

    /// Blocks until a table being filled in the background is ready, and switches to it
    /// (for tests and orderly shutdowns; requests never wait for it).
    pub fn wait_for_rebuild(&mut self) {
        if let Some(pending) = &self.pending {
            pending.wait();
        }
        self.land();
    }

    #[inline]
    fn index_of(&self, member: usize) -> Option<usize> {
        match self.to_index[member] {
            NONE => None,
            i => Some(i as usize),
        }
    }

    /// Points every member of the current table at its current endpoint index.
    fn remap(&mut self) {
        let by_hash: HashMap<u64, u32> = self
            .current
            .iter()
            .enumerate()
            .map(|(i, m)| (m.0, i as u32))
            .collect();
        self.to_index.clear();
        self.to_index.extend(
            self.built
                .members
                .iter()
                .map(|m| by_hash.get(&m.0).copied().unwrap_or(NONE)),
        );
    }

    /// Switches to a table filled in the background, if one is ready; starts the next one
    /// if the endpoint set changed again meanwhile.
    fn land(&mut self) {
        let Some(built) = self.pending.as_ref().and_then(|p| p.take()) else {
            return;
        };
        self.pending = None;
        self.built = Arc::new(built);
        self.remap();
        if std::mem::take(&mut self.stale) && !self.table_is_current() {
            self.start_rebuild();
        }
    }

    fn start_rebuild(&mut self) {
        match Rebuild::start(self.current.clone()) {
            Ok(pending) => self.pending = Some(pending),
            Err(members) => self.fill_now(members),
        }
    }

    fn fill_now(&mut self, members: Vec<(u64, u32)>) {
        self.built = Arc::new(Built::fill(members));
        self.pending = None;
        self.stale = false;
        self.remap();
    }

    /// Whether the current table was filled for exactly the current endpoints and weights.
    fn table_is_current(&self) -> bool {
        if self.built.members.len() != self.current.len() {
            return false;
        }
        let mut a = self.built.members.clone();
        let mut b = self.current.clone();
        a.sort_unstable();
        b.sort_unstable();
        a == b
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
        self.current = endpoints
            .keys
            .iter()
            .map(stable_hash)
            .zip(endpoints.weights.iter().copied())
            .collect();
        if self.table_is_current() {
            // The same endpoints (say, one removed for failing readiness and discovered
            // again): only their indices moved.
            self.remap();
            self.pending = None;
            self.stale = false;
            return;
        }
        let background = self.background
            && self.built.table.len() > 0
            && table_size(self.current.len()) > SYNC_MAX;
        if !background {
            self.fill_now(self.current.clone());
            return;
        }
        // Keep serving from the current table, with the new indices, until the new one is
        // filled.
        self.remap();
        if self.pending.is_some() {
            self.stale = true;
        } else {
            self.start_rebuild();
        }
    }

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &Req) -> usize {
        if self.pending.is_some() {
            self.land();
        }
        let Some(h) = self.key.hash_key(req) else {
            return self.fallback.pick(endpoints, req);
        };
        let table = &self.built.table;
        let m = table.len();
        let mut c = reduce(h, m);
        let first = self.to_index[table.get(c)];
        if first != NONE && endpoints.is_usable(first as usize) {
            return first as usize;
        }
        // The slot's endpoint is not usable (or gone): try the next slots in turn.
        for _ in 1..m {
            c += 1;
            if c == m {
                c = 0;
            }
            let i = self.to_index[table.get(c)];
            if i != NONE && endpoints.is_usable(i as usize) {
                return i as usize;
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
