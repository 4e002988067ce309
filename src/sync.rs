//! Small synchronisation helpers shared by the modules.
//!
//! Every mutex in the crate guards state that stays consistent if a holder panics (each
//! critical section either completes its writes or leaves the previous values), so a poisoned
//! lock is taken as it is rather than turning one panic into a panic in every later caller.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning (see the module docs for why that is sound here).
#[allow(dead_code)] // some feature sets use none of the crate's mutexes
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
