use std::hash::Hash;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::balance::{Endpoints, Pick};

/// Picks a random usable endpoint with probability proportional to its (slow-start)
/// weight.
///
/// Equal weights take O(1) per pick; with unequal weights a pick draws from a cumulative
/// table (built on rebuild) with one binary search. The RNG is injectable
/// ([`with_rng`](Random::with_rng), [`seeded`](Random::seeded)).
#[derive(Debug, Clone)]
pub struct Random<R = SmallRng> {
    rng: R,
    cumulative: Vec<u64>,
}

impl Random<SmallRng> {
    /// A random picker seeded from the operating system.
    pub fn new() -> Self {
        Self::with_rng(SmallRng::from_rng(&mut rand::rng()))
    }

    /// A random picker with a fixed seed (for tests and simulations).
    pub fn seeded(seed: u64) -> Self {
        Self::with_rng(SmallRng::seed_from_u64(seed))
    }
}

impl Default for Random<SmallRng> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Random<R> {
    /// A random picker drawing from `rng`.
    pub fn with_rng(rng: R) -> Self {
        Self {
            rng,
            cumulative: Vec::new(),
        }
    }
}

/// A uniformly random usable endpoint: a few random probes, then a scan from a random
/// start (when most endpoints are not usable).
#[inline]
pub(crate) fn random_usable<K, R: Rng>(rng: &mut R, endpoints: &Endpoints<K>) -> usize {
    let n = endpoints.len();
    for _ in 0..8 {
        let i = rng.random_range(0..n);
        if endpoints.is_usable(i) {
            return i;
        }
    }
    let start = rng.random_range(0..n);
    (start..n)
        .chain(0..start)
        .find(|&i| endpoints.is_usable(i))
        .expect("pick called with a usable endpoint")
}

impl<R: Rng, Req> Pick<Req> for Random<R> {
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        self.cumulative.clear();
        let n = endpoints.len();
        if n == 0 {
            return;
        }
        let w0 = endpoints.weight(0);
        if (1..n).all(|i| endpoints.weight(i) == w0) {
            return;
        }
        let mut acc = 0;
        for i in 0..n {
            acc += u64::from(endpoints.weight(i));
            self.cumulative.push(acc);
        }
    }

    fn pick<K>(&mut self, endpoints: &Endpoints<K>, _req: &Req) -> usize {
        if endpoints.is_warming() {
            // Slow start: weights change with time; draw against live effective weights.
            let now = endpoints.now();
            let total: u64 = (0..endpoints.len())
                .filter(|&i| endpoints.is_usable(i))
                .map(|i| endpoints.effective_weight(i, now))
                .sum();
            let mut x = self.rng.random_range(0..total.max(1));
            for i in 0..endpoints.len() {
                if endpoints.is_usable(i) {
                    let w = endpoints.effective_weight(i, now);
                    if x < w {
                        return i;
                    }
                    x -= w;
                }
            }
            return random_usable(&mut self.rng, endpoints);
        }
        if self.cumulative.is_empty() {
            return random_usable(&mut self.rng, endpoints);
        }
        let total = *self.cumulative.last().expect("non-empty");
        for _ in 0..8 {
            let x = self.rng.random_range(0..total);
            let i = self.cumulative.partition_point(|&c| c <= x);
            if endpoints.is_usable(i) {
                return i;
            }
        }
        random_usable(&mut self.rng, endpoints)
    }
}
