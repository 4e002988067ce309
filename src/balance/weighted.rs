use std::collections::BTreeMap;
use std::hash::Hash;
use std::task::{Context, Poll};

use crate::balance::build::Build;
use crate::balance::{Endpoints, Pick};

/// Longest precomputed schedule (entries); larger weight sums pick live in O(n).
const MAX_SCHEDULE: u64 = 1 << 22;

/// Schedules whose computation takes at most about this many steps (period × endpoints,
/// an upper bound) are computed in place; longer ones on tokio's blocking pool.
const SMALL_SCHEDULE_WORK: u64 = 1 << 16;

/// Smooth weighted round robin, nginx's algorithm (`ngx_http_upstream_get_peer` in
/// `ngx_http_upstream_round_robin.c`).
///
/// Each pick adds every endpoint's weight to its running score, takes the endpoint with
/// the highest score (the first on ties) and subtracts the total weight from it. Over a
/// period of `sum(weights)` picks every endpoint gets exactly its weight, interleaved as
/// evenly as possible (weights 5, 1, 1 give `a a b a c a a`).
///
/// The sequence is periodic, so on every rebuild the strategy precomputes one period
/// (weights reduced by their gcd, up to 4 Mi entries) and a pick is one step along it:
/// O(1). Endpoints of equal weight take turns in index order, so the period is computed
/// per distinct weight in O(period × distinct weights), not O(period × endpoints). A
/// period entry whose endpoint is not usable is skipped. While some endpoint is in its
/// slow-start window, or when the period is too long, picks run nginx's loop live over
/// the usable endpoints with their effective weights (O(n)).
///
/// A long schedule (more than about 65,536 steps to compute) is computed on tokio's
/// blocking pool, never on a runtime thread; meanwhile picks run nginx's loop live, so
/// the balancer never waits for it.
#[derive(Debug, Default)]
pub struct Weighted {
    schedule: Vec<u32>,
    pos: usize,
    current: Vec<i64>,
    /// A schedule being computed for the current endpoint set.
    pending: Option<Build<Option<Vec<u32>>>>,
}

impl Clone for Weighted {
    /// A clone shares no schedule being computed; it computes its own on its next rebuild.
    fn clone(&self) -> Self {
        Weighted {
            schedule: self.schedule.clone(),
            pos: self.pos,
            current: self.current.clone(),
            pending: None,
        }
    }
}

impl Weighted {
    /// A smooth weighted round robin.
    pub fn new() -> Self {
        Self::default()
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The gcd of `weights` and the length of one period of weights reduced by it, if it is
/// at most [`MAX_SCHEDULE`].
fn period_len(weights: &[u32]) -> Option<(u64, u64)> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if g == 0 {
        return None;
    }
    let total: u64 = weights.iter().map(|&w| u64::from(w) / g).sum();
    (total <= MAX_SCHEDULE).then_some((g, total))
}

/// One period of nginx's smooth weighted round robin over `weights` (all > 0).
pub(crate) fn swrr_period(weights: &[u32]) -> Option<Vec<u32>> {
    let (g, total) = period_len(weights)?;
    // Group endpoints by weight. Within a group scores differ only by `total * picks`, so
    // the group's best is the member picked least, first in index order: members take
    // turns. Across groups nginx's tie-break (first in list order) is kept by comparing
    // (score, -index).
    let mut groups: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (i, &w) in weights.iter().enumerate() {
        groups.entry(u64::from(w) / g).or_default().push(i as u32);
    }
    struct Group {
        weight: i64,
        members: Vec<u32>,
        next: usize,
        base_picks: i64,
    }
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|(w, members)| Group {
            weight: w as i64,
            members,
            next: 0,
            base_picks: 0,
        })
        .collect();
    let total_i = total as i64;
    let mut out = Vec::with_capacity(total as usize);
    for t in 1..=total_i {
        let mut best: Option<(i64, u32, usize)> = None;
        for (gi, g) in groups.iter().enumerate() {
            let score = t * g.weight - total_i * g.base_picks;
            let idx = g.members[g.next];
            let better = match best {
                None => true,
                Some((s, bi, _)) => score > s || (score == s && idx < bi),
            };
            if better {
                best = Some((score, idx, gi));
            }
        }
        let (_, idx, gi) = best.expect("at least one group");
        out.push(idx);
        let g = &mut groups[gi];
        g.next += 1;
        if g.next == g.members.len() {
            g.next = 0;
            g.base_picks += 1;
        }
    }
    Some(out)
}

impl<Req> Pick<Req> for Weighted {
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        self.current.clear();
        self.current.resize(endpoints.len(), 0);
        self.pos = 0;
        self.schedule.clear();
        // A schedule still being computed is for an older set: its result is dropped.
        self.pending = None;
        if endpoints.is_warming() {
            return;
        }
        let Some((_, period)) = period_len(&endpoints.weights) else {
            return;
        };
        if period.saturating_mul(endpoints.len() as u64) <= SMALL_SCHEDULE_WORK {
            if let Some(s) = swrr_period(&endpoints.weights) {
                self.schedule = s;
            }
        } else {
            let weights = endpoints.weights.clone();
            let build = Build::start(move || swrr_period(&weights));
            if build.is_finished() {
                // Computed in place (outside a runtime).
                self.schedule = build.wait().flatten().unwrap_or_default();
            } else {
                self.pending = Some(build);
            }
        }
    }

    fn poll_built(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(pending) = &self.pending {
            if let Poll::Ready(out) = pending.poll(cx) {
                self.pending = None;
                match out {
                    Some(Some(s)) => {
                        self.schedule = s;
                        self.pos = 0;
                    }
                    Some(None) => {}
                    None => tracing::error!(
                        "computing a weighted round-robin schedule failed; picking live"
                    ),
                }
            }
        }
        // Picks never wait for a schedule: the live loop serves meanwhile.
        Poll::Ready(())
    }

    fn is_rebuilding(&self) -> bool {
        self.pending.is_some()
    }

    fn pick<K>(&mut self, endpoints: &Endpoints<K>, _req: &Req) -> usize {
        if !self.schedule.is_empty() && !endpoints.is_warming() {
            let len = self.schedule.len();
            // Every endpoint appears in the period and one is usable: this terminates.
            loop {
                let i = self.schedule[self.pos] as usize;
                self.pos += 1;
                if self.pos == len {
                    self.pos = 0;
                }
                if endpoints.is_usable(i) {
                    return i;
                }
            }
        }
        // nginx's loop, live.
        let now = endpoints.now();
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..endpoints.len() {
            if !endpoints.is_usable(i) {
                continue;
            }
            let w = endpoints.effective_weight(i, now) as i64;
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best.expect("pick called with a usable endpoint");
        self.current[b] -= total;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's loop, naively.
    fn naive(weights: &[u32]) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut cur = vec![0i64; weights.len()];
        (0..total)
            .map(|_| {
                let mut best = 0;
                for i in 0..weights.len() {
                    cur[i] += i64::from(weights[i]);
                    if cur[i] > cur[best] {
                        best = i;
                    }
                }
                cur[best] -= total;
                best as u32
            })
            .collect()
    }

    #[test]
    fn nginx_example() {
        // a=5, b=1, c=1 -> a a b a c a a
        assert_eq!(swrr_period(&[5, 1, 1]).unwrap(), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn grouped_period_matches_naive_loop() {
        for weights in [
            vec![1, 1, 1],
            vec![3, 1, 2, 3, 1, 7],
            vec![4, 2, 2],
            vec![1, 2, 3, 4, 1, 2, 3, 4, 5, 5],
            vec![10, 1],
        ] {
            let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w))) as u32;
            let reduced: Vec<u32> = weights.iter().map(|w| w / g).collect();
            assert_eq!(
                swrr_period(&weights).unwrap(),
                naive(&reduced),
                "{weights:?}"
            );
        }
    }
}
