//! The endpoint set a [`Pick`](super::Pick) strategy chooses from.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::balance::future::LoadGuard;
use crate::balance::load::Loads;

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
                crate::balance::error::COMPONENT,
                "slow_start.window",
                self.window,
                "must be positive",
            ));
        }
        if !(1..=100).contains(&self.min_weight_percent) {
            return Err(BuildError::new(
                crate::balance::error::COMPONENT,
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
    /// Each key's [`EndpointId`](super::EndpointId), hashed once when the endpoint joins
    /// (the balancer records one per request that carries an avoid set).
    pub(crate) ids: Vec<super::EndpointId>,
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
    /// `now` in nanoseconds since the load table's epoch, when `now` is set.
    pub(crate) now_ns: Option<u64>,
}

impl<K> Endpoints<K> {
    pub(crate) fn new(
        slow_start: Option<SlowStart>,
        default_rtt: Duration,
        decay: Duration,
    ) -> Self {
        Self {
            keys: Vec::new(),
            ids: Vec::new(),
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
            now_ns: None,
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
        match self.now_ns {
            Some(ns) if self.now == Some(now) => self.loads.table.rtt_ns_at(self.hot[i].slot, ns),
            _ => self.loads.table.rtt_ns(self.hot[i].slot, now),
        }
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

    pub(crate) fn push(&mut self, key: K, weight: u32, now: Instant)
    where
        K: std::hash::Hash,
    {
        let slot = self.loads.alloc(self.keys.len(), now);
        self.ids.push(super::EndpointId::of(&key));
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
        self.ids.swap_remove(i);
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
