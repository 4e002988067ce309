//! How to speak to an instance.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Field, InvalidInput};

/// How to speak to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP/1.1 or HTTP/2.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
    /// gRPC (HTTP/2).
    Grpc,
}

impl Scheme {
    /// The scheme as stored and displayed: `http`, `https` or `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Grpc => "grpc",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            "grpc" => Ok(Scheme::Grpc),
            _ => Err(InvalidInput::new(
                Field::Scheme,
                s,
                "must be one of http, https, grpc",
            )),
        }
    }
}
