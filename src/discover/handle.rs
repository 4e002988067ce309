//! [`DiscoverHandle`]: how a discover stream is doing, from any task.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::instance::ServiceName;
use crate::registry::Revision;

/// Reports how a [`RegistryDiscover`](super::RegistryDiscover) is doing; cheap to clone, usable from any task.
#[derive(Clone)]
pub struct DiscoverHandle {
    pub(super) shared: Arc<HandleShared>,
}

pub(super) struct HandleShared {
    pub(super) service: Option<ServiceName>,
    pub(super) stale: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) revision: AtomicU64,
    pub(super) endpoints: AtomicUsize,
    pub(super) changed: tokio::sync::watch::Sender<u64>,
}

impl DiscoverHandle {
    pub(super) fn new(service: Option<ServiceName>) -> Self {
        DiscoverHandle {
            shared: Arc::new(HandleShared {
                service,
                stale: AtomicBool::new(false),
                last_error: Mutex::new(None),
                revision: AtomicU64::new(0),
                endpoints: AtomicUsize::new(0),
                changed: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// Marks the stream stale with `error`.
    pub(super) fn fail(&self, error: String) {
        self.shared.stale.store(true, Ordering::Relaxed);
        *crate::sync::lock(&self.shared.last_error) = Some(error);
    }

    /// Whether the registry is currently failing, so the endpoint set may be out of date
    /// (it is still served).
    pub fn is_stale(&self) -> bool {
        self.shared.stale.load(Ordering::Relaxed)
    }

    /// The last registry error, as text.
    pub fn last_error(&self) -> Option<String> {
        crate::sync::lock(&self.shared.last_error).clone()
    }

    /// The registry revision the stream has applied.
    pub fn revision(&self) -> Revision {
        Revision::new(self.shared.revision.load(Ordering::Relaxed))
    }

    /// How many endpoints the balancer holds, or will once it takes the changes waiting for it.
    pub fn endpoints(&self) -> usize {
        self.shared.endpoints.load(Ordering::Relaxed)
    }

    /// Waits until the stream has applied `revision` (its changes wait for, or were taken by,
    /// the balancer).
    pub async fn applied(&self, revision: Revision) {
        let mut rx = self.shared.changed.subscribe();
        let _ = rx.wait_for(|r| *r >= revision.get()).await;
    }
}

impl fmt::Display for DiscoverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shared.service {
            Some(s) => s.fmt(f),
            None => f.write_str("<invalid>"),
        }
    }
}

impl fmt::Debug for DiscoverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoverHandle")
            .field("service", &self.shared.service)
            .field("stale", &self.is_stale())
            .field("revision", &self.revision())
            .field("endpoints", &self.endpoints())
            .finish()
    }
}
