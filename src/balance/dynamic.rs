use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Arc;

use crate::balance::error::UnknownStrategy;
use crate::balance::{
    Endpoints, LeastRequests, Maglev, P2c, Pick, Random, RingHash, RoundRobin, Tracking, Weighted,
};

/// A strategy named at run time, for example in the gateway's per-service configuration.
///
/// Names: `"round_robin"`, `"weighted"`, `"least_requests"`, `"p2c"` (peak EWMA),
/// `"p2c_pending"`, `"random"`, `"ring_hash"`, `"maglev"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// [`RoundRobin`].
    RoundRobin,
    /// [`Weighted`] (smooth weighted round robin).
    Weighted,
    /// [`LeastRequests`].
    LeastRequests,
    /// [`P2c::peak_ewma`].
    P2c,
    /// [`P2c::pending_requests`].
    P2cPending,
    /// [`Random`].
    Random,
    /// [`RingHash`].
    RingHash,
    /// [`Maglev`].
    Maglev,
}

impl Strategy {
    /// Every accepted name, in declaration order.
    pub const NAMES: [&'static str; 8] = [
        "round_robin",
        "weighted",
        "least_requests",
        "p2c",
        "p2c_pending",
        "random",
        "ring_hash",
        "maglev",
    ];

    const ALL: [Strategy; 8] = [
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::LeastRequests,
        Strategy::P2c,
        Strategy::P2cPending,
        Strategy::Random,
        Strategy::RingHash,
        Strategy::Maglev,
    ];

    /// The strategy's configuration name.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|&s| s == self).expect("listed")]
    }

    /// Whether the strategy hashes a request key.
    pub fn is_consistent_hash(self) -> bool {
        matches!(self, Strategy::RingHash | Strategy::Maglev)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .position(|&n| n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| UnknownStrategy { name: s.to_owned() })
    }
}

/// A shared key extractor for [`AnyPick`].
pub type KeyFn<Req> = Arc<dyn Fn(&Req) -> Option<u64> + Send + Sync>;

struct DynKey<Req>(Option<KeyFn<Req>>);

impl<Req> Clone for DynKey<Req> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<Req> fmt::Debug for DynKey<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "DynKey(Some(..))"
        } else {
            "DynKey(None)"
        })
    }
}

impl<Req> crate::balance::HashKey<Req> for DynKey<Req> {
    fn hash_key(&self, req: &Req) -> Option<u64> {
        self.0.as_ref().and_then(|f| f(req))
    }
}

enum Inner<Req> {
    RoundRobin(RoundRobin),
    Weighted(Weighted),
    LeastRequests(LeastRequests),
    P2c(P2c),
    Random(Random),
    RingHash(RingHash<DynKey<Req>>),
    Maglev(Maglev<DynKey<Req>>),
}

/// Any built-in strategy, chosen at run time by [`Strategy`]; dispatch is one `match` per
/// pick. Consistent hashers take their key from the closure given to
/// [`with_key`](AnyPick::with_key) and fall back to round robin without one.
///
/// ```
/// use tower_mesh::balance::{AnyPick, Strategy};
///
/// let strategy: Strategy = "least_requests".parse().unwrap();
/// let pick = AnyPick::<()>::new(strategy);
/// assert_eq!(pick.strategy(), Strategy::LeastRequests);
/// let err = "fastest".parse::<Strategy>().unwrap_err();
/// assert!(err.to_string().contains("\"fastest\""));
/// ```
pub struct AnyPick<Req> {
    strategy: Strategy,
    key: Option<KeyFn<Req>>,
    seed: Option<u64>,
    inner: Inner<Req>,
}

impl<Req> AnyPick<Req> {
    /// The strategy `strategy` with default settings and OS-seeded RNGs.
    pub fn new(strategy: Strategy) -> Self {
        Self::build(strategy, None, None)
    }

    /// Parse a strategy name (see [`Strategy`]).
    pub fn from_name(name: &str) -> Result<Self, UnknownStrategy> {
        Ok(Self::new(name.parse()?))
    }

    /// Give the consistent hashers a request key (ignored by the other strategies).
    pub fn with_key<F>(self, key: F) -> Self
    where
        F: Fn(&Req) -> Option<u64> + Send + Sync + 'static,
    {
        Self::build(self.strategy, Some(Arc::new(key)), self.seed)
    }

    /// Seed every RNG (for tests and simulations).
    pub fn seeded(self, seed: u64) -> Self {
        Self::build(self.strategy, self.key, Some(seed))
    }

    fn build(strategy: Strategy, key: Option<KeyFn<Req>>, seed: Option<u64>) -> Self {
        let inner = match strategy {
            Strategy::RoundRobin => Inner::RoundRobin(RoundRobin::new()),
            Strategy::Weighted => Inner::Weighted(Weighted::new()),
            Strategy::LeastRequests => Inner::LeastRequests(match seed {
                Some(s) => LeastRequests::seeded(s),
                None => LeastRequests::new(),
            }),
            Strategy::P2c | Strategy::P2cPending => {
                let p = if strategy == Strategy::P2c {
                    P2c::peak_ewma()
                } else {
                    P2c::pending_requests()
                };
                Inner::P2c(match seed {
                    Some(s) => p.seeded(s),
                    None => p,
                })
            }
            Strategy::Random => Inner::Random(match seed {
                Some(s) => Random::seeded(s),
                None => Random::new(),
            }),
            Strategy::RingHash => Inner::RingHash(RingHash::new(DynKey(key.clone()))),
            Strategy::Maglev => Inner::Maglev(Maglev::new(DynKey(key.clone()))),
        };
        Self {
            strategy,
            key,
            seed,
            inner,
        }
    }

    /// The chosen strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
}

impl<Req> Clone for Inner<Req> {
    fn clone(&self) -> Self {
        match self {
            Inner::RoundRobin(p) => Inner::RoundRobin(p.clone()),
            Inner::Weighted(p) => Inner::Weighted(p.clone()),
            Inner::LeastRequests(p) => Inner::LeastRequests(p.clone()),
            Inner::P2c(p) => Inner::P2c(p.clone()),
            Inner::Random(p) => Inner::Random(p.clone()),
            Inner::RingHash(p) => Inner::RingHash(p.clone()),
            Inner::Maglev(p) => Inner::Maglev(p.clone()),
        }
    }
}

impl<Req> Clone for AnyPick<Req> {
    fn clone(&self) -> Self {
        Self {
            strategy: self.strategy,
            key: self.key.clone(),
            seed: self.seed,
            inner: self.inner.clone(),
        }
    }
}

impl<Req> fmt::Debug for AnyPick<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyPick")
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl<Req> Pick<Req> for AnyPick<Req> {
    fn rebuild<K: Hash>(&mut self, e: &Endpoints<K>) {
        match &mut self.inner {
            Inner::RoundRobin(p) => Pick::<Req>::rebuild(p, e),
            Inner::Weighted(p) => Pick::<Req>::rebuild(p, e),
            Inner::LeastRequests(p) => Pick::<Req>::rebuild(p, e),
            Inner::P2c(p) => Pick::<Req>::rebuild(p, e),
            Inner::Random(p) => Pick::<Req>::rebuild(p, e),
            Inner::RingHash(p) => p.rebuild(e),
            Inner::Maglev(p) => p.rebuild(e),
        }
    }

    #[inline]
    fn pick<K>(&mut self, e: &Endpoints<K>, req: &Req) -> usize {
        match &mut self.inner {
            Inner::RoundRobin(p) => p.pick(e, req),
            Inner::Weighted(p) => p.pick(e, req),
            Inner::LeastRequests(p) => p.pick(e, req),
            Inner::P2c(p) => p.pick(e, req),
            Inner::Random(p) => p.pick(e, req),
            Inner::RingHash(p) => p.pick(e, req),
            Inner::Maglev(p) => p.pick(e, req),
        }
    }

    fn tracking(&self) -> Tracking {
        match &self.inner {
            Inner::RoundRobin(p) => Pick::<Req>::tracking(p),
            Inner::Weighted(p) => Pick::<Req>::tracking(p),
            Inner::LeastRequests(p) => Pick::<Req>::tracking(p),
            Inner::P2c(p) => Pick::<Req>::tracking(p),
            Inner::Random(p) => Pick::<Req>::tracking(p),
            Inner::RingHash(p) => p.tracking(),
            Inner::Maglev(p) => p.tracking(),
        }
    }

    #[inline]
    fn endpoint_changed<K>(&mut self, e: &Endpoints<K>, i: usize) {
        match &mut self.inner {
            Inner::LeastRequests(p) => Pick::<Req>::endpoint_changed(p, e, i),
            Inner::RingHash(p) => p.endpoint_changed(e, i),
            Inner::Maglev(p) => p.endpoint_changed(e, i),
            _ => {}
        }
    }

    fn wants_completions(&self) -> bool {
        match &self.inner {
            Inner::LeastRequests(p) => Pick::<Req>::wants_completions(p),
            Inner::RingHash(p) => p.wants_completions(),
            Inner::Maglev(p) => p.wants_completions(),
            _ => false,
        }
    }

    fn poll_built(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match &mut self.inner {
            Inner::Weighted(p) => Pick::<Req>::poll_built(p, cx),
            Inner::RingHash(p) => p.poll_built(cx),
            Inner::Maglev(p) => p.poll_built(cx),
            _ => std::task::Poll::Ready(()),
        }
    }

    fn is_rebuilding(&self) -> bool {
        match &self.inner {
            Inner::Weighted(p) => Pick::<Req>::is_rebuilding(p),
            Inner::RingHash(p) => p.is_rebuilding(),
            Inner::Maglev(p) => p.is_rebuilding(),
            _ => false,
        }
    }
}
