//! The mesh's request and response bodies.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower::BoxError;

use crate::retry::RetryBody;

/// The body of a request through the mesh: whole (`Bytes`, a `String`, `Full<Bytes>`: sent
/// again on another endpoint when a retry is allowed), or a stream (an axum or hyper request
/// body, passed through as it comes and never buffered, so sent once).
///
/// ```
/// use tower_mesh::mesh::RequestBody;
///
/// let whole = RequestBody::from("{\"id\": 42}");
/// assert!(whole.is_replayable());
/// let empty = RequestBody::empty();
/// # let upload = http_body_util::Empty::<bytes::Bytes>::new();
/// let streamed = RequestBody::stream(upload); // e.g. an axum `Body` being uploaded
/// assert!(!streamed.is_replayable());
/// # drop(empty);
/// ```
pub struct RequestBody {
    kind: Kind,
}

enum Kind {
    Whole(Full<Bytes>),
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        Self::whole(Bytes::new())
    }

    /// A whole body.
    pub fn whole(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Whole(Full::new(bytes.into())),
        }
    }

    /// A streamed body: each frame is sent as it comes. A request with a streamed body is
    /// never retried.
    pub fn stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Stream(body.map_err(Into::into).boxed_unsync()),
        }
    }

    /// Whether the body can be sent again (it is whole).
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Whole(_))
    }
}

impl Default for RequestBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Whole(b) => f
                .debug_struct("RequestBody")
                .field("whole", &http_body::Body::size_hint(b).exact())
                .finish(),
            Kind::Stream(_) => f
                .debug_struct("RequestBody")
                .field("stream", &true)
                .finish(),
        }
    }
}

impl From<Full<Bytes>> for RequestBody {
    fn from(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Whole(body),
        }
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> Self {
        Self::whole(bytes)
    }
}

impl From<String> for RequestBody {
    fn from(s: String) -> Self {
        Self::whole(s)
    }
}

impl From<&'static str> for RequestBody {
    fn from(s: &'static str) -> Self {
        Self::whole(s)
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(v: Vec<u8>) -> Self {
        Self::whole(v)
    }
}

impl From<()> for RequestBody {
    fn from(_: ()) -> Self {
        Self::empty()
    }
}

impl RetryBody for RequestBody {
    fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Whole(b) => Some(Self {
                kind: Kind::Whole(b.clone()),
            }),
            Kind::Stream(_) => None,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Whole(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Kind::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole(b) => b.is_end_stream(),
            Kind::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole(b) => b.size_hint(),
            Kind::Stream(b) => b.size_hint(),
        }
    }
}

/// A response body from the mesh: the endpoint's body, streamed (not buffered), boxed so
/// that its type does not spell out the stack.
pub struct Body {
    inner: UnsyncBoxBody<Bytes, BoxError>,
}

impl Body {
    pub(crate) fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: body.map_err(Into::into).boxed_unsync(),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
