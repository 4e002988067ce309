//! The wake-ups that let a balancer make progress without requests.
//!
//! Every endpoint is polled with a waker of its own ([`EndpointWaker`]): when it fires, the
//! endpoint is queued and the balancer's worker is woken, so only woken endpoints are
//! polled again (as in tower's `ReadyCache`), never every unready endpoint on every
//! `poll_ready`. The discovery stream and the strategy's table builds are polled with a
//! waker that only wakes the worker ([`Notify`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

/// `EndpointWaker::index` of an endpoint that is no longer in the balancer.
pub(crate) const REMOVED: u32 = u32::MAX;

/// `Wakes::word` bit: something needs the balancer's attention (discovery or an endpoint
/// woke, a table finished building, or the state has work left over).
const PENDING: u8 = 0x80;

/// What wakes a balancer, and whom it wakes.
#[derive(Debug, Default)]
pub(crate) struct Wakes {
    /// [`PENDING`], and in the low bits the balancer's status as last published, in one
    /// word so that `poll_ready`'s fast path is a single load.
    word: AtomicU8,
    /// Endpoints woken since the last catch-up, each at most once.
    woken: Mutex<Vec<Arc<EndpointWaker>>>,
    /// The background worker.
    pub(crate) worker: AtomicWaker,
    /// The callers of `poll_ready` (one per waiting `Balance` clone) waiting for an
    /// endpoint, each task once; all are woken at the next change.
    callers: Mutex<Vec<Waker>>,
    /// Whether `callers` may hold a waker: spares the lock when nobody waits.
    waiting: AtomicBool,
    /// The balancer was dropped: the worker ends.
    pub(crate) closed: AtomicBool,
}

impl Wakes {
    /// Something changed: the worker (and a waiting caller) should catch up.
    pub(crate) fn notify(&self) {
        self.keep_pending();
        self.worker.wake();
        self.wake_callers();
    }

    /// Wake `waker` at the next change (it is about to look at the status).
    pub(crate) fn register_caller(&self, waker: &Waker) {
        let mut callers = crate::sync::lock(&self.callers);
        if !callers.iter().any(|w| w.will_wake(waker)) {
            callers.push(waker.clone());
        }
        self.waiting.store(true, Ordering::SeqCst);
    }

    /// Wake every waiting caller.
    ///
    /// The `waiting` check cannot lose a wake-up: a caller sets it after queueing its waker
    /// and only then looks at the state (under the state's lock). A wake that reads `false`
    /// comes from a change already made (published under that lock, or queued and flagged
    /// pending with `SeqCst` before the read), which the caller's look then sees.
    pub(crate) fn wake_callers(&self) {
        if !self.waiting.load(Ordering::SeqCst) {
            return;
        }
        let callers = {
            let mut callers = crate::sync::lock(&self.callers);
            self.waiting.store(false, Ordering::SeqCst);
            std::mem::take(&mut *callers)
        };
        for w in callers {
            w.wake();
        }
    }

    /// The whole word: the status published last, with [`PENDING`] if there is anything to
    /// catch up on. Equal to a status alone when there is nothing to catch up on.
    #[inline]
    pub(crate) fn word(&self) -> u8 {
        self.word.load(Ordering::Acquire)
    }

    /// Whether there is anything to catch up on.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.word() & PENDING != 0
    }

    /// Take the pending flag before catching up: anything that happens from now on sets it
    /// again.
    pub(crate) fn begin(&self) {
        self.word.fetch_and(!PENDING, Ordering::SeqCst);
    }

    /// There is work left that only a later catch-up can do.
    pub(crate) fn keep_pending(&self) {
        self.word.fetch_or(PENDING, Ordering::SeqCst);
    }

    /// Publish the balancer's status (below [`PENDING`]), keeping the pending flag.
    #[inline]
    pub(crate) fn publish(&self, status: u8) {
        let word = self.word.load(Ordering::Relaxed);
        if word & !PENDING != status {
            let _ = self
                .word
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                    Some((w & PENDING) | status)
                });
        }
    }

    /// Move the woken endpoints into `buf` (cleared first); each may be woken again from
    /// now on.
    pub(crate) fn take_woken(&self, buf: &mut Vec<Arc<EndpointWaker>>) {
        buf.clear();
        std::mem::swap(&mut *crate::sync::lock(&self.woken), buf);
        for w in buf.iter() {
            w.queued.store(false, Ordering::SeqCst);
        }
    }

    fn queue(&self, w: &Arc<EndpointWaker>) {
        self.enqueue(w);
        self.notify();
    }

    /// Queue `w` for polling without waking anyone (the caller is catching up and polls
    /// the queue next).
    pub(crate) fn enqueue(&self, w: &Arc<EndpointWaker>) {
        if !w.queued.swap(true, Ordering::SeqCst) {
            crate::sync::lock(&self.woken).push(w.clone());
        }
    }
}

/// The waker an endpoint is polled with: queues the endpoint for polling and wakes the
/// worker.
#[derive(Debug)]
pub(crate) struct EndpointWaker {
    /// The endpoint's index in the balancer, or [`REMOVED`]; written under the balancer's
    /// lock, read under it too.
    index: AtomicU32,
    queued: AtomicBool,
    wakes: Weak<Wakes>,
}

impl EndpointWaker {
    pub(crate) fn new(index: usize, wakes: &Arc<Wakes>) -> Arc<Self> {
        Arc::new(EndpointWaker {
            index: AtomicU32::new(index as u32),
            queued: AtomicBool::new(false),
            wakes: Arc::downgrade(wakes),
        })
    }

    /// The endpoint's current index, if it is still in the balancer.
    pub(crate) fn index(&self) -> Option<usize> {
        match self.index.load(Ordering::Relaxed) {
            REMOVED => None,
            i => Some(i as usize),
        }
    }

    pub(crate) fn set_index(&self, index: usize) {
        self.index.store(index as u32, Ordering::Relaxed);
    }

    pub(crate) fn set_removed(&self) {
        self.index.store(REMOVED, Ordering::Relaxed);
    }

    fn schedule(self: &Arc<Self>) {
        if let Some(wakes) = self.wakes.upgrade() {
            wakes.queue(self);
        }
    }
}

impl Wake for EndpointWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.index.load(Ordering::Relaxed) != REMOVED {
            self.schedule();
        }
    }
}

/// The waker of the discovery stream and of table builds: wakes the worker.
#[derive(Debug)]
pub(crate) struct Notify(pub(crate) Weak<Wakes>);

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(wakes) = self.0.upgrade() {
            wakes.notify();
        }
    }
}
