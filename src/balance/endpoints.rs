//! The endpoint set a [`Pick`](super::Pick) strategy chooses from.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::balance::future::LoadGuard;

pub(crate) const READY: u8 = 1;
pub(crate) const HEALTHY: u8 = 2;

/// Slow start (Envoy): a newly inserted endpoint's effective weight ramps linearly from
/// `min_weight_percent` of its weight to 100% over `window`.
///
/// It applies to every strategy that uses weights at pick time ([`Weighted`](super::Weighted),
/// [`LeastRequests`](super::LeastRequests), [`P2c`](super::P2c), [`Random`](super::Random)).
/// The consistent hashers ([`RingHash`](super::RingHash), [`Maglev`](super::Maglev)) build
/// their tables from the configured weights and do not ramp, as in Envoy: ramping them would
/// move keys twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowStart {
    window: Duration,
    min_weight_percent: u32,
}

impl SlowStart {
    /// A linear ramp over `window` (which must be positive), starting at 10% of the
    /// endpoint's weight. Checked by [`Builder::build`](super::Builder::build).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            min_weight_percent: 10,
        }
    }

    /// The share of its weight (1 to 100 percent; default 10) an endpoint gets right after
    /// insertion. Checked by [`Builder::build`](super::Builder::build).
    pub fn min_weight_percent(mut self, percent: u32) -> Self {
        self.min_weight_percent = percent;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), crate::balance::error::BuildError> {
        use crate::balance::error::BuildError;
        if self.window.is_zero() {
            return Err(BuildError::new(
                "slow_start.window",
                self.window,
                "must be positive",
            ));
        }
        if !(1..=100).contains(&self.min_weight_percent) {
            return Err(BuildError::new(
                "slow_start.min_weight_percent",
                self.min_weight_percent,
                "must be 1 to 100",
            ));
        }
        Ok(())
    }

    /// The ramp duration.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Effective weight, in thousandths, of an endpoint of `weight` that has been in the
    /// set for `age`: `weight * 1000` once the window has passed.
    pub fn effective_weight(&self, weight: u32, age: Duration) -> u64 {
        let full = u64::from(weight) * 1_000;
        if age >= self.window || self.window.is_zero() {
            return full;
        }
        let frac = (age.as_secs_f64() / self.window.as_secs_f64())
            .max(f64::from(self.min_weight_percent) / 100.0)
            .min(1.0);
        ((full as f64 * frac) as u64).max(1)
    }
}

/// Slot ids of endpoints whose requests completed, for strategies that keep an index over
/// in-flight counts ([`Pick::wants_completions`](super::Pick::wants_completions)).
#[derive(Debug, Default)]
pub(crate) struct Completions {
    pub(crate) on: AtomicBool,
    list: Mutex<Vec<u32>>,
}

impl Completions {
    fn push(&self, slot: u32) {
        crate::sync::lock(&self.list).push(slot);
    }

    /// Swap the pending slot ids into `buf` (cleared first).
    fn drain_into(&self, buf: &mut Vec<u32>) {
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
    completions: Completions,
    epoch: Instant,
    decay_ns: f64,
    segments: [OnceLock<Segment>; SEGMENTS],
}

impl LoadTable {
    fn new(epoch: Instant, decay_ns: f64) -> Self {
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
    fn since_epoch(&self, now: Instant) -> u64 {
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
    fn rtt_ns(&self, slot: u32, now: Instant) -> f64 {
        let (seg, off) = self.segment(slot);
        let e = &seg.ewma[off];
        let cost = f64::from_bits(e.cost.load(Ordering::Relaxed));
        let stamp = e.stamp.load(Ordering::Relaxed);
        let elapsed = self.since_epoch(now).saturating_sub(stamp) as f64;
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

    fn reset(&self, slot: u32, default_rtt_ns: f64, now: Instant) {
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
    owner: Vec<u32>,
    free: Vec<u32>,
    retired: Vec<u32>,
    /// Reclaim retired slots once this many are waiting (amortised O(1) per insertion).
    reclaim_at: usize,
    default_rtt_ns: f64,
}

impl Loads {
    fn new(default_rtt: Duration, decay: Duration) -> Self {
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
    fn alloc(&mut self, index: usize, now: Instant) -> u32 {
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
    fn retire(&mut self, slot: u32) {
        self.owner[slot as usize] = u32::MAX;
        self.retired.push(slot);
    }

    /// Move the retired slots without requests in flight to the free list.
    fn reclaim(&mut self) {
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

/// An endpoint's load slot and weight, side by side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hot {
    pub(crate) slot: u32,
    pub(crate) weight: u32,
}

/// The discovered endpoints as a [`Pick`](super::Pick) strategy sees them.
///
/// Endpoints are addressed by a dense index `0..len()`. Indices are stable between two
/// calls to [`Pick::rebuild`](super::Pick::rebuild): every discovery change (and every
/// endpoint removed for a failed readiness check) triggers a rebuild before the next pick,
/// so a strategy never uses an index cached from an older set.
pub struct Endpoints<K> {
    pub(crate) keys: Vec<K>,
    pub(crate) weights: Vec<u32>,
    pub(crate) added: Vec<Instant>,
    pub(crate) flags: Vec<u8>,
    /// Endpoint index → (load slot, weight): what a load-aware pick reads per candidate,
    /// in one cache line.
    pub(crate) hot: Vec<Hot>,
    pub(crate) loads: Loads,
    pub(crate) mask: u8,
    pub(crate) ready: usize,
    pub(crate) ready_healthy: usize,
    pub(crate) slow_start: Option<SlowStart>,
    pub(crate) warm_until: Option<Instant>,
    pub(crate) now: Option<Instant>,
}

impl<K> Endpoints<K> {
    pub(crate) fn new(
        slow_start: Option<SlowStart>,
        default_rtt: Duration,
        decay: Duration,
    ) -> Self {
        Self {
            keys: Vec::new(),
            weights: Vec::new(),
            added: Vec::new(),
            flags: Vec::new(),
            hot: Vec::new(),
            loads: Loads::new(default_rtt, decay),
            mask: READY | HEALTHY,
            ready: 0,
            ready_healthy: 0,
            slow_start,
            warm_until: None,
            now: None,
        }
    }

    /// Number of discovered endpoints.
    #[inline]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no endpoint is discovered.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The discovery key of endpoint `i`.
    #[inline]
    pub fn key(&self, i: usize) -> &K {
        &self.keys[i]
    }

    /// The configured weight of endpoint `i` (at least 1).
    #[inline]
    pub fn weight(&self, i: usize) -> u32 {
        self.hot[i].weight
    }

    pub(crate) fn set_weight(&mut self, i: usize, weight: u32) {
        self.weights[i] = weight.max(1);
        self.hot[i].weight = weight.max(1);
    }

    /// The time of the current pick: read once per request by the balancer when the
    /// strategy tracks latency or an endpoint is warming up, else read now.
    #[inline]
    pub fn now(&self) -> Instant {
        self.now.unwrap_or_else(Instant::now)
    }

    /// Whether some endpoint is still inside its slow-start window.
    ///
    /// While this is `false`, [`effective_weight`](Self::effective_weight) equals
    /// [`weight`](Self::weight) and strategies may use precomputed schedules.
    #[inline]
    pub fn is_warming(&self) -> bool {
        self.warm_until.is_some()
    }

    /// The weight of endpoint `i` after slow start at `now`, in thousandths
    /// (`weight(i) * 1000` when not warming).
    #[inline]
    pub fn effective_weight(&self, i: usize, now: Instant) -> u64 {
        match (self.slow_start, self.warm_until) {
            (Some(ss), Some(_)) => ss.effective_weight(
                self.hot[i].weight,
                now.saturating_duration_since(self.added[i]),
            ),
            _ => u64::from(self.hot[i].weight) * 1_000,
        }
    }

    /// Whether endpoint `i` may be picked now: it is ready and, unless the balancer is in
    /// panic mode, healthy.
    #[inline]
    pub fn is_usable(&self, i: usize) -> bool {
        self.flags[i] & self.mask == self.mask
    }

    /// Number of endpoints that may be picked now (at least 1 whenever `pick` is called).
    #[inline]
    pub fn usable_len(&self) -> usize {
        if self.mask & HEALTHY != 0 {
            self.ready_healthy
        } else {
            self.ready
        }
    }

    /// Whether the balancer is in panic mode (too few healthy endpoints, so unhealthy but
    /// ready endpoints take traffic too).
    #[inline]
    pub fn is_panic(&self) -> bool {
        self.mask & HEALTHY == 0
    }

    /// Requests in flight on endpoint `i` (tracked when the strategy asks for
    /// [`Tracking::InFlight`](super::Tracking) or [`Tracking::Latency`](super::Tracking)).
    #[inline]
    pub fn in_flight(&self, i: usize) -> usize {
        self.loads.table.in_flight(self.hot[i].slot) as usize
    }

    /// The peak-EWMA round-trip estimate of endpoint `i` at `now`, in nanoseconds
    /// (tracked when the strategy asks for [`Tracking::Latency`](super::Tracking)).
    #[inline]
    pub fn rtt_ns(&self, i: usize, now: Instant) -> f64 {
        self.loads.table.rtt_ns(self.hot[i].slot, now)
    }

    /// A guard that counts a request in flight on endpoint `i` until dropped.
    #[inline]
    pub(crate) fn guard(&self, i: usize) -> LoadGuard {
        LoadGuard::new(&self.loads.table, self.hot[i].slot)
    }

    /// Endpoint `i` was replaced (same key, new service): its load starts afresh, and the
    /// requests still in flight on the old service count on a retired slot.
    pub(crate) fn reset_load(&mut self, i: usize, now: Instant) {
        self.loads.retire(self.hot[i].slot);
        self.hot[i].slot = self.loads.alloc(i, now);
    }

    pub(crate) fn set_flags(&mut self, i: usize, flags: u8) {
        let old = self.flags[i];
        if old == flags {
            return;
        }
        if old & READY != 0 {
            self.ready -= 1;
            if old & HEALTHY != 0 {
                self.ready_healthy -= 1;
            }
        }
        if flags & READY != 0 {
            self.ready += 1;
            if flags & HEALTHY != 0 {
                self.ready_healthy += 1;
            }
        }
        self.flags[i] = flags;
    }

    /// Indices of endpoints with requests completed since the last call, written into `buf`
    /// (collected only for strategies whose
    /// [`wants_completions`](super::Pick::wants_completions) is `true`). An index may be
    /// stale (from before the last rebuild) or out of range; treat it as a hint to re-read.
    pub fn take_completions(&self, buf: &mut Vec<u32>) {
        self.loads.table.completions.drain_into(buf);
        // Slot ids to current indices; requests on removed endpoints are dropped.
        let owner = &self.loads.owner;
        buf.retain_mut(|s| {
            *s = owner[*s as usize];
            *s != u32::MAX
        });
    }

    pub(crate) fn push(&mut self, key: K, weight: u32, now: Instant) {
        let slot = self.loads.alloc(self.keys.len(), now);
        self.keys.push(key);
        self.weights.push(weight.max(1));
        self.added.push(now);
        self.flags.push(0);
        self.hot.push(Hot {
            slot,
            weight: weight.max(1),
        });
        if let Some(ss) = self.slow_start {
            let until = now + ss.window;
            if self.warm_until.is_none_or(|w| w < until) {
                self.warm_until = Some(until);
            }
        }
    }

    pub(crate) fn swap_remove(&mut self, i: usize) -> K {
        self.set_flags(i, 0);
        self.weights.swap_remove(i);
        self.added.swap_remove(i);
        self.flags.swap_remove(i);
        self.loads.retire(self.hot.swap_remove(i).slot);
        if let Some(moved) = self.hot.get(i) {
            self.loads.owner[moved.slot as usize] = i as u32;
        }
        self.keys.swap_remove(i)
    }
}

impl<K: fmt::Debug> fmt::Debug for Endpoints<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("keys", &self.keys)
            .field("weights", &self.weights)
            .field("ready", &self.ready)
            .field("ready_healthy", &self.ready_healthy)
            .field("panic", &self.is_panic())
            .finish_non_exhaustive()
    }
}
