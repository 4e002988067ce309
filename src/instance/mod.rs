//! The instance model: service names, instance ids and validated [`Instance`]s.
//!
//! Everything that enters the registry is checked here first, so a bad value is rejected at the
//! API with an [`InvalidInput`] naming the field, the value and the instance, never stored.
//!
//! ```
//! use tower_mesh::instance::{Health, Instance, Scheme};
//!
//! let instance = Instance::builder("orders", "orders-1")
//!     .host("10.0.0.7")
//!     .port(8080)
//!     .scheme(Scheme::Http)
//!     .version("1.4.2")
//!     .zone("eu-west-1a")
//!     .metadata("team", "payments")
//!     .build()?;
//! assert_eq!(instance.authority(), "10.0.0.7:8080");
//! assert_eq!(instance.health(), Health::Passing);
//! assert_eq!(instance.weight(), 100);
//!
//! let err = Instance::builder("orders", "orders-1").host("10.0.0.7").port(0).build().unwrap_err();
//! assert_eq!(err.to_string(), r#"invalid port 0 for instance "orders-1": must be in 1..=65535"#);
//! # Ok::<(), tower_mesh::instance::InvalidInput>(())
//! ```
//!
//! These types are what the registry stores and what discovery turns into endpoints; the layers
//! that consume them stack on a client with `ServiceBuilder`:
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_mesh::instance::Instance;
//!
//! let instance = Instance::builder("orders", "orders-1").host("127.0.0.1").port(8080).build()?;
//! // A client that calls this one instance, with a timeout in front.
//! let client = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(2))
//!     .service_fn(move |path: &'static str| {
//!         let url = format!("http://{}{}", instance.authority(), path);
//!         async move { Ok::<_, std::convert::Infallible>(url) }
//!     });
//! # drop(client);
//! # Ok::<(), tower_mesh::instance::InvalidInput>(())
//! ```

mod error;
mod microservice;

pub use self::error::{Field, InvalidInput};
pub use self::microservice::Microservice;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Most entries an instance's metadata may hold.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most bytes an instance's metadata may hold, keys and values together.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest instance id, version or zone, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;
/// Largest weight an instance may carry.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// The weight an instance gets when none is given.
pub const DEFAULT_WEIGHT: u32 = 100;

/// A service's name: DNS labels of 1..=63 lowercase letters, digits and `-`, joined by `.`,
/// at most 253 bytes in all (`orders`, `payments.eu`).
///
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(Arc<str>);

impl ServiceName {
    /// Validates `name` as a service name.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let name = name.as_ref();
        validate_dns_name(name, true)
            .map_err(|reason| InvalidInput::new(Field::Service, name, reason))?;
        Ok(ServiceName(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An instance's id, unique within its service: 1..=128 bytes of ASCII letters, digits and
/// `.`, `_`, `-`, `:`.
///
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// Validates `id` as an instance id.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let id = id.as_ref();
        validate_token(id, b"._-:").map_err(|reason| InvalidInput::new(Field::Id, id, reason))?;
        Ok(InstanceId(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = InvalidInput;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                $ty::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidInput;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $ty::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0.to_string()
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

string_newtype!(ServiceName);
string_newtype!(InstanceId);

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

/// One running copy of a service: where it is, how to reach it, and how it is doing.
///
/// Built with [`Instance::builder`], which validates every field; an `Instance` that exists is
/// valid. Deserializing validates too.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "InstanceBuilder", into = "InstanceBuilder")]
pub struct Instance {
    // One allocation, so a clone is one reference count: instances are cloned into every
    // snapshot, event and endpoint.
    inner: Arc<InstanceInner>,
}

#[derive(Clone, PartialEq, Eq)]
struct InstanceInner {
    service: ServiceName,
    id: InstanceId,
    host: String,
    port: u16,
    scheme: Scheme,
    version: String,
    weight: u32,
    zone: Option<String>,
    metadata: BTreeMap<String, String>,
    health: Health,
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
            .finish()
    }
}

impl Instance {
    /// Starts building an instance of `service` with id `id`. Defaults: host `127.0.0.1`,
    /// no port (required), scheme `http`, version `0.0.0`, weight 100, no zone, no metadata,
    /// health `passing`.
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
        }
    }

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

    /// A copy with another weight; fails past [`MAX_WEIGHT`].
    pub fn with_weight(mut self, weight: u32) -> Result<Self, InvalidInput> {
        check_weight(weight).map_err(|e| e.for_instance(&self.inner.id))?;
        Arc::make_mut(&mut self.inner).weight = weight;
        Ok(self)
    }

    /// Whether two versions of one instance differ in anything but health: address, scheme,
    /// version, weight, zone or metadata.
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

    /// Sets the weight: 0 (draining) to [`MAX_WEIGHT`].
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
            validate_token(zone, b"._-")
                .map_err(|r| bad(InvalidInput::new(Field::Zone, zone, r)))?;
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

fn check_weight(weight: u32) -> Result<(), InvalidInput> {
    if weight > MAX_WEIGHT {
        return Err(InvalidInput::new(
            Field::Weight,
            weight,
            "must be in 0..=1000000",
        ));
    }
    Ok(())
}

/// Checks a DNS name: labels of 1..=63 bytes joined by `.`, 253 bytes in all. `strict` asks
/// for lowercase letters, digits and `-` only (service names); otherwise any ASCII letter case.
fn validate_dns_name(name: &str, strict: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 253 {
        return Err("must be at most 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("must not have an empty label");
        }
        if label.len() > 63 {
            return Err("labels must be at most 63 bytes");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'");
        }
        let ok = label.bytes().all(|b| {
            b.is_ascii_digit()
                || b == b'-'
                || b.is_ascii_lowercase()
                || (!strict && b.is_ascii_uppercase())
        });
        if !ok {
            return Err(if strict {
                "labels may hold only lowercase letters, digits and '-'"
            } else {
                "labels may hold only letters, digits and '-'"
            });
        }
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), &'static str> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.starts_with('[') {
        return Err("must be an IP literal without brackets or a DNS name");
    }
    // A name made only of digits and dots is a malformed IPv4 address, not a DNS name.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("is neither a valid IP address nor a DNS name");
    }
    validate_dns_name(host, false).map_err(|_| "is neither a valid IP address nor a DNS name")
}

fn validate_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() {
        return Err("must not be empty");
    }
    if version.len() > MAX_TOKEN_LEN {
        return Err("must be at most 128 bytes");
    }
    if version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

fn validate_token(token: &str, extra: &[u8]) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("must not be empty");
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err("must be at most 128 bytes");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        return Err("has a character outside ASCII letters, digits and the allowed punctuation");
    }
    Ok(())
}

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), InvalidInput> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(InvalidInput::new(
            Field::Metadata,
            format!("{} entries", metadata.len()),
            "must have at most 64 entries",
        ));
    }
    let mut bytes = 0;
    for (key, value) in metadata {
        validate_token(key, b"._-/")
            .map_err(|r| InvalidInput::new(Field::Metadata, format!("key {key}"), r))?;
        if value.chars().any(char::is_control) {
            return Err(InvalidInput::new(
                Field::Metadata,
                format!("value of {key}"),
                "must not contain control characters",
            ));
        }
        bytes += key.len() + value.len();
    }
    if bytes > MAX_METADATA_BYTES {
        return Err(InvalidInput::new(
            Field::Metadata,
            format!("{bytes} bytes"),
            "must hold at most 4096 bytes of keys and values",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
