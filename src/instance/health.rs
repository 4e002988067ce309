//! An instance's health.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Field, InvalidInput};

/// An instance's health, with Consul's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Healthy: takes traffic.
    #[default]
    Passing,
    /// Degraded but serving: takes traffic unless a consumer filters warnings out.
    Warning,
    /// Failing (or its lease was missed): takes no traffic.
    Critical,
    /// Taken out of service on purpose: takes no traffic.
    Maintenance,
}

impl Health {
    /// The health as stored and displayed: `passing`, `warning`, `critical`, `maintenance`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
            Health::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Health {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passing" => Ok(Health::Passing),
            "warning" => Ok(Health::Warning),
            "critical" => Ok(Health::Critical),
            "maintenance" => Ok(Health::Maintenance),
            _ => Err(InvalidInput::new(
                Field::Health,
                s,
                "must be one of passing, warning, critical, maintenance",
            )),
        }
    }
}
