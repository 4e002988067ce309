//! The breaker's state word: state, generation, half-open permits and successes packed into one
//! `AtomicU64`, so that taking a probe permit and changing state are a single atomic step.
//!
//! Layout, from the low bits: state (3 bits), probes in flight (14 bits), half-open successes
//! (15 bits), generation (32 bits). The generation grows on every transition; a permit carries
//! the generation it was taken in, and releasing or completing it in a later generation does
//! nothing, so a stale permit can never take a slot of a newer half-open phase nor leak one.
//! Transitions (`publish`) are serialised by the breaker's transition lock; permits are taken
//! and released lock-free.

#[cfg(all(test, loom))]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{AtomicU64, Ordering};

const STATE_MASK: u64 = 0b111;
const INFLIGHT_SHIFT: u32 = 3;
const INFLIGHT_MASK: u64 = (1 << 14) - 1;
const SUCCESS_SHIFT: u32 = 17;
const SUCCESS_MASK: u64 = (1 << 15) - 1;
const GEN_SHIFT: u32 = 32;

pub(crate) const CLOSED: u8 = 0;
pub(crate) const OPEN: u8 = 1;
pub(crate) const HALF_OPEN: u8 = 2;
pub(crate) const DISABLED: u8 = 3;
pub(crate) const FORCED_OPEN: u8 = 4;

/// A snapshot of the state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot(u64);

impl Snapshot {
    fn pack(generation: u32, state: u8, inflight: u32, successes: u32) -> Self {
        Snapshot(
            (u64::from(generation) << GEN_SHIFT)
                | ((u64::from(successes) & SUCCESS_MASK) << SUCCESS_SHIFT)
                | ((u64::from(inflight) & INFLIGHT_MASK) << INFLIGHT_SHIFT)
                | u64::from(state),
        )
    }

    pub(crate) fn state(self) -> u8 {
        (self.0 & STATE_MASK) as u8
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }

    pub(crate) fn inflight(self) -> u32 {
        ((self.0 >> INFLIGHT_SHIFT) & INFLIGHT_MASK) as u32
    }

    pub(crate) fn successes(self) -> u32 {
        ((self.0 >> SUCCESS_SHIFT) & SUCCESS_MASK) as u32
    }
}

/// The atomic state word.
#[derive(Debug)]
pub(crate) struct Word(AtomicU64);

impl Word {
    pub(crate) fn new(state: u8) -> Self {
        Word(AtomicU64::new(Snapshot::pack(0, state, 0, 0).0))
    }

    #[inline]
    pub(crate) fn load(&self) -> Snapshot {
        Snapshot(self.0.load(Ordering::Acquire))
    }

    /// Takes a half-open probe permit in `generation` if fewer than `max_probes` are in flight
    /// and the probes in flight could still be needed to reach `successes_needed`.
    /// On refusal returns the snapshot that refused it.
    pub(crate) fn try_acquire_probe(
        &self,
        generation: u32,
        max_probes: u32,
        successes_needed: u32,
    ) -> Result<(), Snapshot> {
        let mut cur = self.load();
        loop {
            if cur.generation() != generation
                || cur.state() != HALF_OPEN
                || cur.inflight() >= max_probes
                || cur.inflight() + cur.successes() >= successes_needed
            {
                return Err(cur);
            }
            let next = cur.0 + (1 << INFLIGHT_SHIFT);
            match self
                .0
                .compare_exchange_weak(cur.0, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => cur = Snapshot(actual),
            }
        }
    }

    /// Gives back a probe permit of `generation` without an outcome. Returns whether a permit
    /// was given back (false if the generation has moved on).
    pub(crate) fn release_probe(&self, generation: u32) -> bool {
        self.update_probe(generation, 0).is_some()
    }

    /// Ends a probe of `generation` with a success. Returns the half-open success count it
    /// reached, or `None` if the generation has moved on. Exactly one caller sees each count.
    pub(crate) fn probe_succeeded(&self, generation: u32) -> Option<u32> {
        self.update_probe(generation, 1).map(Snapshot::successes)
    }

    fn update_probe(&self, generation: u32, successes: u64) -> Option<Snapshot> {
        let mut cur = self.load();
        loop {
            if cur.generation() != generation || cur.state() != HALF_OPEN || cur.inflight() == 0 {
                return None;
            }
            let next = cur.0 - (1 << INFLIGHT_SHIFT) + (successes << SUCCESS_SHIFT);
            match self
                .0
                .compare_exchange_weak(cur.0, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Snapshot(next)),
                Err(actual) => cur = Snapshot(actual),
            }
        }
    }

    /// Moves from `generation` to `generation + 1` in `state`, with no permits and no
    /// successes. The caller holds the transition lock, so only permit counts can change
    /// concurrently; returns `false` if the generation is not `generation`.
    pub(crate) fn publish(&self, generation: u32, state: u8) -> bool {
        let next = Snapshot::pack(generation.wrapping_add(1), state, 0, 0);
        let mut cur = self.load();
        loop {
            if cur.generation() != generation {
                return false;
            }
            match self
                .0
                .compare_exchange_weak(cur.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = Snapshot(actual),
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two racers on a half-open word with one permit: exactly one wins.
    #[test]
    fn one_permit_two_racers() {
        loom::model(|| {
            let word = Arc::new(Word::new(CLOSED));
            assert!(word.publish(0, HALF_OPEN));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let word = word.clone();
                    loom::thread::spawn(move || word.try_acquire_probe(1, 1, 1).is_ok())
                })
                .collect();
            let won = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|w| *w)
                .count();
            assert_eq!(won, 1);
            assert_eq!(word.load().inflight(), 1);
        });
    }

    /// A probe released while the breaker reopens and half-opens again never takes or
    /// leaks a permit of the new phase.
    #[test]
    fn stale_release_does_not_leak() {
        loom::model(|| {
            let word = Arc::new(Word::new(CLOSED));
            assert!(word.publish(0, HALF_OPEN));
            assert!(word.try_acquire_probe(1, 1, 1).is_ok());
            let w2 = word.clone();
            let releaser = loom::thread::spawn(move || {
                w2.release_probe(1);
            });
            let w3 = word.clone();
            let transitioner = loom::thread::spawn(move || {
                if w3.publish(1, OPEN) {
                    assert!(w3.publish(2, HALF_OPEN));
                }
            });
            releaser.join().unwrap();
            transitioner.join().unwrap();
            let cur = word.load();
            assert_eq!(cur.inflight(), 0);
            if cur.generation() == 3 {
                assert!(word.try_acquire_probe(3, 1, 1).is_ok());
            }
        });
    }

    /// Racing acquire, success and a concurrent failure-triggered reopen keep the counts
    /// consistent.
    #[test]
    fn acquire_succeed_and_reopen() {
        loom::model(|| {
            let word = Arc::new(Word::new(CLOSED));
            assert!(word.publish(0, HALF_OPEN));
            assert!(word.try_acquire_probe(1, 2, 2).is_ok());
            let w2 = word.clone();
            let a = loom::thread::spawn(move || w2.try_acquire_probe(1, 2, 2).is_ok());
            let w3 = word.clone();
            let b = loom::thread::spawn(move || w3.probe_succeeded(1));
            let got = a.join().unwrap();
            let succ = b.join().unwrap();
            let cur = word.load();
            assert!(succ.is_some());
            assert_eq!(cur.successes(), 1);
            assert_eq!(cur.inflight(), u32::from(got));
        });
    }
}
