//! [`InstanceBuilder`]: every field of an [`Instance`], checked at `build`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::model::InstanceInner;
use super::validate::{
    check_weight, check_zone, validate_host, validate_metadata, validate_version,
};
use super::{
    Check, Field, Health, Instance, InstanceId, InvalidInput, LastCheck, Scheme, ServiceName,
    DEFAULT_WEIGHT,
};

impl Instance {
    /// Starts building an instance of `service` with id `id`. Defaults: host `127.0.0.1`,
    /// no port (required), scheme `http`, version `0.0.0`, weight 100, no zone, no metadata,
    /// health `passing`, no health check.
    pub fn builder(service: impl Into<String>, id: impl Into<String>) -> InstanceBuilder {
        InstanceBuilder {
            service: service.into(),
            id: id.into(),
            host: "127.0.0.1".to_owned(),
            port: None,
            scheme: Scheme::Http,
            version: "0.0.0".to_owned(),
            weight: DEFAULT_WEIGHT,
            zone: None,
            metadata: BTreeMap::new(),
            health: Health::Passing,
            check: None,
            last_check: None,
        }
    }

    /// A builder holding this instance's values, to derive a changed copy.
    pub fn to_builder(&self) -> InstanceBuilder {
        InstanceBuilder {
            service: self.inner.service.to_string(),
            id: self.inner.id.to_string(),
            host: self.inner.host.to_string(),
            port: Some(u32::from(self.inner.port)),
            scheme: self.inner.scheme,
            version: self.inner.version.to_string(),
            weight: self.inner.weight,
            zone: self.inner.zone.as_deref().map(str::to_owned),
            metadata: self.inner.metadata.clone(),
            health: self.inner.health,
            check: self.inner.check.clone(),
            last_check: self.inner.last_check.clone(),
        }
    }
}

/// Builds a validated [`Instance`]; see [`Instance::builder`].
///
/// Values are checked at [`build`](InstanceBuilder::build), which names the first bad field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceBuilder {
    service: String,
    id: String,
    host: String,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    scheme: Scheme,
    #[serde(default = "default_version")]
    version: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<Check>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_check: Option<LastCheck>,
}

fn default_version() -> String {
    "0.0.0".to_owned()
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl InstanceBuilder {
    /// Sets the host: an IPv4 or IPv6 literal (no brackets) or a DNS name.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets the port (required). Takes a `u32` so that out-of-range values are reported rather
    /// than truncated.
    pub fn port(mut self, port: u32) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets the scheme.
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Sets the version: 1..=128 bytes, no whitespace or control characters.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the weight: 0 (draining) to [`MAX_WEIGHT`](super::MAX_WEIGHT).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the zone: 1..=128 bytes of ASCII letters, digits, `.`, `_`, `-`.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Replaces the metadata map.
    pub fn metadata_map(mut self, metadata: BTreeMap<String, String>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the health.
    pub fn health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Declares a health check (validated when it was built): see [`Check`].
    pub fn check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// Removes the health check.
    pub fn no_check(mut self) -> Self {
        self.check = None;
        self
    }

    /// Validates every field and builds the instance.
    pub fn build(self) -> Result<Instance, InvalidInput> {
        let service = ServiceName::new(&self.service).map_err(|e| e.for_instance(&self.id))?;
        let id = InstanceId::new(&self.id)?;
        let bad = |e: InvalidInput| e.for_instance(&id);
        validate_host(&self.host)
            .map_err(|r| bad(InvalidInput::new(Field::Host, &self.host, r)))?;
        let port = match self.port {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => {
                return Err(bad(InvalidInput::new(
                    Field::Port,
                    p,
                    "must be in 1..=65535",
                )))
            }
            None => return Err(bad(InvalidInput::new(Field::Port, "", "is required"))),
        };
        validate_version(&self.version)
            .map_err(|r| bad(InvalidInput::new(Field::Version, &self.version, r)))?;
        check_weight(self.weight).map_err(bad)?;
        if let Some(zone) = &self.zone {
            check_zone(zone).map_err(bad)?;
        }
        validate_metadata(&self.metadata).map_err(bad)?;
        Ok(Instance {
            inner: Arc::new(InstanceInner {
                service,
                id,
                host: self.host.to_ascii_lowercase(),
                port,
                scheme: self.scheme,
                version: self.version,
                weight: self.weight,
                zone: self.zone,
                metadata: self.metadata,
                health: self.health,
                check: self.check,
                last_check: self.last_check,
            }),
        })
    }
}

impl TryFrom<InstanceBuilder> for Instance {
    type Error = InvalidInput;
    fn try_from(b: InstanceBuilder) -> Result<Self, Self::Error> {
        b.build()
    }
}

impl From<Instance> for InstanceBuilder {
    fn from(i: Instance) -> Self {
        i.to_builder()
    }
}
