//! Endpoints a request should not go to: the [`Avoid`] request extension and the
//! [`Avoiding`] strategy wrapper that honours it for `http::Request`s.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::balance::{Endpoints, Pick, Tracking};

/// An endpoint as an [`Avoid`] set names it: the [`stable_hash`](super::stable_hash) of
/// its discovery key.
///
/// Two keys with the same 64-bit hash count as one endpoint (at worst, a request avoids
/// an endpoint it did not have to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointId(u64);

impl EndpointId {
    /// The id of the endpoint discovered under `key`.
    #[inline]
    pub fn of<K: Hash + ?Sized>(key: &K) -> Self {
        Self(super::stable_hash(key))
    }
}

/// No endpoint recorded yet, in [`Avoid`]'s shared slot (an id that hashes to it is
/// stored as 1).
const NOT_SERVED: u64 = 0;

/// A request extension listing endpoints a request should not go to, and recording the
/// endpoint it went to.
///
/// Insert it into an `http::Request`'s extensions and balance with a strategy wrapped in
/// [`Avoiding`]: when the strategy picks an endpoint in the set and another usable endpoint
/// is not, the balancer picks that other one instead (it asks the strategy again twice,
/// then takes the first usable endpoint not avoided after the pick, in index order). When
/// every usable endpoint is avoided, the request goes to the strategy's pick anyway: an
/// avoid set never fails a request.
///
/// The balancer records the endpoint it sends the request to in a slot shared by every
/// clone of this value ([`served`](Avoid::served)), so that a retry policy holding a
/// clone of the request learns where the attempt went, whether it failed with a response
/// or an error. The layer of the `retry` module (feature `retry`) manages the set for you.
///
/// ```
/// use tower_mesh::balance::{Avoid, EndpointId};
///
/// let mut avoid = Avoid::new();
/// avoid.insert(EndpointId::of("orders-1"));
/// assert!(avoid.contains(EndpointId::of("orders-1")));
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(avoid);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Avoid {
    ids: Vec<EndpointId>,
    /// Shared by clones: the attempt's request and the copy a retry policy keeps.
    served: Arc<AtomicU64>,
}

impl Avoid {
    /// An empty set, with an empty [`served`](Avoid::served) slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Avoid endpoint `id` (once: inserting an id already there does nothing).
    pub fn insert(&mut self, id: EndpointId) {
        if !self.contains(id) {
            self.ids.push(id);
        }
    }

    /// Whether endpoint `id` is avoided. Linear in the (small) number of ids.
    #[inline]
    pub fn contains(&self, id: EndpointId) -> bool {
        self.ids.contains(&id)
    }

    /// Number of endpoints avoided.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no endpoint is avoided.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The endpoints avoided, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = EndpointId> + '_ {
        self.ids.iter().copied()
    }

    /// The endpoint the balancer last sent a request carrying this set (or a clone of it)
    /// to; `None` before it did.
    pub fn served(&self) -> Option<EndpointId> {
        match self.served.load(Ordering::Acquire) {
            NOT_SERVED => None,
            id => Some(EndpointId(id)),
        }
    }

    pub(crate) fn record(&self, id: EndpointId) {
        let id = if id.0 == NOT_SERVED { 1 } else { id.0 };
        self.served.store(id, Ordering::Release);
    }
}

/// A strategy wrapper that makes the balancer honour the [`Avoid`] extension of
/// `http::Request`s: it picks as `P` does, and tells the balancer where to find the set.
///
/// Without it (and for other request types) the balancer never looks for an avoid set,
/// so requests pay nothing for the feature; with it, a request costs one
/// `extensions().get`, and more only when it carries a set.
///
/// ```
/// use tower_mesh::balance::{Avoiding, BalanceLayer, RoundRobin};
///
/// let layer = BalanceLayer::builder(Avoiding::new(RoundRobin::new())).build()?;
/// # let _ = layer;
/// # Ok::<_, tower_mesh::balance::error::BuildError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Avoiding<P> {
    inner: P,
}

impl<P> Avoiding<P> {
    /// Wrap `inner`.
    pub fn new(inner: P) -> Self {
        Self { inner }
    }

    /// The wrapped strategy.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }

    /// The wrapped strategy, mutably.
    pub fn get_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Unwrap the strategy.
    pub fn into_inner(self) -> P {
        self.inner
    }
}

impl<B, P> Pick<http::Request<B>> for Avoiding<P>
where
    P: Pick<http::Request<B>>,
{
    #[inline]
    fn rebuild<K: Hash>(&mut self, endpoints: &Endpoints<K>) {
        self.inner.rebuild(endpoints);
    }

    #[inline]
    fn pick<K>(&mut self, endpoints: &Endpoints<K>, req: &http::Request<B>) -> usize {
        self.inner.pick(endpoints, req)
    }

    #[inline]
    fn tracking(&self) -> Tracking {
        self.inner.tracking()
    }

    #[inline]
    fn endpoint_changed<K>(&mut self, endpoints: &Endpoints<K>, i: usize) {
        self.inner.endpoint_changed(endpoints, i);
    }

    #[inline]
    fn wants_completions(&self) -> bool {
        self.inner.wants_completions()
    }

    #[inline]
    fn poll_built(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_built(cx)
    }

    #[inline]
    fn is_rebuilding(&self) -> bool {
        self.inner.is_rebuilding()
    }

    #[inline]
    fn needs_rebuild(&self) -> bool {
        self.inner.needs_rebuild()
    }

    #[inline]
    fn avoid<'r>(&self, req: &'r http::Request<B>) -> Option<&'r Avoid> {
        req.extensions().get::<Avoid>()
    }
}

/// How many times the strategy is asked again before scanning.
const REPICKS: usize = 2;

/// The endpoint for a request whose strategy picked `i`, which `avoid` lists: another
/// usable endpoint not in `avoid` if there is one, else `i`.
#[cold]
pub(crate) fn choose<K, Req, P>(
    strategy: &mut P,
    endpoints: &Endpoints<K>,
    req: &Req,
    i: usize,
    avoid: &Avoid,
) -> usize
where
    K: Hash,
    P: Pick<Req>,
{
    let avoided = |j: usize| avoid.contains(endpoints.ids[j]);
    let open = |j: usize| endpoints.is_usable(j) && !avoided(j);
    // Fewer ids than usable endpoints: some usable endpoint is not avoided. Otherwise
    // check before asking the strategy again.
    if avoid.len() >= endpoints.usable_len() && !(0..endpoints.len()).any(open) {
        return i;
    }
    for _ in 0..REPICKS {
        let j = strategy.pick(endpoints, req);
        if !avoided(j) {
            return j;
        }
    }
    let n = endpoints.len();
    (1..n).map(|d| (i + d) % n).find(|&j| open(j)).unwrap_or(i)
}
