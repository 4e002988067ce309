//! The admin API's routes and handlers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use super::reply::{ApiError, Object};
use super::Admin;
use crate::instance::{Health, Instance, InstanceId, LastCheck, ServiceName};
use crate::mesh::Client;
use crate::registry::{Clock, HealthUpdate, Registration, Registry, Revision};

type St = State<Arc<Admin>>;
type Body = Result<Bytes, BytesRejection>;
type Answer<T> = Result<T, ApiError>;

/// Every route, before the body limit, the auth and the state are added.
pub(super) fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/services", get(list_services))
        .route("/services/{name}", get(service_instances))
        .route(
            "/services/{name}/instances",
            get(service_instances).post(register),
        )
        .route("/services/{name}/health", get(service_health))
        .route(
            "/services/{name}/instances/{id}",
            get(instance).delete(deregister),
        )
        .route("/services/{name}/instances/{id}/heartbeat", post(heartbeat))
        .route("/services/{name}/instances/{id}/health", put(set_health))
        .route("/services/{name}/breaker", post(force_service_breaker))
        .route(
            "/services/{name}/endpoints/{id}/breaker",
            post(force_endpoint_breaker),
        )
        .route("/breakers", get(breakers))
        .route("/metrics", get(metrics))
        .fallback(no_route)
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// One service in `GET /services`.
#[derive(Debug, Serialize)]
struct ServiceSummary {
    service: String,
    instances: usize,
    passing: usize,
    warning: usize,
    critical: usize,
    maintenance: usize,
}

async fn list_services(State(admin): St) -> Answer<Json<Vec<ServiceSummary>>> {
    let names = admin
        .mesh
        .list_services()
        .await
        .map_err(ApiError::registry)?;
    let mut summaries = Vec::with_capacity(names.len());
    for name in names {
        let instances = admin
            .mesh
            .discover_service(name.as_str())
            .await
            .map_err(ApiError::registry)?;
        let count = |h: Health| instances.iter().filter(|i| i.health() == h).count();
        summaries.push(ServiceSummary {
            service: name.to_string(),
            instances: instances.len(),
            passing: count(Health::Passing),
            warning: count(Health::Warning),
            critical: count(Health::Critical),
            maintenance: count(Health::Maintenance),
        });
    }
    Ok(Json(summaries))
}

async fn service_instances(
    State(admin): St,
    Path(name): Path<String>,
) -> Answer<Json<Vec<Instance>>> {
    let instances = admin
        .mesh
        .discover_service(&name)
        .await
        .map_err(ApiError::registry)?;
    if instances.is_empty() {
        return Err(ApiError::unknown_service(&name));
    }
    Ok(Json(instances))
}

async fn instance(
    State(admin): St,
    Path((name, id)): Path<(String, String)>,
) -> Answer<Json<Instance>> {
    let (service, id) = names(&name, &id)?;
    admin
        .mesh
        .discover_service(service.as_str())
        .await
        .map_err(ApiError::registry)?
        .into_iter()
        .find(|i| *i.id() == id)
        .map(Json)
        .ok_or_else(|| ApiError::unknown_instance(id.as_str()))
}

async fn service_health(State(admin): St, Path(name): Path<String>) -> Answer<Response> {
    let health = admin
        .mesh
        .service_health(&name)
        .await
        .map_err(ApiError::registry)?;
    if health.counts().total() == 0 && health.corrupt().is_empty() {
        return Err(ApiError::unknown_service(&name));
    }
    Ok(Json(health).into_response())
}

/// An endpoint in `GET /breakers`.
#[derive(Debug, Serialize)]
struct EndpointReport {
    instance: String,
    /// Its breaker's state; `null` if it has none (yet).
    state: Option<&'static str>,
    ready: bool,
    healthy: bool,
    weight: u32,
    in_flight: usize,
    /// Why outlier detection ejected it, if it did.
    ejected: Option<String>,
}

/// A service in `GET /breakers`.
#[derive(Debug, Serialize)]
struct BreakerReport {
    service: String,
    state: &'static str,
    endpoints: Vec<EndpointReport>,
}

fn breaker_report(client: &Client) -> BreakerReport {
    let mut breakers: BTreeMap<InstanceId, &'static str> = client
        .endpoint_breakers()
        .into_iter()
        .map(|(id, handle)| (id, handle.state().as_str()))
        .collect();
    let ejected = |id: &InstanceId| client.outlier().ejection(id).map(|e| e.reason.to_string());
    let mut endpoints: Vec<EndpointReport> = client
        .balance()
        .endpoints()
        .into_iter()
        .map(|e| EndpointReport {
            instance: e.key.to_string(),
            state: breakers.remove(&e.key),
            ready: e.ready,
            healthy: e.healthy,
            weight: e.weight,
            in_flight: e.in_flight,
            ejected: ejected(&e.key),
        })
        .collect();
    // A breaker whose endpoint the balancer does not hold (being added or removed).
    endpoints.extend(breakers.into_iter().map(|(id, state)| EndpointReport {
        instance: id.to_string(),
        state: Some(state),
        ready: false,
        healthy: false,
        weight: 0,
        in_flight: 0,
        ejected: ejected(&id),
    }));
    endpoints.sort_by(|a, b| a.instance.cmp(&b.instance));
    BreakerReport {
        service: client.service().to_owned(),
        state: client.breaker().state().as_str(),
        endpoints,
    }
}

async fn breakers(State(admin): St) -> Json<Vec<BreakerReport>> {
    Json(admin.mesh.clients().iter().map(breaker_report).collect())
}

/// The keys of `POST /services/{name}/instances`.
const REGISTER_KEYS: &[&str] = &[
    "id", "host", "port", "scheme", "version", "weight", "zone", "metadata", "ttl",
];

async fn register(
    State(admin): St,
    Path(name): Path<String>,
    body: Body,
) -> Answer<(StatusCode, Json<Value>)> {
    let mut o = Object::parse(body, REGISTER_KEYS)?;
    let mut builder = Instance::builder(name, o.string("id")?)
        .host(o.string("host")?)
        .port(o.u32("port")?);
    if let Some(scheme) = o.opt_string("scheme")? {
        builder = builder.scheme(scheme.parse().map_err(ApiError::invalid)?);
    }
    if let Some(version) = o.opt_string("version")? {
        builder = builder.version(version);
    }
    if let Some(weight) = o.opt_u32("weight")? {
        builder = builder.weight(weight);
    }
    if let Some(zone) = o.opt_string("zone")? {
        builder = builder.zone(zone);
    }
    if let Some(metadata) = o.opt_string_map("metadata")? {
        builder = builder.metadata_map(metadata);
    }
    let ttl = match o.opt_string("ttl")? {
        Some(ttl) => Some(parse_ttl(&ttl)?),
        None => None,
    };
    let instance = builder.build().map_err(ApiError::invalid)?;
    let (service, id) = (instance.service().to_string(), instance.id().to_string());
    let mut registration = Registration::new(instance);
    if let Some(ttl) = ttl {
        registration = registration.with_ttl(ttl).map_err(ApiError::invalid)?;
    }
    let revision = admin
        .mesh
        .registry()
        .register(registration)
        .await
        .map_err(ApiError::registry)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "service": service, "id": id, "revision": revision.get() })),
    ))
}

/// A lease's time-to-live in humantime form (`"10s"`, `"1m 30s"`).
fn parse_ttl(ttl: &str) -> Answer<Duration> {
    humantime_serde::re::humantime::parse_duration(ttl).map_err(|e| {
        ApiError::bad(
            "ttl",
            ttl,
            &format!("must be a duration such as \"10s\" ({e})"),
        )
    })
}

/// The service and instance of a path, checked.
fn names(name: &str, id: &str) -> Answer<(ServiceName, InstanceId)> {
    let service = ServiceName::new(name).map_err(ApiError::invalid)?;
    let id = InstanceId::new(id).map_err(ApiError::invalid)?;
    Ok((service, id))
}

fn revision(revision: Option<Revision>) -> Json<Value> {
    Json(json!({ "revision": revision.map(Revision::get) }))
}

async fn deregister(
    State(admin): St,
    Path((name, id)): Path<(String, String)>,
) -> Answer<Json<Value>> {
    let (service, id) = names(&name, &id)?;
    let rev = admin
        .mesh
        .registry()
        .deregister(&service, &id)
        .await
        .map_err(ApiError::registry)?;
    Ok(revision(Some(rev)))
}

async fn heartbeat(
    State(admin): St,
    Path((name, id)): Path<(String, String)>,
) -> Answer<Json<Value>> {
    let (service, id) = names(&name, &id)?;
    let rev = admin
        .mesh
        .registry()
        .heartbeat(&service, &id)
        .await
        .map_err(ApiError::registry)?;
    Ok(revision(rev))
}

async fn set_health(
    State(admin): St,
    Path((name, id)): Path<(String, String)>,
    body: Body,
) -> Answer<Json<Value>> {
    let mut o = Object::parse(body, &["health", "output"])?;
    let health: Health = o.string("health")?.parse().map_err(ApiError::invalid)?;
    let output = o.opt_string("output")?;
    let (service, id) = names(&name, &id)?;
    let mut update = HealthUpdate::new(health);
    if let Some(output) = output {
        update = update.with_last_check(LastCheck::new(output, Clock::system().now_ms()));
    }
    let rev = admin
        .mesh
        .registry()
        .set_health_with(&service, &id, update)
        .await
        .map_err(ApiError::registry)?;
    Ok(revision(Some(rev)))
}

/// What `POST …/breaker` does to a breaker.
enum Force {
    Open,
    Closed,
    Disabled,
}

fn force(body: Body) -> Answer<Force> {
    let mut o = Object::parse(body, &["state"])?;
    match o.string("state")?.as_str() {
        "open" => Ok(Force::Open),
        "closed" => Ok(Force::Closed),
        "disabled" => Ok(Force::Disabled),
        other => Err(ApiError::bad(
            "state",
            other,
            "must be one of open, closed, disabled",
        )),
    }
}

fn apply(handle: &crate::breaker::Handle, force: Force) -> &'static str {
    match force {
        Force::Open => handle.force_open(),
        Force::Closed => handle.reset(),
        Force::Disabled => handle.disable(),
    }
    handle.state().as_str()
}

fn existing_client(admin: &Admin, name: &str) -> Answer<Client> {
    ServiceName::new(name).map_err(ApiError::invalid)?;
    admin
        .mesh
        .existing_client(name)
        .ok_or_else(|| ApiError::no_client(name))
}

async fn force_service_breaker(
    State(admin): St,
    Path(name): Path<String>,
    body: Body,
) -> Answer<Json<Value>> {
    let force = force(body)?;
    let client = existing_client(&admin, &name)?;
    let state = apply(client.breaker(), force);
    Ok(Json(json!({ "service": client.service(), "state": state })))
}

async fn force_endpoint_breaker(
    State(admin): St,
    Path((name, id)): Path<(String, String)>,
    body: Body,
) -> Answer<Json<Value>> {
    let force = force(body)?;
    let (_, instance) = names(&name, &id)?;
    let client = existing_client(&admin, &name)?;
    let handle = client
        .endpoint_breakers()
        .into_iter()
        .find_map(|(key, handle)| (key == instance).then_some(handle))
        .ok_or_else(|| ApiError::unknown_endpoint(&id))?;
    let state = apply(&handle, force);
    Ok(Json(
        json!({ "service": client.service(), "instance": id, "state": state }),
    ))
}

async fn metrics(State(admin): St) -> Response {
    match &admin.metrics {
        Some(metrics) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics.render(&admin.mesh),
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}
