use std::hash::Hash;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::balance::random::random_usable;
use crate::balance::{Endpoints, Pick, Tracking};

/// Power of two choices: draw two distinct usable endpoints at random and take the one
/// with the lower load per unit of (slow-start) weight (Mitzenmacher, *The Power of Two
/// Choices in Randomized Load Balancing*, 2001; tower's `balance::p2c`).
///
/// Two load metrics:
/// - [`peak_ewma`](P2c::peak_ewma): Finagle's and tower's peak EWMA, cost =
///   EWMA(RTT) × (pending + 1); an unmeasured endpoint starts at the default RTT
///   ([`Builder::default_rtt`](super::Builder::default_rtt)) and estimates decay
///   with [`Builder::decay`](super::Builder::decay);
/// - [`pending_requests`](P2c::pending_requests): requests in flight.
///
/// O(1) per pick. The RNG is injectable.
#[derive(Debug, Clone)]
pub struct P2c<R = SmallRng> {
    rng: R,
    ewma: bool,
}

impl P2c<SmallRng> {
    /// P2C by peak-EWMA latency, RNG seeded from the operating system.
    pub fn peak_ewma() -> Self {
        Self::with_rng(SmallRng::from_rng(&mut rand::rng()), true)
    }

    /// P2C by requests in flight, RNG seeded from the operating system.
    pub fn pending_requests() -> Self {
        Self::with_rng(SmallRng::from_rng(&mut rand::rng()), false)
    }

    /// Use a fixed RNG seed.
    pub fn seeded(self, seed: u64) -> Self {
        Self::with_rng(SmallRng::seed_from_u64(seed), self.ewma)
    }
}

impl<R> P2c<R> {
    /// P2C drawing from `rng`, by peak EWMA if `peak_ewma` else by pending requests.
    pub fn with_rng(rng: R, peak_ewma: bool) -> Self {
        Self {
            rng,
            ewma: peak_ewma,
        }
    }
}

impl<R: Rng, Req> Pick<Req> for P2c<R> {
    fn rebuild<K: Hash>(&mut self, _endpoints: &Endpoints<K>) {}

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, _req: &Req) -> usize {
        let a = random_usable(&mut self.rng, endpoints);
        if endpoints.usable_len() < 2 {
            return a;
        }
        // The second candidate is drawn among the others (no draw is wasted on `a`);
        // an unusable draw falls back to drawing among the usable ones.
        let n = endpoints.len();
        let mut b = self.rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        let mut tries = 0;
        while (b == a || !endpoints.is_usable(b)) && tries < 8 {
            b = random_usable(&mut self.rng, endpoints);
            tries += 1;
        }
        if a == b {
            return a;
        }
        if !self.ewma && !endpoints.is_warming() {
            // Pending requests per unit of weight, compared without a division:
            // (pending_b + 1) / w_b < (pending_a + 1) / w_a.
            let cost = |i: usize| {
                (
                    endpoints.in_flight(i) as u64 + 1,
                    u64::from(endpoints.weight(i)),
                )
            };
            let ((fa, wa), (fb, wb)) = (cost(a), cost(b));
            return if u128::from(fb) * u128::from(wa) < u128::from(fa) * u128::from(wb) {
                b
            } else {
                a
            };
        }
        let now = endpoints.now();
        let cost = |i: usize| {
            let pending = endpoints.in_flight(i) as f64 + 1.0;
            let w = endpoints.effective_weight(i, now) as f64;
            if self.ewma {
                endpoints.rtt_ns(i, now) * pending / w
            } else {
                pending / w
            }
        };
        if cost(b) < cost(a) {
            b
        } else {
            a
        }
    }

    fn tracking(&self) -> Tracking {
        if self.ewma {
            Tracking::Latency
        } else {
            Tracking::InFlight
        }
    }
}
