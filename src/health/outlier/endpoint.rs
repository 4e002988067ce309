//! One endpoint's state as its calls see it: plain atomics, written as calls complete and read
//! by `poll_ready`, with no lock on the way.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use futures_util::task::AtomicWaker;

use crate::breaker::{Outcome, Record};

use super::detector::Detector;
use super::report::Reason;

/// The permit tag of a call whose failure was a gateway failure.
pub(crate) const GATEWAY: u8 = 1;

/// The two halves of a word counting two things.
#[inline]
fn halves(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// An endpoint's counters and ejection, shared by its services (one per clone), its calls'
/// permits and its detector.
pub(crate) struct Endpoint<K> {
    pub(crate) key: K,
    detector: Weak<Detector<K>>,
    /// This interval's successes and failures; taken by the detector at each evaluation.
    successes: AtomicU64,
    failures: AtomicU64,
    /// The current runs of failures (low half) and gateway failures (high half).
    consecutive: AtomicU64,
    /// While ejected, when the endpoint returns (nanoseconds since the detector's base
    /// instant, never 0); 0 while not ejected.
    pub(crate) ejected_until: AtomicU64,
    /// The task that last polled the endpoint for readiness: woken when the endpoint is
    /// ejected (so a balancer that holds it as ready looks again) and when it returns.
    pub(crate) waker: AtomicWaker,
    /// The consecutive-failure thresholds (0: rule off).
    five: u32,
    gateway: u32,
}

impl<K: fmt::Debug> fmt::Debug for Endpoint<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("key", &self.key)
            .field("ejected", &self.is_ejected())
            .finish_non_exhaustive()
    }
}

impl<K> Endpoint<K> {
    pub(crate) fn new(key: K, detector: Weak<Detector<K>>, five: u32, gateway: u32) -> Self {
        Endpoint {
            key,
            detector,
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            five,
            gateway,
        }
    }

    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Acquire) != 0
    }

    /// Takes this interval's counts: (successes, failures).
    pub(crate) fn take_calls(&self) -> (u64, u64) {
        (
            self.successes.swap(0, Ordering::Relaxed),
            self.failures.swap(0, Ordering::Relaxed),
        )
    }

    /// Ends the runs of failures (on return from an ejection).
    pub(crate) fn reset_runs(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }
}

impl<K> Endpoint<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    /// A failed call: counted, and the runs extended (the gateway run ended by a failure
    /// that was not a gateway failure). A run reaching its threshold (exactly, so a run
    /// trips once) hands the endpoint to the detector.
    #[inline(never)]
    fn failure(&self, gateway: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let step = |run: u64| {
            let (five, gw) = halves(run);
            let gw = if gateway { gw.saturating_add(1) } else { 0 };
            u64::from(five.saturating_add(1)) | (u64::from(gw) << 32)
        };
        let before = self
            .consecutive
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |run| Some(step(run)))
            .unwrap_or_else(|run| run);
        let (five, gw) = halves(step(before));
        let gateway_run = gateway && gw == self.gateway;
        let five_run = five == self.five;
        if !(gateway_run || five_run) {
            return;
        }
        // Both runs may end on one call; a rule not enforced leaves the other its chance
        // (the detector skips an endpoint already ejected).
        if let Some(detector) = self.detector.upgrade() {
            if gateway_run {
                detector.trip(self, Reason::ConsecutiveGatewayFailure { failures: gw });
            }
            if five_run {
                detector.trip(self, Reason::Consecutive5xx { failures: five });
            }
        }
    }
}

impl<K> Record for Endpoint<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    #[inline]
    fn record(&self, outcome: Outcome, tag: u8) {
        match outcome {
            Outcome::Success => {
                self.successes.fetch_add(1, Ordering::Relaxed);
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => self.failure(tag == GATEWAY),
            _ => {}
        }
    }
}

/// One service's hold on its endpoint's place in the detector: while any service for a key
/// (any clone) lives, the key's state is kept; the last one dropped releases it.
pub(crate) struct Membership<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    pub(crate) endpoint: Arc<Endpoint<K>>,
    pub(crate) detector: Arc<Detector<K>>,
}

impl<K> Drop for Membership<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.detector.leave(&self.endpoint);
    }
}

impl<K> fmt::Debug for Membership<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.endpoint.fmt(f)
    }
}
