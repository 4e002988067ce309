//! [`OutlierHandle`]: reading a detector for reporting.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::detector::Detector;
use super::report::{Ejection, OutlierCounters};

/// A handle on an outlier detector: which endpoints are ejected, why and until when; the
/// counters; early returns.
///
/// Cheap to clone; made by [`OutlierLayer::handle`](super::OutlierLayer::handle). A handle
/// keeps the detector (and its worker) alive.
pub struct OutlierHandle<K> {
    pub(crate) detector: Arc<Detector<K>>,
}

impl<K> Clone for OutlierHandle<K> {
    fn clone(&self) -> Self {
        OutlierHandle {
            detector: self.detector.clone(),
        }
    }
}

impl<K> fmt::Debug for OutlierHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierHandle")
            .field("detector", &self.detector.name)
            .finish()
    }
}

impl<K> OutlierHandle<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    /// The detector's name.
    pub fn name(&self) -> &str {
        &self.detector.name
    }

    /// The ejections in force, in no particular order.
    pub fn ejected(&self) -> Vec<Ejection<K>> {
        self.detector.ejections()
    }

    /// The ejection in force for `key`, if it is ejected.
    pub fn ejection(&self, key: &K) -> Option<Ejection<K>> {
        self.detector.ejection(key)
    }

    /// Whether the endpoint `key` is ejected.
    pub fn is_ejected(&self, key: &K) -> bool {
        self.ejection(key).is_some()
    }

    /// How many times in a row the endpoint `key` has been ejected, as its ejection time
    /// counts it (0 for an endpoint never ejected, or whose count has decayed, or unknown).
    pub fn times_ejected(&self, key: &K) -> u32 {
        self.detector.times(key)
    }

    /// The number of endpoints watched.
    pub fn endpoints(&self) -> usize {
        self.detector.endpoints()
    }

    /// The detector's counters.
    pub fn counters(&self) -> OutlierCounters {
        self.detector.counters()
    }

    /// Returns the endpoint `key` now if it is ejected (for example when an active health
    /// check passes), waking the task that polled it; returns whether it was ejected. Its
    /// count of ejections in a row is kept.
    pub fn uneject(&self, key: &K) -> bool {
        self.detector.uneject(key)
    }
}

/// An outlier detector's ejections, for [`service_health`](crate::health::service_health):
/// an instance this process ejected is reported with the reason and when it returns.
impl crate::health::report::Ejections for OutlierHandle<crate::instance::InstanceId> {
    fn ejection(&self, id: &crate::instance::InstanceId) -> Option<String> {
        OutlierHandle::ejection(self, id).map(|e| {
            let left = e
                .until
                .saturating_duration_since(tokio::time::Instant::now());
            format!("{} (ejected {} times, back in {left:?})", e.reason, e.times)
        })
    }
}
