//! The endpoint set a [`Pick`](super::Pick) strategy chooses from.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

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
    /// A linear ramp over `window`, starting at 10% of the endpoint's weight.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            min_weight_percent: 10,
        }
    }

    /// The share of its weight (1 to 100 percent) an endpoint gets right after insertion.
    pub fn min_weight_percent(mut self, percent: u32) -> Self {
        self.min_weight_percent = percent.clamp(1, 100);
        self
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

/// Per-endpoint load: requests in flight and a peak-EWMA latency estimate.
///
/// The estimate follows Finagle's and tower's peak EWMA: a sample above the estimate
/// replaces it at once (the peak), a lower one is blended in with weight
/// `1 - exp(-elapsed / decay)`, and between samples the estimate decays towards zero with
/// the same time constant so that an idle endpoint is tried again. An endpoint without a
/// sample starts at the configured default RTT.
/// Indices of endpoints whose requests completed, for strategies that keep an index over
/// in-flight counts ([`Pick::wants_completions`](super::Pick::wants_completions)).
#[derive(Debug, Default)]
pub(crate) struct Completions {
    pub(crate) on: AtomicBool,
    list: Mutex<Vec<u32>>,
}

impl Completions {
    fn push(&self, i: u32) {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).push(i);
    }

    /// Swap the pending indices into `buf` (cleared first).
    pub(crate) fn drain_into(&self, buf: &mut Vec<u32>) {
        buf.clear();
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *list, buf);
    }
}

pub(crate) struct Load {
    in_flight: AtomicUsize,
    pub(crate) index: AtomicU32,
    completions: Arc<Completions>,
    /// RTT estimate in nanoseconds (`f64` bits).
    cost: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `epoch`.
    stamp: AtomicU64,
    epoch: Instant,
    decay_ns: f64,
}

impl Load {
    pub(crate) fn new(
        default_rtt: Duration,
        decay: Duration,
        now: Instant,
        completions: Arc<Completions>,
    ) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            index: AtomicU32::new(u32::MAX),
            completions,
            cost: AtomicU64::new((default_rtt.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(0),
            epoch: now,
            decay_ns: (decay.as_nanos() as f64).max(1.0),
        }
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.completions.on.load(Ordering::Relaxed) {
            self.completions.push(self.index.load(Ordering::Relaxed));
        }
    }

    #[inline]
    fn since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The decayed RTT estimate in nanoseconds at `now`.
    ///
    /// Lock-free: the estimate and its timestamp are two atomics, so a read that races
    /// with an update may pair a new estimate with an old stamp (a slightly stronger
    /// decay); tower's version takes a lock per read instead.
    #[inline]
    pub(crate) fn rtt_ns(&self, now: Instant) -> f64 {
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let stamp = self.stamp.load(Ordering::Relaxed);
        let elapsed = self.since_epoch(now).saturating_sub(stamp) as f64;
        if elapsed == 0.0 {
            cost
        } else {
            cost * (-elapsed / self.decay_ns).exp()
        }
    }

    /// Record a round-trip sample (the peak-EWMA update). Concurrent updates may lose one
    /// of the samples.
    pub(crate) fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let t = self.since_epoch(now);
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let elapsed = t.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        let decay = (-elapsed / self.decay_ns).exp();
        let current = cost * decay;
        let next = if sample > current {
            sample
        } else {
            current + (sample - current) * (1.0 - decay)
        };
        self.cost.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(t, Ordering::Relaxed);
    }
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
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
    pub(crate) loads: Vec<Arc<Load>>,
    pub(crate) mask: u8,
    pub(crate) ready: usize,
    pub(crate) ready_healthy: usize,
    pub(crate) slow_start: Option<SlowStart>,
    pub(crate) warm_until: Option<Instant>,
    pub(crate) now: Option<Instant>,
    pub(crate) completions: Arc<Completions>,
}

impl<K> Endpoints<K> {
    pub(crate) fn new(slow_start: Option<SlowStart>) -> Self {
        Self {
            keys: Vec::new(),
            weights: Vec::new(),
            added: Vec::new(),
            flags: Vec::new(),
            loads: Vec::new(),
            mask: READY | HEALTHY,
            ready: 0,
            ready_healthy: 0,
            slow_start,
            warm_until: None,
            now: None,
            completions: Arc::default(),
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
        self.weights[i]
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
                self.weights[i],
                now.saturating_duration_since(self.added[i]),
            ),
            _ => u64::from(self.weights[i]) * 1_000,
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
        self.loads[i].in_flight()
    }

    /// The peak-EWMA round-trip estimate of endpoint `i` at `now`, in nanoseconds
    /// (tracked when the strategy asks for [`Tracking::Latency`](super::Tracking)).
    #[inline]
    pub fn rtt_ns(&self, i: usize, now: Instant) -> f64 {
        self.loads[i].rtt_ns(now)
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
        self.completions.drain_into(buf);
    }

    pub(crate) fn push(&mut self, key: K, weight: u32, now: Instant, load: Arc<Load>) {
        self.keys.push(key);
        self.weights.push(weight.max(1));
        self.added.push(now);
        self.flags.push(0);
        self.loads.push(load);
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
        self.loads.swap_remove(i);
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
