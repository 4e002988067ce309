//! [`InvalidSetting`]: the error of a builder that refuses a setting, shared by the modules
//! whose settings are plain values (the balancer, the retry layer). Built with `balance`,
//! which every such module turns on.

/// A setting a builder refuses: which component, the setting's name, the value given and
/// what is accepted (`invalid load balancer setting panic_threshold_percent: 101 (must be
/// 0 to 100)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {component} setting {setting}: {value} ({expected})")]
pub struct InvalidSetting {
    component: &'static str,
    setting: &'static str,
    value: String,
    expected: &'static str,
}

impl InvalidSetting {
    pub(crate) fn new(
        component: &'static str,
        setting: &'static str,
        value: impl std::fmt::Debug,
        expected: &'static str,
    ) -> Self {
        Self {
            component,
            setting,
            value: format!("{value:?}"),
            expected,
        }
    }
}

impl InvalidSetting {
    /// The setting's name, as the builder method that takes it (`"panic_threshold_percent"`).
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The value given, as written by `Debug` (`"150"`, `"0ns"`).
    pub fn value(&self) -> &str {
        &self.value
    }
}
