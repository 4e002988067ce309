//! Future types for [`Balance`](super::Balance).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::balance::endpoints::LoadChunk;
use crate::balance::BoxError;

/// Keeps an endpoint's in-flight count up while a request runs and records its latency.
///
/// It holds the chunk of load slots the endpoint's slot is in (and the slot), so the count
/// outlives the endpoint's removal and the balancer itself.
pub(crate) struct LoadGuard {
    chunk: Arc<LoadChunk>,
    slot: u32,
    off: u32,
    start: Option<Instant>,
}

impl LoadGuard {
    pub(crate) fn new(
        chunk: Arc<LoadChunk>,
        slot: u32,
        off: usize,
        start: Option<Instant>,
    ) -> Self {
        chunk.start(off);
        Self {
            chunk,
            slot,
            off: off as u32,
            start,
        }
    }

    fn complete(self) {
        if let Some(start) = self.start {
            let now = Instant::now();
            self.chunk
                .observe(self.off as usize, now.saturating_duration_since(start), now);
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.chunk.end(self.slot, self.off as usize);
    }
}

impl std::fmt::Debug for LoadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadGuard")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Balance`](super::Balance): the chosen endpoint's future,
    /// run inside a `balance` tracing span whose `endpoint` field is the endpoint's key.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<LoadGuard>,
        span: tracing::Span,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, guard: Option<LoadGuard>, span: tracing::Span) -> Self {
        Self { inner, guard, span }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let out = ready!(this.inner.poll(cx));
        if let Some(guard) = this.guard.take() {
            guard.complete();
        }
        Poll::Ready(out.map_err(Into::into))
    }
}
