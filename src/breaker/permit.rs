//! The leave to make one call, and the outcome it records.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::classify::Outcome;
use super::state::Shared;

/// Leave to make one call, taken from the breaker before calling the inner service.
///
/// It holds a reference to the breaker, so that the call's outcome can be recorded after the
/// service that made it is gone. Completing it records the outcome; dropping it uncompleted (a
/// cancelled call, or a service dropped after `poll_ready`) gives a half-open probe permit
/// back.
pub(crate) enum Permit {
    /// A call admitted in `generation`.
    Call {
        shared: Arc<Shared>,
        /// Nanoseconds since the breaker's base instant, plus one, when the call started;
        /// zero if slow calls are not tracked.
        start: u64,
        generation: u32,
        /// A half-open probe still holding its place (cleared once the outcome is recorded).
        probe: bool,
    },
    /// Completed (or never taken): records nothing and releases nothing.
    Done,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permit::Call {
                generation, probe, ..
            } => f
                .debug_struct("Permit")
                .field("generation", generation)
                .field("probe", probe)
                .finish(),
            Permit::Done => f.write_str("Permit(done)"),
        }
    }
}

impl Permit {
    #[inline]
    pub(crate) fn new(shared: Arc<Shared>, generation: u32, probe: bool) -> Self {
        Permit::Call {
            shared,
            start: 0,
            generation,
            probe,
        }
    }

    /// Whether the breaker is still in the generation this permit was taken in.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        match self {
            Permit::Call {
                shared, generation, ..
            } => shared.is_current(*generation),
            Permit::Done => false,
        }
    }

    /// Starts the slow-call clock, if slow calls are tracked. Called when the call is made.
    #[inline]
    pub(crate) fn start(&mut self) {
        if let Permit::Call { shared, start, .. } = self {
            if shared.timed {
                *start = shared.nanos(Instant::now()).saturating_add(1);
            }
        }
    }

    /// Records the call's outcome; the permit is done afterwards (and its reference to the
    /// breaker dropped).
    ///
    /// Works in place (the permit's fields are read where they lie, not moved), which keeps
    /// the closed-state path free of store-forwarding stalls.
    #[inline(always)]
    pub(crate) fn complete(&mut self, outcome: Outcome) {
        if let Permit::Call {
            shared,
            start,
            generation,
            probe,
        } = self
        {
            let elapsed = (*start != 0).then(|| {
                Duration::from_nanos(shared.nanos(Instant::now()).saturating_sub(*start - 1))
            });
            shared.complete(*generation, *probe, outcome, elapsed);
            *probe = false;
            *self = Permit::Done;
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Permit::Call {
            shared,
            generation,
            probe: true,
            ..
        } = self
        {
            shared.release(*generation);
        }
    }
}
