use std::hash::Hash;

use crate::balance::hash::{first_usable, mix64, stable_hash};
use crate::balance::{Endpoints, HashKey, Pick, RoundRobin, Tracking};

/// Consistent hashing on a ring of weighted virtual nodes, ketama-style (Richard Jones,
/// libketama for last.fm, 2007; Karger et al., *Consistent Hashing and Random Trees*, 1997).
///
/// Each endpoint places `vnodes × weight / mean weight` points on a 64-bit ring, at stable
/// hashes of its key; a request goes to the first point at or after its key hash. Adding
/// or removing one of N endpoints moves about 1/N of the keys. A bucket index over the
/// ring (two to four buckets per point, each remembering the owner of the next point) makes
/// a lookup O(1) expected, usually a single memory access, instead of a binary search. If the owner of the point
/// is not usable, the walk continues clockwise. Requests without a key
/// ([`HashKey::hash_key`] is `None`) go to the fallback strategy `F`
/// (default [`RoundRobin`]).
#[derive(Debug, Clone)]
pub struct RingHash<E, F = RoundRobin> {
    key: E,
    fallback: F,
    vnodes: u32,
    points: Vec<u64>,
    owners: Vec<u32>,
    /// Per bucket of the hash space: (index of the first point at or after the bucket's
    /// start, that point's owner), plus a sentinel.
    buckets: Vec<(u32, u32)>,
    shift: u32,
}

impl<E> RingHash<E, RoundRobin> {
    /// A ring keyed by `key`, 160 virtual nodes per unit of mean weight (ketama's count),
    /// falling back to round robin.
    pub fn new(key: E) -> Self {
        Self::with_fallback(key, RoundRobin::new())
    }
}

impl<E, F> RingHash<E, F> {
    /// A ring keyed by `key` that sends keyless requests to `fallback`.
    pub fn with_fallback(key: E, fallback: F) -> Self {
        Self {
            key,
            fallback,
            vnodes: 160,
            points: Vec::new(),
            owners: Vec::new(),
            buckets: Vec::new(),
            shift: 64,
        }
    }

    /// Virtual nodes per unit of mean weight (at least 1).
    pub fn vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = vnodes.max(1);
        self
    }

    /// The endpoint index for key hash `h`, if the ring is not empty (ignores usability).
    pub fn lookup(&self, h: u64) -> Option<usize> {
        self.slot(h).map(|(_, owner)| owner as usize)
    }

    /// (ring position, owner) of the first point at or after `h`, wrapping around.
    #[inline]
    fn slot(&self, h: u64) -> Option<(usize, u32)> {
        if self.points.is_empty() {
            return None;
        }
        let b = if self.shift >= 64 {
            0
        } else {
            (h >> self.shift) as usize
        };
        let (first, owner) = self.buckets[b];
        if first == self.buckets[b + 1].0 {
            // No point inside this bucket: every hash in it maps to the same point, whose
            // owner the bucket stores (one memory access on the common path).
            let j = first as usize;
            return Some((if j == self.points.len() { 0 } else { j }, owner));
        }
        let mut j = first as usize;
        while j < self.points.len() && self.points[j] < h {
            j += 1;
        }
        let j = if j == self.points.len() { 0 } else { j };
        Some((j, self.owners[j]))
    }
}

impl<E, F, Req> Pick<Req> for RingHash<E, F>
where
    E: HashKey<Req>,
    F: Pick<Req>,
{
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        self.fallback.rebuild(endpoints);
        let n = endpoints.len();
        let mut ring: Vec<(u64, u32)> = Vec::new();
        if n > 0 {
            let total: u64 = endpoints.weights.iter().map(|&w| u64::from(w)).sum();
            for i in 0..n {
                let count = (u64::from(self.vnodes) * u64::from(endpoints.weight(i)) * n as u64
                    / total)
                    .max(1);
                let base = stable_hash(endpoints.key(i));
                for v in 0..count {
                    ring.push((mix64(base ^ mix64(v)), i as u32));
                }
            }
            // Ties (rare) are ordered by index so that the ring does not depend on
            // discovery order for distinct keys.
            ring.sort_unstable();
        }
        self.points = ring.iter().map(|p| p.0).collect();
        self.owners = ring.iter().map(|p| p.1).collect();
        // Bucket index: two to four buckets per point, so most buckets hold no point.
        let bits = (self
            .points
            .len()
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            + 1)
        .min(63);
        self.shift = 64 - bits;
        let nb = 1usize << bits;
        self.buckets.clear();
        self.buckets.reserve(nb + 1);
        let len = self.points.len();
        let owner_at = |j: usize| -> u32 {
            match len {
                0 => 0,
                _ if j == len => self.owners[0],
                _ => self.owners[j],
            }
        };
        let mut j = 0usize;
        for b in 0..nb {
            let start = (b as u64) << self.shift;
            while j < len && self.points[j] < start {
                j += 1;
            }
            self.buckets.push((j as u32, owner_at(j)));
        }
        self.buckets.push((len as u32, owner_at(len)));
    }

    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &Req) -> usize {
        let Some(h) = self.key.hash_key(req) else {
            return self.fallback.pick(endpoints, req);
        };
        let (j, owner) = self.slot(h).expect("pick called with endpoints");
        if endpoints.is_usable(owner as usize) {
            return owner as usize;
        }
        let owners = &self.owners;
        match first_usable(endpoints, self.points.len(), j, |c| owners[c] as usize) {
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
