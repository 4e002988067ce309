//! The clock leases are measured with.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds for lease deadlines.
///
/// [`Clock::system`] reads tokio's clock, anchored to the system time when it was made, so
/// deadlines stored in a shared database agree across processes (as far as their clocks agree),
/// and pausing tokio's clock in a test pauses leases too. [`ManualClock`] moves only when told,
/// for tests of database-backed registries, whose real I/O does not mix with paused time.
#[derive(Clone)]
pub struct Clock(Inner);

#[derive(Clone)]
enum Inner {
    Tokio {
        anchor: tokio::time::Instant,
        anchor_ms: i64,
    },
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// Tokio's clock, anchored to the current system time.
    pub fn system() -> Self {
        let anchor_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        Clock(Inner::Tokio {
            anchor: tokio::time::Instant::now(),
            anchor_ms,
        })
    }

    /// Milliseconds since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Inner::Tokio { anchor, anchor_ms } => {
                anchor_ms
                    + tokio::time::Instant::now()
                        .duration_since(*anchor)
                        .as_millis() as i64
            }
            Inner::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Tokio { .. } => f.write_str("Clock::system"),
            Inner::Manual(ms) => write!(f, "Clock::manual({})", ms.load(Ordering::SeqCst)),
        }
    }
}

/// A clock that moves only when [`advanced`](ManualClock::advance). Convert it into a
/// [`Clock`] with `Clock::from(manual.clone())` and keep the `ManualClock` to drive it.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `start_ms` milliseconds since the epoch.
    pub fn new(start_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// The current reading.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl From<ManualClock> for Clock {
    fn from(m: ManualClock) -> Self {
        Clock(Inner::Manual(m.0))
    }
}
