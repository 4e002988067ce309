//! The ejection hook: `()` for none, any closure taking an [`Ejection`], or a type
//! implementing [`OnEjection`] such as [`PublishToRegistry`](super::PublishToRegistry).

use super::report::Ejection;

/// Called for every ejection made (not for outliers found by a rule that was not enforced) and
/// for every endpoint that returns.
///
/// Hooks run synchronously on the task that made the ejection (the detector's interval task,
/// or the task that completed the call that ended a run of failures), outside the detector's
/// lock, so they may read it through an [`OutlierHandle`](super::OutlierHandle). Keep them
/// short: hand slow work, such as a registry write, to a task of its own (as
/// [`PublishToRegistry`](super::PublishToRegistry) does).
pub trait OnEjection<K>: Send + Sync + 'static {
    /// Handles one ejection.
    fn on_ejection(&self, ejection: &Ejection<K>);

    /// Handles the return of an ejected endpoint (does nothing by default).
    fn on_return(&self, key: &K) {
        let _ = key;
    }
}

impl<K> OnEjection<K> for () {
    fn on_ejection(&self, _: &Ejection<K>) {}
}

impl<K, F> OnEjection<K> for F
where
    F: Fn(&Ejection<K>) + Send + Sync + 'static,
{
    fn on_ejection(&self, ejection: &Ejection<K>) {
        self(ejection)
    }
}
