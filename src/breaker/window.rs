//! Sliding windows of call outcomes: count-based (last N calls) and time-based (per-second
//! buckets over N seconds), as in resilience4j's `SlidingWindowType`.

use super::policy::Window;

/// Aggregate of the calls in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    second: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// A sliding window. Recording is O(1) for count windows and O(N) for time windows (N buckets,
/// summed on each record; N is the window length in seconds and small in practice).
#[derive(Debug)]
pub(crate) enum Outcomes {
    Count {
        /// Bit 0: failure, bit 1: slow.
        ring: Box<[u8]>,
        next: usize,
        filled: usize,
        totals: Totals,
    },
    Time {
        buckets: Box<[Bucket]>,
    },
}

impl Outcomes {
    pub(crate) fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => Outcomes::Count {
                ring: vec![0; n as usize].into_boxed_slice(),
                next: 0,
                filled: 0,
                totals: Totals::default(),
            },
            Window::Time(n) => Outcomes::Time {
                buckets: vec![
                    Bucket {
                        second: u64::MAX,
                        ..Bucket::default()
                    };
                    n as usize
                ]
                .into_boxed_slice(),
            },
        }
    }

    pub(crate) fn reset(&mut self) {
        match self {
            Outcomes::Count {
                ring,
                next,
                filled,
                totals,
            } => {
                ring.iter_mut().for_each(|b| *b = 0);
                *next = 0;
                *filled = 0;
                *totals = Totals::default();
            }
            Outcomes::Time { buckets } => buckets.iter_mut().for_each(|b| {
                *b = Bucket {
                    second: u64::MAX,
                    ..Bucket::default()
                }
            }),
        }
    }

    /// Records one call made at `second` (whole seconds since the breaker was built) and returns
    /// the window's totals afterwards.
    pub(crate) fn record(&mut self, failure: bool, slow: bool, second: u64) -> Totals {
        match self {
            Outcomes::Count {
                ring,
                next,
                filled,
                totals,
            } => {
                if *filled == ring.len() {
                    let old = ring[*next];
                    totals.calls -= 1;
                    totals.failures -= u64::from(old & 1);
                    totals.slow -= u64::from((old >> 1) & 1);
                } else {
                    *filled += 1;
                }
                ring[*next] = u8::from(failure) | (u8::from(slow) << 1);
                *next = (*next + 1) % ring.len();
                totals.calls += 1;
                totals.failures += u64::from(failure);
                totals.slow += u64::from(slow);
                *totals
            }
            Outcomes::Time { buckets } => {
                let len = buckets.len() as u64;
                let bucket = &mut buckets[(second % len) as usize];
                if bucket.second != second {
                    *bucket = Bucket {
                        second,
                        ..Bucket::default()
                    };
                }
                bucket.calls = bucket.calls.saturating_add(1);
                bucket.failures = bucket.failures.saturating_add(u32::from(failure));
                bucket.slow = bucket.slow.saturating_add(u32::from(slow));
                let oldest = second.saturating_sub(len - 1);
                buckets
                    .iter()
                    .filter(|b| b.second != u64::MAX && b.second >= oldest && b.second <= second)
                    .fold(Totals::default(), |t, b| Totals {
                        calls: t.calls + u64::from(b.calls),
                        failures: t.failures + u64::from(b.failures),
                        slow: t.slow + u64::from(b.slow),
                    })
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn count_window_forgets_oldest() {
        let mut w = Outcomes::new(Window::Count(3));
        w.record(true, false, 0);
        w.record(false, true, 0);
        let t = w.record(false, false, 0);
        assert_eq!(
            t,
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        let t = w.record(false, false, 0);
        assert_eq!(
            t,
            Totals {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(
            w.record(true, true, 0),
            Totals {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
    }

    #[test]
    fn time_window_expires_buckets() {
        let mut w = Outcomes::new(Window::Time(2));
        w.record(true, false, 10);
        let t = w.record(false, false, 11);
        assert_eq!(
            t,
            Totals {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
        let t = w.record(false, false, 12);
        assert_eq!(
            t,
            Totals {
                calls: 2,
                failures: 0,
                slow: 0
            }
        );
        let t = w.record(false, false, 20);
        assert_eq!(
            t,
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
    }
}
