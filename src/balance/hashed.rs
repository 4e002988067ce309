//! The lookup table shared by the consistent hashers ([`Maglev`](super::Maglev),
//! [`RingHash`](super::RingHash)): built off the runtime's threads, kept in use with
//! removed endpoints skipped until its successor is ready, probed a bounded number of
//! slots per pick.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::balance::build::Build;
use crate::balance::hash::{stable_hash, Table};
use crate::balance::Endpoints;

/// Key hash and weight of each member of a table, sorted (so a table depends on the
/// endpoint set only, not on the order discovery reported it in).
pub(crate) type Members = Vec<(u64, u32)>;

/// How a consistent hasher fills its table and maps a key hash onto a slot.
pub(crate) trait Fill: Clone + Send + Sync + 'static {
    /// The table for `members`: each slot holds a member's position in `members`.
    fn fill(&self, members: &[(u64, u32)]) -> Table;

    /// The slot of key hash `h` in a table of `len` slots.
    fn slot(h: u64, len: usize) -> usize;

    /// Whether the table for `n` members is small enough to build in place (well under
    /// a millisecond).
    fn is_small(&self, n: usize) -> bool;
}

/// A filled table and the members it was filled for.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) table: Table,
    pub(crate) members: Members,
}

impl Built {
    fn empty() -> Self {
        Built {
            table: Table::Large(Vec::new()),
            members: Vec::new(),
        }
    }
}

/// `to_index` of a member that is no longer discovered.
const NONE: u32 = u32::MAX;

/// Slots tried after the key's own before a pick gives up on the table and the
/// hasher's fallback strategy picks instead: with a few endpoints not ready the next
/// slots find a ready one at once; during a rollout that removed every endpoint of the
/// table in use, a pick costs at most this many reads instead of a walk over millions of
/// slots.
pub(crate) const PROBES: usize = 64;

/// A consistent hasher's table, its successor being built, and the current endpoints.
pub(crate) struct Hashed<K> {
    pub(crate) kind: K,
    built: Arc<Built>,
    /// Member of `built` → current endpoint index (`NONE`: no longer discovered).
    to_index: Vec<u32>,
    /// Key hash and weight of every current endpoint, by index.
    current: Vec<(u64, u32)>,
    /// A table being built for `current` (or for an earlier set if `stale`).
    pending: Option<Build<Built>>,
    /// The endpoint set changed again while `pending` was being built.
    stale: bool,
    pub(crate) background: bool,
}

impl<K: Clone> Clone for Hashed<K> {
    /// A clone shares the current table; a build in progress stays with the original
    /// (the clone builds its own on its next rebuild).
    fn clone(&self) -> Self {
        Hashed {
            kind: self.kind.clone(),
            built: self.built.clone(),
            to_index: self.to_index.clone(),
            current: self.current.clone(),
            pending: None,
            stale: false,
            background: self.background,
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for Hashed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hashed")
            .field("kind", &self.kind)
            .field("table_len", &self.built.table.len())
            .field("endpoints", &self.current.len())
            .field("rebuilding", &self.pending.is_some())
            .finish()
    }
}

impl<K: Fill> Hashed<K> {
    pub(crate) fn new(kind: K) -> Self {
        Hashed {
            kind,
            built: Arc::new(Built::empty()),
            to_index: Vec::new(),
            current: Vec::new(),
            pending: None,
            stale: false,
            background: true,
        }
    }

    /// Number of slots in the table in use.
    #[inline]
    pub(crate) fn table_len(&self) -> usize {
        self.built.table.len()
    }

    /// The current index of the endpoint in slot `slot`, if it is still discovered.
    pub(crate) fn slot_owner(&self, slot: usize) -> Option<usize> {
        match self.to_index[self.built.table.get(slot)] {
            NONE => None,
            i => Some(i as usize),
        }
    }

    /// The current index of the endpoint that owns key hash `h` (ignoring usability).
    pub(crate) fn lookup(&self, h: u64) -> Option<usize> {
        let len = self.built.table.len();
        if len == 0 {
            None
        } else {
            self.slot_owner(K::slot(h, len))
        }
    }

    /// Whether a new table is being built.
    pub(crate) fn is_rebuilding(&self) -> bool {
        self.pending.is_some()
    }

    /// The endpoint set changed: use the new indices at once, and build a new table if
    /// the endpoints or weights differ from the table's.
    pub(crate) fn rebuild<Key: Hash>(&mut self, endpoints: &Endpoints<Key>) {
        self.current = endpoints
            .keys
            .iter()
            .map(stable_hash)
            .zip(endpoints.weights.iter().copied())
            .collect();
        let mut members = self.current.clone();
        members.sort_unstable();
        if members == self.built.members {
            // The same endpoints (say, one removed for failing readiness and discovered
            // again): only their indices moved.
            self.remap();
            self.pending = None;
            self.stale = false;
            return;
        }
        // Until the new table is ready, the old one serves with the new indices.
        self.remap();
        if members.is_empty() {
            self.pending = None;
            self.stale = false;
            self.land(Built::empty());
        } else if !self.background || self.kind.is_small(members.len()) {
            self.pending = None;
            self.stale = false;
            self.land(fill(&self.kind, members));
        } else if self.pending.is_some() {
            self.stale = true;
        } else {
            self.start(members);
        }
    }

    fn start(&mut self, members: Members) {
        let kind = self.kind.clone();
        let build = Build::start(move || fill(&kind, members));
        if build.is_finished() {
            // Built in place (outside a runtime): use it at once.
            if let Some(built) = build.wait() {
                self.land(built);
            }
        } else {
            self.pending = Some(build);
        }
    }

    fn land(&mut self, built: Built) {
        self.built = Arc::new(built);
        self.remap();
    }

    /// Switch to a table built in the background if it is ready (and start the next one
    /// if the endpoint set changed meanwhile). `Ready` once a table is in use, or when
    /// none can be (no endpoints, or the build failed); `Pending` while the first table
    /// is being built, and `cx` is woken when it is ready.
    pub(crate) fn poll_built(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(pending) = &self.pending {
            match pending.poll(cx) {
                Poll::Pending => break,
                Poll::Ready(out) => {
                    self.pending = None;
                    match out {
                        Some(built) => self.land(built),
                        None => tracing::error!(
                            endpoints = self.current.len(),
                            "building a consistent-hash table failed; keeping the previous one"
                        ),
                    }
                    if std::mem::take(&mut self.stale) {
                        let mut members = self.current.clone();
                        members.sort_unstable();
                        if members != self.built.members {
                            self.start(members);
                        }
                    }
                }
            }
        }
        if self.pending.is_some() && self.built.table.len() == 0 && !self.current.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Blocks until a table being built is ready and switches to it (tests and orderly
    /// shutdowns only).
    pub(crate) fn wait_for_rebuild(&mut self) {
        while let Some(pending) = self.pending.take() {
            if let Some(built) = pending.wait() {
                self.land(built);
            }
            if std::mem::take(&mut self.stale) {
                let mut members = self.current.clone();
                members.sort_unstable();
                if members != self.built.members {
                    self.start(members);
                }
            }
        }
    }

    /// Points every member of the table in use at its current endpoint index.
    fn remap(&mut self) {
        let by_hash: HashMap<u64, u32> = self
            .current
            .iter()
            .enumerate()
            .map(|(i, m)| (m.0, i as u32))
            .collect();
        self.to_index.clear();
        self.to_index.extend(
            self.built
                .members
                .iter()
                .map(|m| by_hash.get(&m.0).copied().unwrap_or(NONE)),
        );
    }

    /// The usable endpoint for key hash `h`: the owner of its slot, else the first usable
    /// owner among the next [`PROBES`] slots; `None` if there is no table or none of them
    /// is usable (the caller's fallback picks then).
    #[inline]
    pub(crate) fn pick<Key>(&self, endpoints: &Endpoints<Key>, h: u64) -> Option<usize> {
        let table = &self.built.table;
        let len = table.len();
        if len == 0 {
            return None;
        }
        let c = K::slot(h, len);
        let first = self.to_index[table.get(c)];
        if first != NONE && endpoints.is_usable(first as usize) {
            return Some(first as usize);
        }
        self.probe(endpoints, c)
    }

    /// The first usable owner among the [`PROBES`] slots after slot `c`.
    #[cold]
    fn probe<Key>(&self, endpoints: &Endpoints<Key>, mut c: usize) -> Option<usize> {
        let table = &self.built.table;
        let len = table.len();
        for _ in 0..PROBES.min(len - 1) {
            c += 1;
            if c == len {
                c = 0;
            }
            let i = self.to_index[table.get(c)];
            if i != NONE && endpoints.is_usable(i as usize) {
                return Some(i as usize);
            }
        }
        None
    }
}

fn fill<K: Fill>(kind: &K, members: Members) -> Built {
    let table = kind.fill(&members);
    Built { table, members }
}
