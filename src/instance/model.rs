//! The validated [`Instance`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::validate::check_weight;
use super::{
    Check, Health, InstanceBuilder, InstanceId, InvalidInput, LastCheck, Scheme, ServiceName,
};

/// One running copy of a service: where it is, how to reach it, and how it is doing.
///
/// Built with [`Instance::builder`], which validates every field; an `Instance` that exists is
/// valid. Deserializing validates too.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "InstanceBuilder", into = "InstanceBuilder")]
pub struct Instance {
    // One allocation, so a clone is one reference count: instances are cloned into every
    // snapshot, event and endpoint.
    pub(super) inner: Arc<InstanceInner>,
}

#[derive(Clone, PartialEq, Eq)]
pub(super) struct InstanceInner {
    pub(super) service: ServiceName,
    pub(super) id: InstanceId,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) scheme: Scheme,
    pub(super) version: String,
    pub(super) weight: u32,
    pub(super) zone: Option<String>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) health: Health,
    pub(super) check: Option<Check>,
    pub(super) last_check: Option<LastCheck>,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("service", &self.inner.service)
            .field("id", &self.inner.id)
            .field(
                "address",
                &format_args!("{}://{}", self.inner.scheme, self.authority()),
            )
            .field("version", &self.inner.version)
            .field("weight", &self.inner.weight)
            .field("zone", &self.inner.zone)
            .field("metadata", &self.inner.metadata)
            .field("health", &self.inner.health)
            .field("check", &self.inner.check)
            .field("last_check", &self.inner.last_check)
            .finish()
    }
}

impl Instance {
    /// The service this instance belongs to.
    pub fn service(&self) -> &ServiceName {
        &self.inner.service
    }

    /// The instance's id, unique within its service.
    pub fn id(&self) -> &InstanceId {
        &self.inner.id
    }

    /// The host: an IP literal or a DNS name.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The port, 1..=65535.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// How to speak to the instance.
    pub fn scheme(&self) -> Scheme {
        self.inner.scheme
    }

    /// The version the instance runs.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The instance's weight: 100 by default, 0 means draining (no new traffic).
    pub fn weight(&self) -> u32 {
        self.inner.weight
    }

    /// The zone the instance runs in, if known.
    pub fn zone(&self) -> Option<&str> {
        self.inner.zone.as_deref()
    }

    /// The instance's metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.inner.metadata
    }

    /// The instance's health.
    pub fn health(&self) -> Health {
        self.inner.health
    }

    /// The health check declared with the instance, if any: what a checker runs against it.
    pub fn check(&self) -> Option<&Check> {
        self.inner.check.as_ref()
    }

    /// The output and time of the check that last set the instance's health, if one did
    /// (see [`LastCheck`]). A plain health write without one clears it.
    pub fn last_check(&self) -> Option<&LastCheck> {
        self.inner.last_check.as_ref()
    }

    /// `host:port`, with an IPv6 host in brackets: what goes in a URI's authority.
    pub fn authority(&self) -> String {
        if self.inner.host.contains(':') {
            format!("[{}]:{}", self.inner.host, self.inner.port)
        } else {
            format!("{}:{}", self.inner.host, self.inner.port)
        }
    }

    /// Whether the instance is draining (weight 0): it keeps its connections but gets no new
    /// traffic.
    pub fn is_draining(&self) -> bool {
        self.inner.weight == 0
    }

    /// A copy with another health.
    pub fn with_health(mut self, health: Health) -> Self {
        Arc::make_mut(&mut self.inner).health = health;
        self
    }

    /// A copy with another last check output (or none).
    pub fn with_last_check(mut self, last_check: Option<LastCheck>) -> Self {
        Arc::make_mut(&mut self.inner).last_check = last_check;
        self
    }

    /// A copy with another weight; fails past [`MAX_WEIGHT`](super::MAX_WEIGHT).
    pub fn with_weight(mut self, weight: u32) -> Result<Self, InvalidInput> {
        check_weight(weight).map_err(|e| e.for_instance(&self.inner.id))?;
        Arc::make_mut(&mut self.inner).weight = weight;
        Ok(self)
    }

    /// Whether two versions of one instance differ in how it is reached or weighed: address,
    /// scheme, version, weight, zone or metadata. Health, the last check's output and the check
    /// spec are not compared: they change whether an endpoint is used, not the endpoint.
    pub fn differs_besides_health(&self, other: &Instance) -> bool {
        self.inner.host != other.inner.host
            || self.inner.port != other.inner.port
            || self.inner.scheme != other.inner.scheme
            || self.inner.version != other.inner.version
            || self.inner.weight != other.inner.weight
            || self.inner.zone != other.inner.zone
            || self.inner.metadata != other.inner.metadata
    }
}
