//! The settings of a [`Cached`](super::Cached) registry.

use std::time::Duration;

use crate::registry::error::ConfigError;

/// Settings of a [`Cached`](super::Cached) registry; checked by
/// [`Cached::with_options`](super::Cached::with_options).
#[derive(Debug, Clone)]
pub struct CachedOptions {
    pub(super) log_retention: usize,
    pub(super) write_wait: Duration,
}

impl Default for CachedOptions {
    fn default() -> Self {
        CachedOptions {
            log_retention: 10_000,
            write_wait: Duration::from_secs(5),
        }
    }
}

impl CachedOptions {
    /// How many recent changes the cache keeps to serve watchers that start a little in the
    /// past (default 10,000; at least 1). A watcher from further back gets an
    /// [`Event::Reset`](crate::registry::Event::Reset).
    pub fn log_retention(mut self, n: usize) -> Self {
        self.log_retention = n;
        self
    }

    /// How long a write through the cache waits for its own change to come back through the
    /// watch, so that a read after a write sees it (default 5 s; the write succeeds either
    /// way). Zero is allowed and means writes do not wait: reads may then miss the caller's own
    /// latest writes for as long as the watch takes to bring them.
    pub fn write_wait(mut self, wait: Duration) -> Self {
        self.write_wait = wait;
        self
    }

    /// Refuses the options that cannot work; [`Cached::with_options`](super::Cached::with_options)
    /// calls it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.log_retention == 0 {
            return Err(ConfigError::new(
                "log_retention",
                0,
                "must keep at least 1 change",
            ));
        }
        Ok(())
    }
}
