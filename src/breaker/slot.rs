//! The part of a breaker that a response future reaches without holding a reference count.
//!
//! A closed-state call through a breaker with the plain consecutive-failures policy (no
//! window, no slow-call timing) needs, when it completes, only to count a success, or to
//! report a failure (or a success that ends a run of failures) to the breaker. Holding an
//! `Arc` of the breaker in every response future costs two atomic read-modify-writes per call
//! on a cache line that every thread calling through the breaker shares. Instead, such a
//! future holds a `&'static Slot` and the slot's epoch:
//!
//! * slots are allocated once, leaked, and recycled through a free list when their breaker is
//!   dropped, so the reference is always valid; the epoch grows on every recycle, so a future
//!   can tell whether the slot still belongs to its breaker;
//! * successes (and the breaker's other counts) are kept per thread, each thread writing only
//!   its own stripe (a plain load and store, no read-modify-write), tagged with the epoch so
//!   that a future of a dropped breaker never counts towards the breaker that reuses the slot;
//! * everything else (a failure, a success after failures) goes to the breaker itself through
//!   the slot's weak reference, checked against the epoch under the slot's lock.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_mesh::breaker::CircuitBreakerLayer;
//!
//! // Every service-level breaker and every endpoint breaker gets a slot at `build()`.
//! let layer = CircuitBreakerLayer::builder().build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
//! # let _ = svc;
//! ```

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use super::state::Shared;

/// Threads that get a success stripe of their own; further threads share one stripe.
pub(crate) const STRIPES: usize = 8;

/// Bits of a stripe word that hold the count; the bits above hold the epoch tag.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn tag(epoch: u32) -> u64 {
    u64::from(epoch) & ((1 << (64 - COUNT_BITS)) - 1)
}

/// One thread's counts, tagged with the epoch they were counted in.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Stripe {
    counts: [AtomicU64; 5],
}

/// A count kept in the per-thread stripes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    /// Calls classified as successes.
    Successes,
    /// Calls classified as failures.
    Failures,
    /// Calls classified as ignored.
    Ignored,
    /// Calls rejected or held back.
    Rejected,
    /// Calls at least as slow as the slow-call duration.
    Slow,
}

impl Stripe {
    #[inline]
    fn get(&self, count: Count) -> &AtomicU64 {
        &self.counts[count as usize]
    }
}

/// A breaker's reference-count-free state (see the module documentation).
pub(crate) struct Slot {
    /// The current run of consecutive failures in the closed state.
    pub(crate) consecutive: AtomicU32,
    /// Grows by one each time the slot changes hands.
    epoch: AtomicU32,
    /// The open-state timer of the breaker's current opening:
    /// `(generation << 2) | TIMER_ARMED | TIMER_DUE`, or 0 when none is armed.
    pub(crate) open_timer: AtomicU64,
    /// Per-thread counts: (epoch tag << 40) | count.
    stripes: [Stripe; STRIPES + 1],
    owner: Mutex<Weak<Shared>>,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

static FREE: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());

impl Slot {
    /// Takes a slot for a new breaker (recycled, or leaked once) and returns it with its epoch.
    pub(crate) fn acquire() -> (&'static Slot, u32) {
        let slot = lock(&FREE).pop().unwrap_or_else(|| {
            Box::leak(Box::new(Slot {
                consecutive: AtomicU32::new(0),
                epoch: AtomicU32::new(0),
                open_timer: AtomicU64::new(0),
                stripes: Default::default(),
                owner: Mutex::new(Weak::new()),
            }))
        });
        let epoch = slot.epoch.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        slot.consecutive.store(0, Ordering::Relaxed);
        slot.open_timer.store(0, Ordering::Relaxed);
        (slot, epoch)
    }

    /// Points the slot at its breaker (once the breaker's `Arc` exists).
    pub(crate) fn set_owner(&self, owner: Weak<Shared>) {
        *lock(&self.owner) = owner;
    }

    /// Gives the slot back when its breaker (of `epoch`) is dropped.
    pub(crate) fn release(&'static self, epoch: u32) {
        {
            let mut owner = lock(&self.owner);
            if self.epoch.load(Ordering::Acquire) != epoch {
                return;
            }
            *owner = Weak::new();
            // Moving the epoch on here makes every future still in flight for the dropped
            // breaker see that the slot is no longer its breaker's.
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        lock(&FREE).push(self);
    }

    /// The breaker of `epoch`, if the slot still belongs to it and it is alive.
    pub(crate) fn owner(&self, epoch: u32) -> Option<std::sync::Arc<Shared>> {
        let owner = lock(&self.owner);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return None;
        }
        owner.upgrade()
    }

    /// Counts one success for the breaker of `epoch`.
    #[inline]
    pub(crate) fn count_success(&self, epoch: u32) {
        self.count(Count::Successes, epoch);
    }

    /// Adds one to `count` for the breaker of `epoch`.
    #[inline]
    pub(crate) fn count(&self, count: Count, epoch: u32) {
        let index = thread_index();
        let stripe = self.stripes[index].get(count);
        let want = tag(epoch);
        // Add one to this breaker's count, or start it if the stripe still holds an earlier
        // breaker's; a late call of a dropped breaker counts nowhere.
        let next = |cur: u64| {
            if cur >> COUNT_BITS == want {
                Some(cur + 1)
            } else if self.epoch.load(Ordering::Acquire) == epoch {
                Some((want << COUNT_BITS) | 1)
            } else {
                None
            }
        };
        if index < STRIPES {
            // Only this thread writes this stripe: a load and a store suffice.
            if let Some(v) = next(stripe.load(Ordering::Relaxed)) {
                stripe.store(v, Ordering::Relaxed);
            }
        } else {
            let _ = stripe.fetch_update(Ordering::Relaxed, Ordering::Relaxed, next);
        }
    }

    /// The total of `count` for the breaker of `epoch`.
    pub(crate) fn total(&self, count: Count, epoch: u32) -> u64 {
        let want = tag(epoch);
        self.stripes
            .iter()
            .map(|s| s.get(count).load(Ordering::Relaxed))
            .filter(|v| v >> COUNT_BITS == want)
            .map(|v| v & COUNT_MASK)
            .sum()
    }
}

/// Set in [`Slot::open_timer`] while a timer runs for the opening of that generation.
pub(crate) const TIMER_ARMED: u64 = 1;
/// Set in [`Slot::open_timer`] once that timer has fired.
pub(crate) const TIMER_DUE: u64 = 2;

/// The waker of an open breaker's timer: marks the opening due when tokio's timer fires, so
/// that until then a rejection needs no clock read.
pub(crate) struct OpenWake {
    pub(crate) slot: &'static Slot,
    pub(crate) epoch: u32,
    /// `(generation << 2) | TIMER_ARMED`.
    pub(crate) key: u64,
}

impl std::task::Wake for OpenWake {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        if self.slot.epoch.load(Ordering::Acquire) == self.epoch {
            let _ = self.slot.open_timer.compare_exchange(
                self.key,
                self.key | TIMER_DUE,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

/// This thread's stripe: a number in `0..STRIPES` that no other live thread holds, or
/// `STRIPES` (the shared stripe) when every number is taken.
#[inline]
fn thread_index() -> usize {
    // A constant-initialised thread local without a destructor is a plain thread-pointer
    // load; the lease that gives the number back at thread exit lives in another one.
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(UNASSIGNED) };
    }
    let i = INDEX.with(Cell::get);
    if i != UNASSIGNED {
        return i;
    }
    assign(&INDEX)
}

const UNASSIGNED: usize = usize::MAX;

#[cold]
fn assign(index: &'static std::thread::LocalKey<Cell<usize>>) -> usize {
    thread_local! {
        static LEASE: Lease = const { Lease { index: Cell::new(UNASSIGNED), key: Cell::new(None) } };
    }
    let i = take_index();
    let leased = LEASE
        .try_with(|lease| {
            lease.index.set(i);
            lease.key.set(Some(index));
        })
        .is_ok();
    if !leased {
        // The thread is exiting: use the shared stripe and give the number straight back.
        give_back(i);
        return STRIPES;
    }
    index.with(|c| c.set(i));
    i
}

static FREE_INDICES: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static NEXT_INDEX: Mutex<usize> = Mutex::new(0);

/// A thread's claim on a stripe number, given back when the thread exits.
struct Lease {
    index: Cell<usize>,
    key: Cell<Option<&'static std::thread::LocalKey<Cell<usize>>>>,
}

fn take_index() -> usize {
    if let Some(i) = lock(&FREE_INDICES).pop() {
        return i;
    }
    let mut next = lock(&NEXT_INDEX);
    if *next < STRIPES {
        *next += 1;
        *next - 1
    } else {
        STRIPES
    }
}

fn give_back(i: usize) {
    if i < STRIPES {
        lock(&FREE_INDICES).push(i);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // From now on this thread (still running other destructors) uses the shared stripe.
        if let Some(key) = self.key.get() {
            let _ = key.try_with(|c| c.set(STRIPES));
        }
        give_back(self.index.get());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_stripes_and_give_them_back() {
        let here = thread_index();
        let other = std::thread::spawn(thread_index).join().unwrap();
        assert!(here <= STRIPES && other <= STRIPES);
        if here < STRIPES && other < STRIPES {
            // Distinct while both live? `other` has exited, so only check it was in range.
            let again = std::thread::spawn(thread_index).join().unwrap();
            assert!(again < STRIPES, "an exited thread's stripe is reused");
        }
    }

    #[test]
    fn successes_of_a_recycled_slot_start_from_zero() {
        let (slot, epoch) = Slot::acquire();
        slot.count_success(epoch);
        slot.count_success(epoch);
        assert_eq!(slot.total(Count::Successes, epoch), 2);
        slot.release(epoch);
        // A future of the dropped breaker completing late counts nowhere.
        slot.count_success(epoch);
        let (again, next) = Slot::acquire();
        if std::ptr::eq(again, slot) {
            assert_ne!(next, epoch);
            slot.count_success(epoch);
            assert_eq!(
                again.total(Count::Successes, next),
                0,
                "a stale future counted for the new owner"
            );
            again.count_success(next);
            assert_eq!(again.total(Count::Successes, next), 1);
        }
        again.release(next);
    }
}
