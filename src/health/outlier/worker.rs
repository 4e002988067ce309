//! The detector's [`Worker`]: the interval timer that runs without traffic.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};

use tokio::time::{sleep_until, Instant, Sleep};

use super::detector::Detector;

/// Runs a detector's interval: every [`interval`](super::Builder::interval) it evaluates the
/// success-rate and failure-percentage rules, decays ejection counts and returns endpoints
/// whose ejection is over (those polled for readiness return at the end of their ejection
/// without it). It needs no traffic to make progress.
///
/// [`Builder::build`](super::Builder::build) spawns it on tokio;
/// [`Builder::build_pair`](super::Builder::build_pair) hands it out to run on another
/// executor (it needs tokio's time driver). It holds the detector weakly and ends at the
/// first tick after the layer, every endpoint and every handle are dropped.
#[must_use = "the worker does nothing unless polled (spawn it)"]
pub struct Worker<K> {
    detector: Weak<Detector<K>>,
    /// Made on the first poll, inside the runtime.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<K> fmt::Debug for Worker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("detector_alive", &(self.detector.strong_count() > 0))
            .finish_non_exhaustive()
    }
}

impl<K> Worker<K> {
    pub(crate) fn new(detector: &Arc<Detector<K>>) -> Self {
        Worker {
            detector: Arc::downgrade(detector),
            sleep: None,
        }
    }
}

impl<K> Future for Worker<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(detector) = self.detector.upgrade() else {
                return Poll::Ready(());
            };
            let interval = detector.policy.interval;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(sleep_until(Instant::now() + interval)));
            ready!(sleep.as_mut().poll(cx));
            // Late ticks are not made up in a burst: the next is an interval from now.
            sleep.as_mut().reset(Instant::now() + interval);
            detector.evaluate();
        }
    }
}
