use std::hash::Hash;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::balance::{Endpoints, Pick, Tracking};

/// Least requests: the usable endpoint with the fewest requests in flight per unit of
/// (slow-start) weight, `in_flight / weight`, ties broken at random (Envoy's least request
/// with all hosts considered).
///
/// Exact, in O(log n) per pick beyond 64 endpoints (a plain scan below): the strategy
/// keeps a tournament tree over the endpoints
/// (each node holds the least `in_flight / weight` below it and how many endpoints tie at
/// it), brings it up to date before each pick for the endpoints that were picked, changed
/// readiness or completed a request since the last one (completions are reported through a
/// short lock; a leaf path is walked only as far as nodes change), and descends it to the r-th tied
/// endpoint for a uniformly random r. While an endpoint is in its slow-start window
/// weights change with time, and picks scan the usable endpoints instead (O(n)). Compare
/// [`P2c::pending_requests`](super::P2c::pending_requests) for an O(1) approximation.
/// The RNG for ties is injectable.
#[derive(Debug, Clone)]
pub struct LeastRequests<R = SmallRng> {
    rng: R,
    tree: Tree,
    scratch: Vec<u32>,
    /// Endpoints changed since the last pick, applied to the tree just before the next one.
    pending: Vec<u32>,
    /// The endpoints tied at the least load, in a scan.
    ties: Vec<u32>,
}

/// Up to this many endpoints a scan is cheaper than keeping the tree up to date.
const SCAN_MAX: usize = 64;

/// A node: the least `in_flight / weight` below it as (`in_flight`, `weight`), and how many
/// usable endpoints tie at it. An unusable leaf is (1, 0): infinitely loaded, count 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    f: u32,
    w: u32,
    count: u32,
}

const NONE: Node = Node {
    f: 1,
    w: 0,
    count: 0,
};

impl Node {
    #[inline]
    fn cmp_load(&self, other: &Node) -> std::cmp::Ordering {
        (u64::from(self.f) * u64::from(other.w)).cmp(&(u64::from(other.f) * u64::from(self.w)))
    }

    #[inline]
    fn combine(a: Node, b: Node) -> Node {
        match a.cmp_load(&b) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal => Node {
                count: a.count + b.count,
                ..a
            },
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Tree {
    /// Leaves start at `size` (a power of two); node 1 is the root; empty when not in use.
    nodes: Vec<Node>,
    size: usize,
    len: usize,
}

impl Tree {
    fn build<K>(&mut self, endpoints: &Endpoints<K>) {
        self.len = endpoints.len();
        self.size = self.len.max(1).next_power_of_two();
        self.nodes.clear();
        self.nodes.resize(2 * self.size, NONE);
        for i in 0..self.len {
            self.nodes[self.size + i] = leaf(endpoints, i);
        }
        for n in (1..self.size).rev() {
            self.nodes[n] = Node::combine(self.nodes[2 * n], self.nodes[2 * n + 1]);
        }
    }

    /// Bring leaf `i` up to date, and its ancestors as far as they change.
    #[inline]
    fn update<K>(&mut self, endpoints: &Endpoints<K>, i: usize) {
        if i >= self.len || self.nodes.is_empty() {
            return;
        }
        let mut n = self.size + i;
        let new = leaf(endpoints, i);
        if self.nodes[n] == new {
            return;
        }
        self.nodes[n] = new;
        while n > 1 {
            n /= 2;
            let v = Node::combine(self.nodes[2 * n], self.nodes[2 * n + 1]);
            if self.nodes[n] == v {
                // Every node holds the combination of its children as stored: an unchanged
                // node leaves its ancestors unchanged.
                break;
            }
            self.nodes[n] = v;
        }
    }

    /// The `r`-th endpoint (in index order) among those tied at the minimum.
    #[inline]
    fn nth_min(&self, mut r: u32) -> usize {
        let root = self.nodes[1];
        let mut n = 1;
        while n < self.size {
            let left = self.nodes[2 * n];
            n = if left.count > 0 && left.cmp_load(&root).is_eq() {
                if r < left.count {
                    2 * n
                } else {
                    r -= left.count;
                    2 * n + 1
                }
            } else {
                2 * n + 1
            };
        }
        n - self.size
    }
}

#[inline]
fn leaf<K>(endpoints: &Endpoints<K>, i: usize) -> Node {
    if endpoints.is_usable(i) {
        Node {
            f: endpoints.in_flight(i).min(u32::MAX as usize) as u32,
            w: endpoints.weight(i),
            count: 1,
        }
    } else {
        NONE
    }
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
        Self {
            rng,
            tree: Tree::default(),
            scratch: Vec::new(),
            pending: Vec::new(),
            ties: Vec::new(),
        }
    }
}

impl<R: Rng, Req> Pick<Req> for LeastRequests<R> {
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        self.pending.clear();
        if endpoints.is_warming() || endpoints.len() <= SCAN_MAX {
            self.tree = Tree::default();
        } else {
            self.tree.build(endpoints);
        }
    }

    /// Recorded, and applied to the tree just before the next pick: a picked endpoint turns
    /// unusable, is polled ready again and completes its request in between, and the three
    /// changes then cost one leaf update, none at all if the leaf ends up as it was.
    #[inline]
    fn endpoint_changed<K>(&mut self, endpoints: &Endpoints<K>, i: usize) {
        if self.tree.nodes.is_empty() {
            return;
        }
        self.pending.push(i as u32);
        if self.pending.len() > 2 * self.tree.len + 64 {
            // Many changes without a pick (readiness flapping between picks): apply them.
            for &j in &self.pending {
                self.tree.update(endpoints, j as usize);
            }
            self.pending.clear();
        }
    }

    fn wants_completions(&self) -> bool {
        !self.tree.nodes.is_empty()
    }

    fn pick<K>(&mut self, endpoints: &Endpoints<K>, _req: &Req) -> usize {
        if !self.tree.nodes.is_empty() && !endpoints.is_warming() {
            endpoints.take_completions(&mut self.scratch);
            for &i in self.pending.iter().chain(&self.scratch) {
                self.tree.update(endpoints, i as usize);
            }
            self.pending.clear();
            let count = self.tree.nodes[1].count;
            if count > 0 {
                let r = if count == 1 {
                    0
                } else {
                    self.rng.random_range(0..count)
                };
                return self.tree.nth_min(r);
            }
        }
        self.scan(endpoints)
    }

    fn tracking(&self) -> Tracking {
        Tracking::InFlight
    }
}

impl<R: Rng> LeastRequests<R> {
    /// The O(n) pick: up to 64 endpoints, and while endpoints warm up (weights change
    /// with time).
    fn scan<K>(&mut self, endpoints: &Endpoints<K>) -> usize {
        let warming = endpoints.is_warming();
        let now = if warming { Some(endpoints.now()) } else { None };
        let weight = |i: usize| match now {
            Some(now) => endpoints.effective_weight(i, now),
            None => u64::from(endpoints.weight(i)),
        };
        // One pass: the least loaded endpoints, tied ones collected
        // (compare in_flight_a * w_b with in_flight_b * w_a: no division). (1, 0) is
        // infinitely loaded.
        let (mut bf, mut bw) = (1u64, 0u64);
        self.ties.clear();
        for i in 0..endpoints.len() {
            if !endpoints.is_usable(i) {
                continue;
            }
            let f = endpoints.in_flight(i) as u64;
            let w = weight(i);
            match (u128::from(f) * u128::from(bw)).cmp(&(u128::from(bf) * u128::from(w))) {
                std::cmp::Ordering::Less => {
                    (bf, bw) = (f, w);
                    self.ties.clear();
                    self.ties.push(i as u32);
                }
                std::cmp::Ordering::Equal => self.ties.push(i as u32),
                std::cmp::Ordering::Greater => {}
            }
        }
        // The r-th of the tied endpoints, r uniform.
        match self.ties.len() {
            0 => panic!("pick called with a usable endpoint"),
            1 => self.ties[0] as usize,
            n => self.ties[self.rng.random_range(0..n)] as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::endpoints::{HEALTHY, READY};
    use crate::balance::tests::endpoint_set;

    /// The tree's pick always has the least `in_flight / weight` of the usable endpoints,
    /// under random load, readiness changes and completions.
    #[test]
    fn tree_pick_is_exact() {
        let mut rng = SmallRng::seed_from_u64(5);
        let ids: Vec<u32> = (0..100).collect(); // above SCAN_MAX: the tree is in use
        let mut set = endpoint_set(&ids);
        for i in 0..set.len() {
            set.set_weight(i, rng.random_range(1..5));
        }
        set.loads.collect_completions(true);
        let mut lr = LeastRequests::seeded(1);
        Pick::<()>::rebuild(&mut lr, &set);
        assert!(Pick::<()>::wants_completions(&lr));
        let mut held = Vec::new();
        for _ in 0..20_000 {
            match rng.random_range(0..4) {
                0 => {
                    let i = rng.random_range(0..set.len());
                    let flags = if rng.random_bool(0.8) {
                        READY | HEALTHY
                    } else {
                        0
                    };
                    set.set_flags(i, flags);
                    Pick::<()>::endpoint_changed(&mut lr, &set, i);
                }
                1 if !held.is_empty() => {
                    drop(held.swap_remove(rng.random_range(0..held.len())));
                }
                _ if set.usable_len() > 0 => {
                    let i = Pick::<()>::pick(&mut lr, &set, &());
                    assert!(set.is_usable(i));
                    let ratio = |j: usize| set.in_flight(j) as f64 / f64::from(set.weight(j));
                    let best = (0..set.len())
                        .filter(|&j| set.is_usable(j))
                        .map(ratio)
                        .fold(f64::INFINITY, f64::min);
                    assert_eq!(ratio(i), best);
                    held.push(set.guard(i));
                    Pick::<()>::endpoint_changed(&mut lr, &set, i);
                }
                _ => {}
            }
        }
    }
}
