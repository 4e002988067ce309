//! The seed sketch's `Microservice` shape (a name, a version, endpoint URLs, metadata).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Check, Field, Instance, InvalidInput, Scheme};

/// A service described the way the original sketch did: a name, a version, a list of endpoint
/// URLs and metadata. [`into_instances`](Microservice::into_instances) turns it into one
/// validated [`Instance`] per endpoint, each with id `host:port`.
///
/// ```
/// use tower_mesh::instance::Microservice;
///
/// let instances = Microservice::new("orders", "2.1.0")
///     .endpoint("http://10.0.0.1:8080")
///     .endpoint("grpc://orders-2.internal:50051")
///     .metadata("team", "payments")
///     .into_instances()?;
/// assert_eq!(instances.len(), 2);
/// assert_eq!(instances[1].id().as_str(), "orders-2.internal:50051");
/// # Ok::<(), tower_mesh::instance::InvalidInput>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Microservice {
    /// The service name.
    pub name: String,
    /// The version every endpoint runs.
    pub version: String,
    /// Endpoint URLs: `http://host:port`, `https://host[:port]`, `grpc://host:port`.
    pub endpoints: Vec<String>,
    /// Metadata shared by every endpoint.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The health check every endpoint declares (run by a
    /// [`HealthChecker`](https://docs.rs/tower-mesh/latest/tower_mesh/health/struct.HealthChecker.html)),
    /// if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

impl Microservice {
    /// A service with no endpoints yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Microservice {
            name: name.into(),
            version: version.into(),
            endpoints: Vec::new(),
            metadata: BTreeMap::new(),
            check: None,
        }
    }

    /// Adds an endpoint URL.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(url.into());
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Declares a health check on every endpoint.
    pub fn check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// One validated instance per endpoint; the first bad value is the error.
    pub fn into_instances(self) -> Result<Vec<Instance>, InvalidInput> {
        let Microservice {
            name,
            version,
            endpoints,
            metadata,
            check,
        } = self;
        if endpoints.is_empty() {
            return Err(
                InvalidInput::new(Field::Endpoint, "", "at least one is required")
                    .for_instance(&name),
            );
        }
        endpoints
            .iter()
            .map(|url| {
                let (scheme, host, port) = parse_endpoint(url)?;
                let id = format!("{host}:{port}");
                let builder = Instance::builder(name.as_str(), id)
                    .host(host)
                    .port(port)
                    .scheme(scheme)
                    .version(version.as_str())
                    .metadata_map(metadata.clone());
                match &check {
                    Some(c) => builder.check(c.clone()),
                    None => builder,
                }
                .build()
            })
            .collect()
    }
}

impl TryFrom<Microservice> for Vec<Instance> {
    type Error = InvalidInput;
    fn try_from(m: Microservice) -> Result<Self, Self::Error> {
        m.into_instances()
    }
}

fn parse_endpoint(url: &str) -> Result<(Scheme, String, u32), InvalidInput> {
    let bad = |reason| InvalidInput::new(Field::Endpoint, url, reason);
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("must be a URL like http://host:port"))?;
    let scheme: Scheme = uri
        .scheme_str()
        .ok_or_else(|| bad("must start with http://, https:// or grpc://"))?
        .parse()
        .map_err(|_| bad("must start with http://, https:// or grpc://"))?;
    let host = uri
        .host()
        .ok_or_else(|| bad("must name a host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = match (uri.port_u16(), scheme) {
        (Some(p), _) => u32::from(p),
        (None, Scheme::Http) => 80,
        (None, Scheme::Https) => 443,
        (None, Scheme::Grpc) => return Err(bad("a grpc endpoint must give its port")),
    };
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad("must not have a path"));
    }
    Ok((scheme, host, port))
}
