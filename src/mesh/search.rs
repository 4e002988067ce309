//! [`ServiceFilter`]: what [`Mesh::search_services`](super::Mesh::search_services) matches.

use std::collections::BTreeMap;

use crate::instance::{Instance, ServiceName};

/// Which instances a search returns: every condition set must hold (no condition matches
/// everything).
///
/// ```
/// use tower_mesh::instance::Instance;
/// use tower_mesh::mesh::ServiceFilter;
///
/// let filter = ServiceFilter::new()
///     .name_prefix("ord")
///     .version("2.1.0")
///     .metadata("team", "payments");
/// let orders = Instance::builder("orders", "orders-1")
///     .port(8080)
///     .version("2.1.0")
///     .metadata("team", "payments")
///     .build()?;
/// assert!(filter.matches(&orders));
/// assert!(!filter.clone().zone("eu-west-1a").matches(&orders));
/// # Ok::<(), tower_mesh::instance::InvalidInput>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFilter {
    name_prefix: Option<String>,
    version: Option<String>,
    zone: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl ServiceFilter {
    /// Matches every instance.
    pub fn new() -> Self {
        Self::default()
    }

    /// Services whose name starts with `prefix`.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// Instances of exactly this version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Instances in this zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Instances whose metadata maps `key` to `value` (each call adds a condition).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Whether instances of `service` can match (its name).
    pub fn matches_service(&self, service: &ServiceName) -> bool {
        self.name_prefix
            .as_deref()
            .is_none_or(|p| service.as_str().starts_with(p))
    }

    /// Whether `instance` matches every condition.
    pub fn matches(&self, instance: &Instance) -> bool {
        self.matches_service(instance.service())
            && self
                .version
                .as_deref()
                .is_none_or(|v| instance.version() == v)
            && self
                .zone
                .as_deref()
                .is_none_or(|z| instance.zone() == Some(z))
            && self
                .metadata
                .iter()
                .all(|(k, v)| instance.metadata().get(k) == Some(v))
    }
}
