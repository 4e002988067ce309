use std::hash::Hash;

use crate::balance::hash::{first_usable, mix64, stable_hash, Table};
use crate::balance::{Endpoints, HashKey, Pick, RoundRobin, Tracking};

/// Consistent hashing on a ring of weighted virtual nodes, ketama-style (Richard Jones,
/// libketama for last.fm, 2007; Karger et al., *Consistent Hashing and Random Trees*, 1997).
///
/// Each endpoint places points on a 64-bit ring at stable hashes of its key, in proportion
/// to its weight; a request goes to the first point at or after its key hash. Adding or
/// removing one of N endpoints moves about 1/N of the keys, and removing one moves only
/// its own keys. If the owner of the point is not usable, the walk continues clockwise.
/// Requests without a key ([`HashKey::hash_key`] is `None`) go to the fallback strategy
/// `F` (default [`RoundRobin`]).
///
/// **Ring size.** [`vnodes`](RingHash::vnodes) points per unit of mean weight (default 160,
/// ketama's count), so `vnodes × endpoints` in all, but at most
/// [`max_ring_size`](RingHash::max_ring_size) (default 1,048,576), as Envoy bounds its
/// ring (its default bound is 8,388,608). Beyond `max_ring_size / vnodes` endpoints
/// (6,553 by default) each endpoint gets fewer points, so shares are less even, and a
/// change to the endpoint count can also move a few points of every endpoint. Below that
/// the ring is exactly ketama's: removing an endpoint moves only its own keys.
///
/// **Lookup.** The ring is stored as a lookup table of 2^k buckets (k = log2 of the ring
/// size + 2, so about four buckets per point), each holding the owner of the first point
/// at or after the bucket's start: point positions are kept at k-bit resolution, and a
/// lookup is one table read (2 bytes a bucket while endpoint indices fit in 16 bits),
/// whatever the endpoint count.
#[derive(Debug, Clone)]
pub struct RingHash<E, F = RoundRobin> {
    key: E,
    fallback: F,
    vnodes: u32,
    max_ring: usize,
    table: Table,
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
            max_ring: 1 << 20,
            table: Table::Large(Vec::new()),
            shift: 64,
        }
    }

    /// Virtual nodes per unit of mean weight (at least 1).
    pub fn vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = vnodes.max(1);
        self
    }

    /// The most points on the ring (default 1,048,576; at most 2^28): many endpoints get
    /// fewer virtual nodes each (at least one), which bounds the table's memory (2 or 4
    /// bytes a bucket, four buckets a point).
    pub fn max_ring_size(mut self, points: usize) -> Self {
        self.max_ring = points.clamp(1, 1 << 28);
        self
    }

    /// The endpoint index for key hash `h`, if the ring is not empty (ignores usability).
    pub fn lookup(&self, h: u64) -> Option<usize> {
        (self.table.len() > 0).then(|| self.table.get(self.bucket(h)))
    }

    /// Number of buckets in the lookup table (0 before the first rebuild).
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    #[inline]
    fn bucket(&self, h: u64) -> usize {
        if self.shift >= 64 {
            0
        } else {
            (h >> self.shift) as usize
        }
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
            let size = (u64::from(self.vnodes) * n as u64).min(self.max_ring as u64);
            for i in 0..n {
                let count = (size * u64::from(endpoints.weight(i)) / total).max(1);
                let base = stable_hash(endpoints.key(i));
                for v in 0..count {
                    ring.push((mix64(base ^ mix64(v)), i as u32));
                }
            }
            // Ties (rare) are ordered by index so that the ring does not depend on
            // discovery order for distinct keys.
            ring.sort_unstable();
        }
        if ring.is_empty() {
            self.table = Table::Large(Vec::new());
            self.shift = 64;
            return;
        }
        // 2^bits buckets, about four per point; bucket b holds the owner of the first point
        // at or after b's start (wrapping to the first point).
        let bits = (ring.len().next_power_of_two().trailing_zeros() + 2).min(30);
        self.shift = 64 - bits;
        let mut table = Vec::with_capacity(1 << bits);
        let mut j = 0usize;
        for b in 0..1u64 << bits {
            let start = b << self.shift;
            while j < ring.len() && ring[j].0 < start {
                j += 1;
            }
            table.push(ring.get(j).unwrap_or(&ring[0]).1);
        }
        self.table = Table::new(table, n);
    }

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &Req) -> usize {
        let Some(h) = self.key.hash_key(req) else {
            return self.fallback.pick(endpoints, req);
        };
        let b = self.bucket(h);
        let first = self.table.get(b);
        if endpoints.is_usable(first) {
            return first;
        }
        let table = &self.table;
        match first_usable(endpoints, table.len(), b, |c| table.get(c)) {
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
