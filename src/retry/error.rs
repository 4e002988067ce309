//! Errors of the retry layer.

/// A retry setting that [`Builder::build`](super::Builder::build) refuses: the setting's
/// name, the value given and what is accepted.
pub type BuildError = crate::setting::InvalidSetting;

/// The retry layer's component name in [`BuildError`]'s message.
pub(crate) const COMPONENT: &str = "retry";
