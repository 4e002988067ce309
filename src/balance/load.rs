//! Per-endpoint load shared by a balancer and its response futures: requests in flight and
//! peak-EWMA latency, in an append-only table of load slots.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Slot ids of endpoints whose requests completed, for strategies that keep an index over
/// in-flight counts ([`Pick::wants_completions`](super::Pick::wants_completions)).
#[derive(Debug, Default)]
pub(crate) struct Completions {
    pub(crate) on: AtomicBool,
    list: Mutex<Vec<u32>>,
}

impl Completions {
    pub(crate) fn push(&self, slot: u32) {
        crate::sync::lock(&self.list).push(slot);
    }

    /// Swap the pending slot ids into `buf` (cleared first).
    pub(crate) fn drain_into(&self, buf: &mut Vec<u32>) {
        buf.clear();
        let mut list = crate::sync::lock(&self.list);
        std::mem::swap(&mut *list, buf);
    }
}

/// Load slots in the first segment of the [`LoadTable`]; segment `k` holds `CHUNK << k`.
const CHUNK: usize = 64;
const CHUNK_BITS: u32 = CHUNK.trailing_zeros();
/// Enough segments for every `u32` slot id: `CHUNK * (2^27 - 1) > u32::MAX`.
pub(crate) const SEGMENTS: usize = 27;

/// Segment and offset of slot `slot`: segment `k` starts at slot `CHUNK * (2^k - 1)`.
#[inline]
pub(crate) fn locate(slot: u32) -> (usize, usize) {
    let s = slot as usize + CHUNK;
    let k = (usize::BITS - 1 - s.leading_zeros() - CHUNK_BITS) as usize;
    (k, s - (CHUNK << k))
}

/// A peak-EWMA latency estimate: the estimate in nanoseconds (`f64` bits) and when it was
/// last updated, in nanoseconds since the balancer's epoch (16 bytes, four to a cache line).
#[derive(Debug, Default)]
struct Ewma {
    cost: AtomicU64,
    stamp: AtomicU64,
}

/// `CHUNK << k` load slots, stored contiguously: requests in flight (4 bytes each, sixteen
/// to a cache line) and peak-EWMA latency estimates.
struct Segment {
    in_flight: Box<[AtomicU32]>,
    ewma: Box<[Ewma]>,
}

impl Segment {
    fn new(len: usize) -> Self {
        Self {
            in_flight: (0..len).map(|_| AtomicU32::new(0)).collect(),
            ewma: (0..len).map(|_| Ewma::default()).collect(),
        }
    }
}

/// The per-endpoint load of every slot a balancer ever allocated: requests in flight and a
/// peak-EWMA latency estimate each, shared by the balancer and its response guards.
///
/// The estimate follows Finagle's and tower's peak EWMA: a sample above the estimate
/// replaces it at once (the peak), a lower one is blended in with weight
/// `1 - exp(-elapsed / decay)`, and between samples the estimate decays towards zero with
/// the same time constant so that an idle endpoint is tried again. An endpoint without a
/// sample starts at the configured default RTT.
///
/// Storage is append-only: a fixed table of segments of doubling size, each allocated once
/// (lazily, by the balancer) and never moved or freed before the table. A response guard
/// holds one `Arc` on the table and a slot id, so the reference count it takes and drops
/// per request is always the same, hot cache line (not a line at random among the
/// endpoints), the count outlives the endpoint's removal and the balancer itself, and a
/// pick reads small dense arrays instead of chasing one separately allocated load per
/// endpoint. A slot is reused only once no request is in flight on it any more.
pub(crate) struct LoadTable {
    pub(crate) completions: Completions,
    epoch: Instant,
    decay_ns: f64,
    segments: [OnceLock<Segment>; SEGMENTS],
}

impl LoadTable {
    pub(crate) fn new(epoch: Instant, decay_ns: f64) -> Self {
        Self {
            completions: Completions::default(),
            epoch,
            decay_ns,
            segments: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The segment of slot `slot` and the slot's offset in it.
    #[inline]
    fn segment(&self, slot: u32) -> (&Segment, usize) {
        let (k, off) = locate(slot);
        (self.segments[k].get().expect("load slot allocated"), off)
    }

    #[inline]
    pub(crate) fn since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Requests in flight on slot `slot`.
    #[inline]
    pub(crate) fn in_flight(&self, slot: u32) -> u32 {
        let (seg, off) = self.segment(slot);
        seg.in_flight[off].load(Ordering::Relaxed)
    }

    /// A request on slot `slot` started.
    #[inline]
    pub(crate) fn start(&self, slot: u32) {
        let (seg, off) = self.segment(slot);
        seg.in_flight[off].fetch_add(1, Ordering::Relaxed);
    }

    /// A request on slot `slot` ended. Release: a slot seen idle (with Acquire) may be
    /// reset and reused, after the last sample recorded on it.
    #[inline]
    pub(crate) fn end(&self, slot: u32) {
        let (seg, off) = self.segment(slot);
        seg.in_flight[off].fetch_sub(1, Ordering::Release);
        if self.completions.on.load(Ordering::Relaxed) {
            self.completions.push(slot);
        }
    }

    /// The decayed RTT estimate of slot `slot` in nanoseconds at `now`.
    ///
    /// Lock-free: the estimate and its timestamp are two atomics, so a read that races
    /// with an update may pair a new estimate with an old stamp (a slightly stronger
    /// decay); tower's version takes a lock per read instead.
    #[inline]
    pub(crate) fn rtt_ns(&self, slot: u32, now: Instant) -> f64 {
        self.rtt_ns_at(slot, self.since_epoch(now))
    }

    /// [`rtt_ns`](Self::rtt_ns) at `now_ns` nanoseconds since the epoch.
    #[inline]
    pub(crate) fn rtt_ns_at(&self, slot: u32, now_ns: u64) -> f64 {
        let (seg, off) = self.segment(slot);
        let e = &seg.ewma[off];
        let cost = f64::from_bits(e.cost.load(Ordering::Relaxed));
        let stamp = e.stamp.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(stamp) as f64;
        if elapsed == 0.0 {
            cost
        } else {
            cost * (-elapsed / self.decay_ns).exp()
        }
    }

    /// Record a round-trip sample of `rtt_ns` nanoseconds on slot `slot`, taken at `t`
    /// nanoseconds since the epoch (the peak-EWMA update). Concurrent updates may lose one
    /// of the samples.
    pub(crate) fn observe(&self, slot: u32, rtt_ns: u64, t: u64) {
        let (seg, off) = self.segment(slot);
        let e = &seg.ewma[off];
        let sample = rtt_ns as f64;
        let cost = f64::from_bits(e.cost.load(Ordering::Relaxed));
        let elapsed = t.saturating_sub(e.stamp.load(Ordering::Relaxed)) as f64;
        let decay = (-elapsed / self.decay_ns).exp();
        let current = cost * decay;
        let next = if sample > current {
            sample
        } else {
            current + (sample - current) * (1.0 - decay)
        };
        e.cost.store(next.to_bits(), Ordering::Relaxed);
        e.stamp.store(t, Ordering::Relaxed);
    }

    /// Nanoseconds since the table's epoch, now.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.since_epoch(Instant::now())
    }

    /// Nanoseconds since the table's epoch at `at`.
    #[inline]
    pub(crate) fn ns_at(&self, at: Instant) -> u64 {
        self.since_epoch(at)
    }

    pub(crate) fn reset(&self, slot: u32, default_rtt_ns: f64, now: Instant) {
        let (seg, off) = self.segment(slot);
        debug_assert_eq!(seg.in_flight[off].load(Ordering::Relaxed), 0);
        let e = &seg.ewma[off];
        e.cost.store(default_rtt_ns.to_bits(), Ordering::Relaxed);
        e.stamp.store(self.since_epoch(now), Ordering::Relaxed);
    }
}

impl fmt::Debug for LoadTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadTable").finish_non_exhaustive()
    }
}

/// The balancer's load slots: the shared [`LoadTable`], a free list and the slots of
/// removed endpoints that still have requests in flight.
pub(crate) struct Loads {
    pub(crate) table: Arc<LoadTable>,
    /// Slot → endpoint index (`u32::MAX` while the slot is free or retired).
    pub(crate) owner: Vec<u32>,
    free: Vec<u32>,
    retired: Vec<u32>,
    /// Reclaim retired slots once this many are waiting (amortised O(1) per insertion).
    reclaim_at: usize,
    default_rtt_ns: f64,
}

impl Loads {
    pub(crate) fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self {
            table: Arc::new(LoadTable::new(
                Instant::now(),
                (decay.as_nanos() as f64).max(1.0),
            )),
            owner: Vec::new(),
            free: Vec::new(),
            retired: Vec::new(),
            reclaim_at: CHUNK,
            default_rtt_ns: default_rtt.as_nanos() as f64,
        }
    }

    /// Collect the slot ids of completed requests (for
    /// [`Pick::wants_completions`](super::Pick::wants_completions)) or not.
    pub(crate) fn collect_completions(&self, on: bool) {
        let flag = &self.table.completions.on;
        if flag.load(Ordering::Relaxed) != on {
            flag.store(on, Ordering::Relaxed);
        }
    }

    /// A fresh slot for endpoint `index`: no request in flight, the default RTT.
    pub(crate) fn alloc(&mut self, index: usize, now: Instant) -> u32 {
        if self.free.is_empty() && self.retired.len() >= self.reclaim_at {
            self.reclaim();
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(self.owner.len()).expect("fewer than 2^32 load slots");
                let (k, off) = locate(s);
                if off == 0 {
                    self.table.segments[k].get_or_init(|| Segment::new(CHUNK << k));
                }
                self.owner.push(u32::MAX);
                s
            }
        };
        self.table.reset(slot, self.default_rtt_ns, now);
        self.owner[slot as usize] = index as u32;
        slot
    }

    /// Number of slots ever allocated.
    #[cfg(test)]
    pub(crate) fn slot_count(&self) -> usize {
        self.owner.len()
    }

    /// Slot `slot` no longer belongs to an endpoint; it is reused once idle.
    pub(crate) fn retire(&mut self, slot: u32) {
        self.owner[slot as usize] = u32::MAX;
        self.retired.push(slot);
    }

    /// Move the retired slots without requests in flight to the free list.
    pub(crate) fn reclaim(&mut self) {
        let mut k = 0;
        while k < self.retired.len() {
            let (seg, off) = self.table.segment(self.retired[k]);
            // Acquire: pairs with `end`'s Release, so the last sample is written before
            // the slot is reset.
            if seg.in_flight[off].load(Ordering::Acquire) == 0 {
                self.free.push(self.retired.swap_remove(k));
            } else {
                k += 1;
            }
        }
        self.reclaim_at = (2 * self.retired.len()).max(CHUNK);
    }
}

impl fmt::Debug for Loads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loads")
            .field("slots", &self.owner.len())
            .field("free", &self.free.len())
            .field("retired", &self.retired.len())
            .finish_non_exhaustive()
    }
}
