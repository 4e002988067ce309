//! The error of a policy that does not convert into its part.

use tower::BoxError;

/// A policy value refused when converting it into its part, naming the field by its path
/// (`services.orders.retry.max_retries`). The refusal itself, with the value and what is
/// accepted, is the [`source`](std::error::Error::source): the part's own builder error
/// (for example [`retry::error::BuildError`](crate::retry::error::BuildError)) or an
/// [`InvalidValue`].
#[derive(Debug, thiserror::Error)]
#[error("invalid mesh policy {path}")]
pub struct PolicyError {
    path: String,
    #[source]
    source: BoxError,
}

impl PolicyError {
    pub(crate) fn new(path: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            path: path.into(),
            source: source.into(),
        }
    }

    /// The field's path, from the configuration's root when the error came through
    /// [`MeshConfig`](super::MeshConfig) (`services.orders.retry.max_retries`), else from the
    /// [`Policies`](super::Policies) (`retry.max_retries`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The same error with `prefix.` in front of its path.
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        self.path = format!("{prefix}.{}", self.path);
        self
    }
}

/// A value the mesh policies refuse themselves (the parts' builders refuse the rest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} ({expected})")]
pub struct InvalidValue {
    value: String,
    expected: &'static str,
}

impl InvalidValue {
    pub(crate) fn new(value: impl std::fmt::Debug, expected: &'static str) -> Self {
        Self {
            value: format!("{value:?}"),
            expected,
        }
    }

    /// The value given, as written by `Debug`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is accepted.
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}
