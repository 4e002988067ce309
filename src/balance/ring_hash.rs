use std::hash::Hash;
use std::task::{Context, Poll};

use crate::balance::error::BuildError;
use crate::balance::hash::{mix64, Table};
use crate::balance::hashed::{Fill, Hashed};
use crate::balance::{Endpoints, HashKey, Pick, RoundRobin, Tracking};

/// Consistent hashing on a ring of weighted virtual nodes, ketama-style (Richard Jones,
/// libketama for last.fm, 2007; Karger et al., *Consistent Hashing and Random Trees*, 1997).
///
/// Each endpoint places points on a 64-bit ring at stable hashes of its key, in proportion
/// to its weight; a request goes to the first point at or after its key hash. Adding or
/// removing one of N endpoints moves about 1/N of the keys, and removing one moves only
/// its own keys. If the owner of the point is not usable, the walk continues clockwise
/// over at most 64 buckets. Requests without a key ([`HashKey::hash_key`] is `None`), and
/// keys whose walk finds no usable owner, go to the fallback strategy `F` (default
/// [`RoundRobin`]).
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
///
/// **Building.** A ring of more than 16,384 points (about a hundred endpoints at the
/// default `vnodes`) is sorted and tabled on tokio's blocking pool, never on a runtime
/// thread. The balancer is not ready until the first ring is built; after a change,
/// requests keep the previous ring, with removed endpoints' points skipped (their keys go
/// clockwise to the next point, as on the new ring), until the new one is ready.
#[derive(Debug, Clone)]
pub struct RingHash<E, F = RoundRobin> {
    key: E,
    fallback: F,
    table: Hashed<RingFill>,
}

/// The ring's shape and fill.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingFill {
    vnodes: u32,
    max_ring: usize,
}

/// Rings of up to this many points are built in place (well under a millisecond); larger
/// ones on tokio's blocking pool.
const SMALL_RING: u64 = 1 << 14;

impl RingFill {
    fn points(&self, n: usize) -> u64 {
        (u64::from(self.vnodes) * n as u64).min(self.max_ring as u64)
    }
}

impl Fill for RingFill {
    fn fill(&self, members: &[(u64, u32)]) -> Table {
        let n = members.len();
        if n == 0 {
            return Table::Large(Vec::new());
        }
        let total: u64 = members.iter().map(|m| u64::from(m.1)).sum();
        let size = self.points(n);
        let mut ring: Vec<(u64, u32)> = Vec::with_capacity(size as usize + n);
        for (i, &(base, weight)) in members.iter().enumerate() {
            let count = (size * u64::from(weight) / total).max(1);
            for v in 0..count {
                ring.push((mix64(base ^ mix64(v)), i as u32));
            }
        }
        // Ties (rare) are ordered by member position, which follows the key hashes, so the
        // ring depends on the endpoint set only.
        ring.sort_unstable();
        // 2^bits buckets, about four per point; bucket b holds the owner of the first point
        // at or after b's start (wrapping to the first point).
        let bits = (ring.len().next_power_of_two().trailing_zeros() + 2).min(30);
        let shift = 64 - bits;
        let mut table = Vec::with_capacity(1 << bits);
        let mut j = 0usize;
        for b in 0..1u64 << bits {
            let start = b << shift;
            while j < ring.len() && ring[j].0 < start {
                j += 1;
            }
            table.push(ring.get(j).unwrap_or(&ring[0]).1);
        }
        Table::new(table, n)
    }

    /// Bucket of `h` in a table of `len` = 2^bits buckets: its top `bits` bits.
    #[inline]
    fn slot(h: u64, len: usize) -> usize {
        let bits = len.trailing_zeros();
        if bits == 0 {
            0
        } else {
            (h >> (64 - bits)) as usize
        }
    }

    fn is_small(&self, n: usize) -> bool {
        self.points(n) <= SMALL_RING
    }
}

impl<E> RingHash<E, RoundRobin> {
    /// A ring keyed by `key`, 160 virtual nodes per unit of mean weight (ketama's count),
    /// falling back to round robin.
    pub fn new(key: E) -> Self {
        Self::with_fallback(key, RoundRobin::new())
    }
}

/// The largest `max_ring_size`.
const MAX_RING: usize = 1 << 28;

impl<E, F> RingHash<E, F> {
    /// A ring keyed by `key` that sends keyless requests to `fallback`.
    pub fn with_fallback(key: E, fallback: F) -> Self {
        Self {
            key,
            fallback,
            table: Hashed::new(RingFill {
                vnodes: 160,
                max_ring: 1 << 20,
            }),
        }
    }

    /// Virtual nodes per unit of mean weight (default 160).
    ///
    /// # Errors
    ///
    /// [`BuildError`] for 0.
    pub fn vnodes(mut self, vnodes: u32) -> Result<Self, BuildError> {
        if vnodes == 0 {
            return Err(BuildError::new(
                crate::balance::error::COMPONENT,
                "vnodes",
                vnodes,
                "must be at least 1",
            ));
        }
        self.table.kind.vnodes = vnodes;
        Ok(self)
    }

    /// The most points on the ring (default 1,048,576): many endpoints get fewer virtual
    /// nodes each (at least one), which bounds the table's memory (2 or 4 bytes a bucket,
    /// four buckets a point).
    ///
    /// # Errors
    ///
    /// [`BuildError`] for 0 or more than 2^28 (268,435,456).
    pub fn max_ring_size(mut self, points: usize) -> Result<Self, BuildError> {
        if !(1..=MAX_RING).contains(&points) {
            return Err(BuildError::new(
                crate::balance::error::COMPONENT,
                "max_ring_size",
                points,
                "must be 1 to 268435456",
            ));
        }
        self.table.kind.max_ring = points;
        Ok(self)
    }

    /// Whether rings of more than 16,384 points are built on tokio's blocking pool (default
    /// on). Off, every ring is built in the call that asks for it.
    pub fn background_rebuild(mut self, on: bool) -> Self {
        self.table.background = on;
        self
    }

    /// The endpoint index for key hash `h`, if a ring is in use and the owner of `h`'s
    /// point is still discovered (ignores usability).
    pub fn lookup(&self, h: u64) -> Option<usize> {
        self.table.lookup(h)
    }

    /// Number of buckets in the lookup table (0 before the first ring is built).
    pub fn table_len(&self) -> usize {
        self.table.table_len()
    }

    /// Whether a new ring is being built in the background.
    pub fn is_rebuilding(&self) -> bool {
        self.table.is_rebuilding()
    }

    /// Blocks until a ring being built in the background is ready and switches to it (for
    /// tests and orderly shutdowns; requests never wait for it).
    pub fn wait_for_rebuild(&mut self) {
        self.table.wait_for_rebuild();
    }
}

impl<E, F, Req> Pick<Req> for RingHash<E, F>
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
