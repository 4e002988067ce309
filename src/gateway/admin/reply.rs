//! The admin API's error answers and its reading of JSON request bodies, field by field, so
//! that a refused value is named with its field.

use std::collections::BTreeMap;
use std::fmt;

use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::instance::{Field, InvalidInput};
use crate::registry;

/// An error answer: `{"error", "field"?, "value"?}` with its status.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

/// Longest value quoted back in an error.
const MAX_VALUE: usize = 128;

impl ApiError {
    pub(super) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
                value: None,
            },
        }
    }

    /// Names the field and the value to blame.
    pub(super) fn on(mut self, field: impl Into<String>, value: impl fmt::Display) -> Self {
        self.body.field = Some(field.into());
        self.body.value = Some(bounded(value.to_string()));
        self
    }

    #[cfg(test)]
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    /// 400: `field` has `value`, which is refused because of `reason`.
    pub(super) fn bad(field: &str, value: impl fmt::Display, reason: &str) -> Self {
        let value = bounded(value.to_string());
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid {field} {value:?}: {reason}"),
        )
        .on(field, value)
    }

    /// 400 for a value the instance model refused.
    pub(super) fn invalid(e: InvalidInput) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).on(json_key(e.field()), e.value())
    }

    /// 404 for a service nothing is known of.
    pub(super) fn unknown_service(service: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "unknown service").on("service", service)
    }

    /// 404 for a service whose client was never built (so it has no breaker).
    pub(super) fn no_client(service: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown service: no client of it was built, so it has no breaker",
        )
        .on("service", service)
    }

    /// 404 for an instance the service does not have.
    pub(super) fn unknown_instance(id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "unknown instance").on("id", id)
    }

    /// 404 for an endpoint the service's client does not hold.
    pub(super) fn unknown_endpoint(id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "unknown endpoint").on("id", id)
    }

    /// 401: no bearer token.
    pub(super) fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is required")
    }

    /// 403: a wrong bearer token.
    pub(super) fn forbidden() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "the bearer token is not valid")
    }

    /// The answer to a registry error: 400 for a refused value, 404 for an unknown instance,
    /// 409 for a heartbeat without a lease, 503 for a database failure, 500 otherwise.
    pub(super) fn registry(e: registry::Error) -> Self {
        match e {
            registry::Error::Invalid(e) => ApiError::invalid(e),
            registry::Error::NotFound { ref id, .. } => ApiError::unknown_instance(id.as_str()),
            registry::Error::NoLease { ref id, .. } => {
                let id = id.to_string();
                ApiError::new(StatusCode::CONFLICT, e.to_string()).on("id", id)
            }
            registry::Error::Database(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("registry: {e}"))
            }
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("registry: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = self.status == StatusCode::UNAUTHORIZED;
        let mut rsp = (self.status, Json(self.body)).into_response();
        if challenge {
            rsp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tower-mesh admin\""),
            );
        }
        rsp
    }
}

/// The JSON key of an instance field, as the admin API's bodies and paths name it.
fn json_key(field: Field) -> &'static str {
    match field {
        Field::Service => "service",
        Field::Id => "id",
        Field::CheckOutput => "output",
        other => other.as_str(),
    }
}

/// `value`, cut at a character boundary past [`MAX_VALUE`] bytes.
fn bounded(mut value: String) -> String {
    if value.len() > MAX_VALUE {
        let mut cut = MAX_VALUE - 3;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        value.push_str("...");
    }
    value
}

/// A request body's JSON object, its fields taken one by one.
#[derive(Debug)]
pub(super) struct Object {
    map: Map<String, Value>,
}

impl Object {
    /// The body as a JSON object with no key outside `allowed` (413 over the size limit, 400
    /// for anything that is not such an object).
    pub(super) fn parse(
        body: Result<Bytes, BytesRejection>,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        let bytes = body.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body is over the size limit")
            } else {
                ApiError::new(status, e.body_text())
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {e}"),
            )
            .on("body", String::from_utf8_lossy(&bytes))
        })?;
        let Value::Object(map) = value else {
            return Err(ApiError::bad("body", value, "must be a JSON object"));
        };
        if let Some((key, value)) = map.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown field {key:?}: expected one of {}",
                    allowed.join(", ")
                ),
            )
            .on(key.as_str(), shown(value)));
        }
        Ok(Object { map })
    }

    /// The value of `key`; `null` counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// 400 for a required field left out: names the field, with no value.
    fn missing(key: &str) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, format!("missing field {key:?}"));
        e.body.field = Some(key.to_owned());
        e
    }

    /// A string field.
    pub(super) fn opt_string(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ApiError::bad(key, shown(&v), "must be a string")),
        }
    }

    /// A required string field.
    pub(super) fn string(&mut self, key: &str) -> Result<String, ApiError> {
        self.opt_string(key)?.ok_or_else(|| Object::missing(key))
    }

    /// A non-negative integer field (at most `u32::MAX`).
    pub(super) fn opt_u32(&mut self, key: &str) -> Result<Option<u32>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(ApiError::bad(
                    key,
                    shown(&v),
                    "must be an integer in 0..=4294967295",
                )),
            },
        }
    }

    /// A required non-negative integer field.
    pub(super) fn u32(&mut self, key: &str) -> Result<u32, ApiError> {
        self.opt_u32(key)?.ok_or_else(|| Object::missing(key))
    }

    /// An object of strings.
    pub(super) fn opt_string_map(
        &mut self,
        key: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    v => Err(ApiError::bad(
                        &format!("{key}.{k}"),
                        shown(&v),
                        "must be a string",
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(ApiError::bad(
                key,
                shown(&v),
                "must be an object of strings",
            )),
        }
    }
}

/// A JSON value as quoted back: a string as itself, anything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str, allowed: &[&str]) -> Result<Object, ApiError> {
        Object::parse(Ok(Bytes::from(json.to_owned())), allowed)
    }

    #[test]
    fn fields_are_named_with_their_values() {
        let mut o = object(
            r#"{"port": "80", "id": 7, "m": {"a": 1}}"#,
            &["port", "id", "m"],
        )
        .unwrap();
        let e = o.u32("port").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.field.as_deref(), Some("port"));
        assert_eq!(e.body.value.as_deref(), Some("80"));
        let e = o.string("id").unwrap_err();
        assert_eq!(
            (e.body.field.as_deref(), e.body.value.as_deref()),
            (Some("id"), Some("7"))
        );
        let e = o.opt_string_map("m").unwrap_err();
        assert_eq!(
            (e.body.field.as_deref(), e.body.value.as_deref()),
            (Some("m.a"), Some("1"))
        );
        let e = o.string("host").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("host"));
    }

    #[test]
    fn unknown_keys_and_non_objects_are_refused() {
        let e = object(r#"{"id": "a", "colour": "red"}"#, &["id"]).unwrap_err();
        assert_eq!(
            (e.body.field.as_deref(), e.body.value.as_deref()),
            (Some("colour"), Some("red"))
        );
        let e = object("[1]", &["id"]).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("body"));
        let e = object("{", &["id"]).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn long_values_are_cut() {
        let long = "é".repeat(200);
        let e = ApiError::bad("host", &long, "too long");
        let value = e.body.value.unwrap();
        assert!(
            value.len() <= MAX_VALUE && value.ends_with("..."),
            "{value}"
        );
    }
}
