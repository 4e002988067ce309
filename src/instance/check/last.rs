//! [`LastCheck`]: the output of the check that last set an instance's health, and when.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::MAX_CHECK_OUTPUT;
use crate::instance::{Field, InvalidInput};

/// What the check that last set an instance's health said, and when it ran: kept with the
/// instance in the registry so that reports can show it (Consul's check `Output`).
///
/// The output is a status line (`HTTP 503 Service Unavailable`), an error (`connect: connection
/// refused`) or a reason (an outlier ejection's), at most [`MAX_CHECK_OUTPUT`] bytes.
///
/// ```
/// use tower_mesh::instance::{LastCheck, MAX_CHECK_OUTPUT};
///
/// let last = LastCheck::new("HTTP 200 OK", 1_800_000_000_000);
/// assert_eq!(last.output(), "HTTP 200 OK");
/// let long = LastCheck::new("x".repeat(10_000), 0);
/// assert_eq!(long.output().len(), MAX_CHECK_OUTPUT);
/// assert!(long.output().ends_with("..."));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Raw")]
pub struct LastCheck {
    output: String,
    checked_at_ms: i64,
}

#[derive(Deserialize)]
struct Raw {
    output: String,
    checked_at_ms: i64,
}

impl LastCheck {
    /// A check's output and the time it ran, in milliseconds since the Unix epoch (a
    /// registry's [`Clock::now_ms`](crate::registry::Clock::now_ms)). An output longer than
    /// [`MAX_CHECK_OUTPUT`] bytes is cut at a character boundary and ends in `...`: check output
    /// is a report, and a long one is not an error.
    pub fn new(output: impl Into<String>, checked_at_ms: i64) -> Self {
        let mut output = output.into();
        if output.len() > MAX_CHECK_OUTPUT {
            let mut cut = MAX_CHECK_OUTPUT - 3;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
            output.push_str("...");
        }
        LastCheck {
            output,
            checked_at_ms,
        }
    }

    /// A stored output and time, refusing an output longer than [`MAX_CHECK_OUTPUT`] (which
    /// this crate never stores).
    pub(crate) fn stored(output: String, checked_at_ms: i64) -> Result<Self, InvalidInput> {
        if output.len() > MAX_CHECK_OUTPUT {
            return Err(InvalidInput::new(
                Field::CheckOutput,
                output,
                "must be at most 4096 bytes",
            ));
        }
        Ok(LastCheck {
            output,
            checked_at_ms,
        })
    }

    /// The check's output: a status line, an error or a reason.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// When the check ran, in milliseconds since the Unix epoch.
    pub fn checked_at_ms(&self) -> i64 {
        self.checked_at_ms
    }

    /// When the check ran.
    pub fn checked_at(&self) -> SystemTime {
        match u64::try_from(self.checked_at_ms) {
            Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
            Err(_) => UNIX_EPOCH - Duration::from_millis(self.checked_at_ms.unsigned_abs()),
        }
    }
}

impl TryFrom<Raw> for LastCheck {
    type Error = InvalidInput;
    fn try_from(raw: Raw) -> Result<Self, Self::Error> {
        LastCheck::stored(raw.output, raw.checked_at_ms)
    }
}
