//! The clock leases are measured with.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds for lease deadlines.
///
/// Which clock a registry's leases follow depends on where they are stored:
///
/// - [`MemoryRegistry`](super::MemoryRegistry) and SQLite (one machine): this clock.
///   [`Clock::system`] reads tokio's clock, anchored to the system time when it was made, so
///   pausing tokio's clock in a test pauses leases too.
/// - PostgreSQL and MySQL (shared by many machines): the database server's clock, so that
///   machines whose clocks disagree still agree on every lease. Lease times there are the
///   database's time plus how far a [`ManualClock`] has been [advanced](ManualClock::advance)
///   since it was made: that is how tests move leases forward on a real server (real I/O does
///   not mix with tokio's paused time). [`Clock::system`] adds nothing, and its reading is not
///   used for leases on these databases.
#[derive(Clone)]
pub struct Clock(Inner);

#[derive(Clone)]
enum Inner {
    Tokio {
        anchor: tokio::time::Instant,
        anchor_ms: i64,
    },
    Manual(ManualClock),
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
            Inner::Manual(m) => m.now_ms(),
        }
    }

    /// How far a manual clock was moved since it was made (zero for the system clock): what
    /// PostgreSQL and MySQL add to the database's time for leases.
    #[cfg_attr(
        not(any(feature = "registry-postgres", feature = "registry-mysql")),
        allow(dead_code)
    )]
    pub(crate) fn advanced_ms(&self) -> i64 {
        match &self.0 {
            Inner::Tokio { .. } => 0,
            Inner::Manual(m) => m.now_ms() - m.start_ms,
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
            Inner::Manual(m) => write!(f, "Clock::manual({})", m.now_ms()),
        }
    }
}

/// A clock that moves only when [`advanced`](ManualClock::advance). Convert it into a
/// [`Clock`] with `Clock::from(manual.clone())` and keep the `ManualClock` to drive it.
///
/// On PostgreSQL and MySQL leases follow the database's clock; there a manual clock's
/// advances (not its reading) are added to the database's time, so two registries whose
/// manual clocks started at different readings behave like two machines with skewed clocks.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
    start_ms: i64,
}

impl ManualClock {
    /// A clock standing at `start_ms` milliseconds since the epoch.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            ms: Arc::new(AtomicI64::new(start_ms)),
            start_ms,
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// The current reading.
    pub fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

impl From<ManualClock> for Clock {
    fn from(m: ManualClock) -> Self {
        Clock(Inner::Manual(m))
    }
}
