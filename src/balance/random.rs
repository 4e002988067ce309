use std::hash::Hash;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::balance::{Endpoints, Pick};

/// Picks a random usable endpoint with probability proportional to its (slow-start)
/// weight.
///
/// O(1) per pick: equal weights draw an index; unequal weights use Walker's alias method
/// (Vose's construction, built on rebuild): draw an index, then keep it or take its alias.
/// While endpoints warm up (slow start) picks draw against live effective weights (O(n)).
/// The RNG is injectable
/// ([`with_rng`](Random::with_rng), [`seeded`](Random::seeded)).
#[derive(Debug, Clone)]
pub struct Random<R = SmallRng> {
    rng: R,
    /// Alias table, one 8-byte entry per endpoint (so a draw touches one cache line):
    /// keep `i` when a 32-bit draw is below `alias[i].keep`, else take `alias[i].alias`.
    alias: Vec<Alias>,
}

/// One column of the alias table.
///
/// A column that is never split keeps its own index as the alias, so its threshold (2^32)
/// can be stored as `u32::MAX`: the one draw at or above it takes the alias, which is the
/// column itself.
#[derive(Debug, Clone, Copy)]
struct Alias {
    keep: u32,
    alias: u32,
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
            alias: Vec::new(),
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
        self.alias.clear();
        let n = endpoints.len();
        if n == 0 {
            return;
        }
        let w0 = endpoints.weight(0);
        if (1..n).all(|i| endpoints.weight(i) == w0) {
            return;
        }
        // Vose: scale weights so they average 2^32; pair each small column with a large one.
        let total: u64 = (0..n).map(|i| u64::from(endpoints.weight(i))).sum();
        let one = 1u128 << 32;
        let mut scaled: Vec<u128> = (0..n)
            .map(|i| u128::from(endpoints.weight(i)) * one * n as u128 / u128::from(total))
            .collect();
        self.alias = (0..n as u32)
            .map(|i| Alias {
                keep: u32::MAX,
                alias: i,
            })
            .collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < one);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            self.alias[s] = Alias {
                keep: scaled[s] as u32,
                alias: l as u32,
            };
            scaled[l] -= one - scaled[s];
            if scaled[l] < one {
                large.pop();
                small.push(l);
            }
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
        if self.alias.is_empty() {
            return random_usable(&mut self.rng, endpoints);
        }
        let n = self.alias.len();
        for _ in 0..8 {
            let i = self.rng.random_range(0..n);
            let x = self.rng.random::<u32>();
            let a = self.alias[i];
            let i = if x < a.keep { i } else { a.alias as usize };
            if endpoints.is_usable(i) {
                return i;
            }
        }
        random_usable(&mut self.rng, endpoints)
    }
}
