//! Walking an error's source chain for one of the crate's error types.
//!
//! Some of the crate's errors are transparent (their `Display` and `source` are the inner
//! error's, so a chain prints each message once): `breaker::error::Error::Inner` is one. A
//! transparent error's `source` skips the error it wraps, so a plain walk over `source()`
//! would miss an error of ours inside it. [`find`] descends into those wrappers (as
//! `breaker::error::Open::find` does for its own).

use std::error::Error;

/// The first `T` in `error`, its sources, and the errors the crate's transparent wrappers
/// hold.
#[allow(dead_code)] // used by the balance feature
pub(crate) fn find<'a, T: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = inner(e).or_else(|| e.source());
    }
    None
}

/// The error a transparent wrapper of ours holds.
fn inner<'a>(_error: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    #[cfg(feature = "breaker")]
    if let Some(crate::breaker::error::Error::Inner(inner)) =
        _error.downcast_ref::<crate::breaker::error::Error>()
    {
        return Some(&**inner);
    }
    None
}
