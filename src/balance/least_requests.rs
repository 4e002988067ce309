use std::hash::Hash;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::balance::{Endpoints, Pick, Tracking};

/// Least requests: the usable endpoint with the fewest requests in flight per unit of
/// (slow-start) weight, `in_flight / weight`, ties broken at random (Envoy's least request
/// with all hosts considered).
///
/// Exact: a pick scans the usable endpoints (O(n), no allocation); compare
/// [`P2c::pending_requests`](super::P2c::pending_requests) for an O(1) approximation.
/// The RNG for ties is injectable.
#[derive(Debug, Clone)]
pub struct LeastRequests<R = SmallRng> {
    rng: R,
}

impl LeastRequests<SmallRng> {
    /// Least requests with a tie-break RNG seeded from the operating system.
    pub fn new() -> Self {
        Self::with_rng(SmallRng::from_rng(&mut rand::rng()))
    }

    /// Least requests with a fixed tie-break seed.
    pub fn seeded(seed: u64) -> Self {
        Self::with_rng(SmallRng::seed_from_u64(seed))
    }
}

impl Default for LeastRequests<SmallRng> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> LeastRequests<R> {
    /// Least requests breaking ties with `rng`.
    pub fn with_rng(rng: R) -> Self {
        Self { rng }
    }
}

impl<R: Rng, Req> Pick<Req> for LeastRequests<R> {
    fn rebuild<K: Hash>(&mut self, _endpoints: &Endpoints<K>) {}

    fn pick<K>(&mut self, endpoints: &Endpoints<K>, _req: &Req) -> usize {
        let warming = endpoints.is_warming();
        let now = if warming { Some(endpoints.now()) } else { None };
        let weight = |i: usize| match now {
            Some(now) => endpoints.effective_weight(i, now),
            None => u64::from(endpoints.weight(i)),
        };
        // First pass: the least loaded endpoint and how many tie with it
        // (compare in_flight_a * w_b with in_flight_b * w_a: no division).
        let mut best: Option<(usize, u64, u64)> = None;
        let mut ties = 0usize;
        for i in 0..endpoints.len() {
            if !endpoints.is_usable(i) {
                continue;
            }
            let f = endpoints.in_flight(i) as u64;
            let w = weight(i);
            match best {
                Some((_, bf, bw)) => {
                    let (lhs, rhs) = (u128::from(f) * u128::from(bw), u128::from(bf) * u128::from(w));
                    if lhs < rhs {
                        best = Some((i, f, w));
                        ties = 1;
                    } else if lhs == rhs {
                        ties += 1;
                    }
                }
                None => {
                    best = Some((i, f, w));
                    ties = 1;
                }
            }
        }
        let (first, bf, bw) = best.expect("pick called with a usable endpoint");
        if ties == 1 {
            return first;
        }
        // Second pass: the r-th of the tied endpoints, r uniform.
        let mut r = self.rng.random_range(0..ties);
        for i in first..endpoints.len() {
            if !endpoints.is_usable(i) {
                continue;
            }
            let (f, w) = (endpoints.in_flight(i) as u64, weight(i));
            if u128::from(f) * u128::from(bw) == u128::from(bf) * u128::from(w) {
                if r == 0 {
                    return i;
                }
                r -= 1;
            }
        }
        first
    }

    fn tracking(&self) -> Tracking {
        Tracking::InFlight
    }
}
