//! Errors of the retry layer.

/// A retry setting that [`Builder::build`](super::Builder::build) refuses: the setting's
/// name, the value given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry setting {setting}: {value} ({expected})")]
pub struct BuildError {
    setting: &'static str,
    value: String,
    expected: &'static str,
}

impl BuildError {
    pub(crate) fn new(
        setting: &'static str,
        value: impl std::fmt::Debug,
        expected: &'static str,
    ) -> Self {
        Self {
            setting,
            value: format!("{value:?}"),
            expected,
        }
    }

    /// The setting's name, as the builder method that takes it (`"retry_ratio"`).
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The value given, as written by `Debug` (`"1500.0"`, `"0ns"`).
    pub fn value(&self) -> &str {
        &self.value
    }
}
