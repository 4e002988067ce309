//! Strategy tables built off the runtime's threads.
//!
//! A large lookup table (a Maglev table, a hash ring, a weighted schedule) takes from
//! milliseconds to a good part of a second to build. [`Build::start`] runs the build on
//! tokio's blocking pool ([`spawn_blocking`](tokio::task::spawn_blocking)), never on a
//! runtime worker thread, and wakes the balancer when the table is ready. Outside a tokio
//! runtime there is no worker thread to protect and the build runs in place.
//!
//! A build that panics is not re-raised anywhere: the panic unwinds the blocking thread
//! (tokio reports it there), a guard marks the build failed, and the strategy keeps its
//! previous table and logs an error.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

struct Shared<T> {
    state: AtomicU8,
    out: Mutex<Option<T>>,
    /// Signalled when the build ends, for [`Build::wait`].
    ended: Condvar,
    waker: AtomicWaker,
}

/// A table being built off the runtime's threads.
pub(crate) struct Build<T> {
    shared: Arc<Shared<T>>,
}

/// Moved into the build: records the outcome when dropped, including when the build
/// panics (the guard is dropped while unwinding) or is never run (the runtime shut down
/// before the blocking pool took it).
struct Finish<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Finish<T> {
    fn complete(self, value: T) {
        *crate::sync::lock(&self.shared.out) = Some(value);
        // `drop` sees the value and reports success.
    }
}

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        let out = crate::sync::lock(&self.shared.out);
        let state = if out.is_some() { DONE } else { FAILED };
        self.shared.state.store(state, Ordering::Release);
        // Woken before `wait` can return (it reads the state under the same lock).
        self.shared.waker.wake();
        drop(out);
        self.shared.ended.notify_all();
    }
}

impl<T: Send + 'static> Build<T> {
    /// Runs `build` on tokio's blocking pool if called inside a runtime, else in place.
    pub(crate) fn start<F>(build: F) -> Self
    where
        F: FnOnce() -> T + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(RUNNING),
            out: Mutex::new(None),
            ended: Condvar::new(),
            waker: AtomicWaker::new(),
        });
        let finish = Finish {
            shared: shared.clone(),
        };
        let job = move || finish.complete(build());
        match tokio::runtime::Handle::try_current() {
            // The returned handle is not needed: the guard reports the outcome.
            Ok(rt) => drop(rt.spawn_blocking(job)),
            Err(_) => job(),
        }
        Build { shared }
    }
}

impl<T> Build<T> {
    /// The built table once ready (`Some`), or `None` if the build failed; `Pending`
    /// (and `cx` woken later) while it runs.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.shared.state.load(Ordering::Acquire) == RUNNING {
            self.shared.waker.register(cx.waker());
            if self.shared.state.load(Ordering::Acquire) == RUNNING {
                return Poll::Pending;
            }
        }
        Poll::Ready(self.take())
    }

    /// Whether the build has ended (successfully or not).
    pub(crate) fn is_finished(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) != RUNNING
    }

    fn take(&self) -> Option<T> {
        crate::sync::lock(&self.shared.out).take()
    }

    /// Blocks the calling thread until the build ends (for tests and orderly shutdowns;
    /// never called on the request path).
    pub(crate) fn wait(&self) -> Option<T> {
        let mut out = crate::sync::lock(&self.shared.out);
        while self.shared.state.load(Ordering::Acquire) == RUNNING {
            out = self
                .shared
                .ended
                .wait(out)
                .unwrap_or_else(PoisonError::into_inner);
        }
        out.take()
    }
}

impl<T> fmt::Debug for Build<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Build")
            .field("finished", &self.is_finished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn without_a_runtime_the_build_runs_in_place() {
        let b = Build::start(|| 42);
        assert!(b.is_finished());
        let waker = futures_util::task::noop_waker();
        assert_eq!(
            b.poll(&mut Context::from_waker(&waker)),
            Poll::Ready(Some(42))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn in_a_runtime_the_build_runs_on_the_blocking_pool_and_wakes() {
        let on = std::thread::current().id();
        let b = Build::start(move || std::thread::current().id() != on);
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = std::task::Waker::from(flag.clone());
        let first = b.poll(&mut Context::from_waker(&waker));
        let out = b.wait();
        if first.is_pending() {
            assert!(flag.0.load(Ordering::SeqCst), "woken when done");
        }
        match first {
            Poll::Ready(v) => assert_eq!(v, Some(true)),
            Poll::Pending => assert_eq!(out, Some(true)),
        }
    }

    /// A panicking build is reported as failed, never re-raised in the caller.
    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_build_fails_quietly() {
        let b: Build<u32> = Build::start(|| panic!("fill failed"));
        assert_eq!(b.wait(), None);
        assert!(b.is_finished());
        let waker = futures_util::task::noop_waker();
        assert_eq!(b.poll(&mut Context::from_waker(&waker)), Poll::Ready(None));
    }
}
