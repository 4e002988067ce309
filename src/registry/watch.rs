//! The stream a registry watch returns.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::{Error, Event};

/// The changes to a service (or to all services) after a revision, in order, with no gaps.
///
/// - Every change after the starting revision arrives exactly once, in revision order.
/// - If the history the watch needs was compacted away, the first item is an
///   [`Event::Reset`] carrying the whole current state; changes after it follow. The same
///   happens when the watch is at a revision the registry has not reached: one from another
///   history (a database restored from a backup or replaced while it watched, or a starting
///   revision from elsewhere). A restore is seen as long as the database's revision is below
///   the watcher's when the watcher next reads; one followed by more writes than it undid
///   before that read looks like ordinary history.
/// - The stream does not end while its registry exists. An `Err` item is a report, not the
///   end: a database failure is retried with backoff and the watch resumes from the last
///   revision it delivered (then sends [`Event::Progress`]); a corrupt stored event is reported
///   once (naming the service and instance) and skipped.
///
/// `Watch` is `Unpin` and `Send`; it is boxed once when created, never per item.
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>,
}

impl Watch {
    /// Wraps a stream as a `Watch`, for [`Registry`](super::Registry) implementations of your
    /// own. The stream must keep the promises above.
    pub fn new(stream: impl Stream<Item = Result<Event, Error>> + Send + 'static) -> Self {
        Watch {
            inner: Box::pin(stream),
        }
    }
}

impl Stream for Watch {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}
