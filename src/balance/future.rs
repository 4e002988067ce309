//! Future types for [`Balance`](super::Balance).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::balance::load::LoadTable;
use crate::balance::BoxError;

/// `ResponseFuture::start_ns` when the request's latency is not recorded.
pub(crate) const NO_START: u64 = u64::MAX;

/// Keeps an endpoint's in-flight count up while a request runs.
///
/// It holds the balancer's load table (one `Arc`, whose count lives on one always-hot
/// cache line) and the endpoint's slot in it, so the count outlives the endpoint's removal
/// and the balancer itself. Two words, so that it stays in registers until `call` writes
/// it into the response future (a wider guard was spilled and copied, and the copy's wide
/// reads of its narrow stores stalled on store forwarding).
pub(crate) struct LoadGuard {
    table: Arc<LoadTable>,
    /// The slot id (a `u32`), widened so that no copy reads padding.
    slot: u64,
}

impl LoadGuard {
    /// Count a request in flight on `slot`.
    #[inline]
    pub(crate) fn new(table: &Arc<LoadTable>, slot: u32) -> Self {
        table.start(slot);
        Self {
            table: table.clone(),
            slot: u64::from(slot),
        }
    }

    /// Record a latency sample for a request that started `start_ns` nanoseconds after
    /// the table's epoch.
    #[inline]
    fn observe(&self, start_ns: u64) {
        let t = self.table.now_ns();
        self.table
            .observe(self.slot as u32, t.saturating_sub(start_ns), t);
    }
}

impl Drop for LoadGuard {
    #[inline]
    fn drop(&mut self) {
        self.table.end(self.slot as u32);
    }
}

impl std::fmt::Debug for LoadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadGuard")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Balance`](super::Balance): the chosen endpoint's future,
    /// run inside a `balance` tracing span whose `endpoint` field is the endpoint's key; or,
    /// when the balancer had no endpoint to send the request to
    /// ([`NoEndpoints`](super::error::NoEndpoints), [`Panic`](super::error::Panic)), a
    /// future that fails at once with that error.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<LoadGuard>,
        // When the request started, in nanoseconds since the load table's epoch, if its
        // latency is recorded, else `NO_START`.
        start_ns: u64,
        span: tracing::Span,
        error: Option<BoxError>,
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(
        inner: F,
        guard: Option<LoadGuard>,
        start_ns: u64,
        span: tracing::Span,
    ) -> Self {
        Self {
            inner: Some(inner),
            guard,
            start_ns,
            span,
            error: None,
        }
    }

    /// A future that fails at once with `error`.
    #[cold]
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            inner: None,
            guard: None,
            start_ns: NO_START,
            span: tracing::Span::none(),
            error: Some(error),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(this
                .error
                .take()
                .expect("ResponseFuture polled after completion")));
        };
        let _entered = this.span.enter();
        let out = ready!(inner.poll(cx));
        // Fields read in place, not moved out: the future was usually written just before.
        if let Some(guard) = this.guard.as_ref() {
            if *this.start_ns != NO_START {
                guard.observe(*this.start_ns);
            }
            // The in-flight count goes down now, not when the future is dropped.
            *this.guard = None;
        }
        Poll::Ready(out.map_err(Into::into))
    }
}
