//! Errors for invalid instance data.

use std::fmt;

/// The field of an instance, or of a call, that a rejected value was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The service name.
    Service,
    /// The instance id.
    Id,
    /// The host (IP literal or DNS name).
    Host,
    /// The port.
    Port,
    /// The scheme (`http`, `https`, `grpc`).
    Scheme,
    /// The version.
    Version,
    /// The weight.
    Weight,
    /// The zone.
    Zone,
    /// The metadata map.
    Metadata,
    /// The health status.
    Health,
    /// The lease time-to-live.
    Ttl,
    /// An endpoint URL of a [`Microservice`](super::Microservice).
    Endpoint,
    /// A health check's port.
    CheckPort,
    /// A health check's interval.
    CheckInterval,
    /// A health check's jitter.
    CheckJitter,
    /// A health check's timeout.
    CheckTimeout,
    /// A health check's interval while critical.
    CheckUnhealthyInterval,
    /// A health check's `healthy_threshold`.
    CheckHealthyThreshold,
    /// A health check's `unhealthy_threshold`.
    CheckUnhealthyThreshold,
    /// An HTTP check's method.
    CheckMethod,
    /// An HTTP check's path.
    CheckPath,
    /// An HTTP check's accepted status ranges.
    CheckStatus,
    /// An HTTP check's body substring.
    CheckBody,
    /// A gRPC check's service name.
    CheckService,
    /// A check's output, as stored.
    CheckOutput,
}

impl Field {
    /// The field's name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Service => "service name",
            Field::Id => "instance id",
            Field::Host => "host",
            Field::Port => "port",
            Field::Scheme => "scheme",
            Field::Version => "version",
            Field::Weight => "weight",
            Field::Zone => "zone",
            Field::Metadata => "metadata",
            Field::Health => "health",
            Field::Ttl => "ttl",
            Field::Endpoint => "endpoint",
            Field::CheckPort => "check port",
            Field::CheckInterval => "check interval",
            Field::CheckJitter => "check jitter",
            Field::CheckTimeout => "check timeout",
            Field::CheckUnhealthyInterval => "check unhealthy_interval",
            Field::CheckHealthyThreshold => "check healthy_threshold",
            Field::CheckUnhealthyThreshold => "check unhealthy_threshold",
            Field::CheckMethod => "check method",
            Field::CheckPath => "check path",
            Field::CheckStatus => "check status range",
            Field::CheckBody => "check body substring",
            Field::CheckService => "check grpc service",
            Field::CheckOutput => "check output",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value rejected by validation: which field, the offending value, which instance, and why.
///
/// Displays as `invalid port 0 for instance "orders-1": must be in 1..=65535`. It has no
/// source: nothing failed underneath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput {
    field: Field,
    value: String,
    instance: Option<String>,
    reason: &'static str,
}

impl InvalidInput {
    pub(crate) fn new(field: Field, value: impl fmt::Display, reason: &'static str) -> Self {
        // Keep error messages bounded however large the rejected value is.
        let mut value = value.to_string();
        if value.len() > 128 {
            let mut cut = 120;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push_str("...");
        }
        InvalidInput {
            field,
            value,
            instance: None,
            reason,
        }
    }

    pub(crate) fn for_instance(mut self, instance: impl fmt::Display) -> Self {
        self.instance = Some(instance.to_string());
        self
    }

    /// The field the value was given for.
    pub fn field(&self) -> Field {
        self.field
    }

    /// The rejected value, as text (truncated past 120 bytes).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The instance the value belonged to, when known.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

// Written by hand rather than with thiserror: numbers go unquoted, and thiserror formats a
// struct from one format string only.
impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            // Numbers and durations read better unquoted: `invalid port 0`.
            Field::Port
            | Field::Weight
            | Field::Ttl
            | Field::CheckPort
            | Field::CheckInterval
            | Field::CheckJitter
            | Field::CheckTimeout
            | Field::CheckUnhealthyInterval
            | Field::CheckHealthyThreshold
            | Field::CheckUnhealthyThreshold
            | Field::CheckStatus => write!(f, "invalid {} {}", self.field, self.value)?,
            _ => write!(f, "invalid {} {:?}", self.field, self.value)?,
        }
        if let Some(instance) = &self.instance {
            write!(f, " for instance {instance:?}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for InvalidInput {}
