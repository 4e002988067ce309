//! The admin API's bearer-token check on every method that is not a read.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, Method};

use super::reply::ApiError;
use super::AdminAuth;

/// Lets reads through, and other methods only with the token when `auth` has one.
pub(super) async fn authorize(State(auth): State<AdminAuth>, req: Request, next: Next) -> Response {
    if is_read(req.method()) {
        return next.run(req).await;
    }
    match check(&auth, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `Ok` if `headers` carry the token `auth` requires; 401 without a bearer token, 403 with a
/// wrong one.
fn check(auth: &AdminAuth, headers: &HeaderMap) -> Result<(), ApiError> {
    let AdminAuth::Token(expected) = auth else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
        .ok_or_else(ApiError::unauthorized)?;
    if constant_time_eq(presented, expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// The token of `Bearer <token>` (the scheme in any case), if that is what `value` is.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only: every byte
/// is compared, with no early exit (a length mismatch is not hidden; the token's length is
/// not the secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn reads_the_bearer_token() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer  "), None);
    }

    #[test]
    fn missing_is_401_and_wrong_is_403() {
        let auth = AdminAuth::Token(Arc::from("s3cret"));
        let status = |h: Option<&str>| check(&auth, &headers(h)).err().map(|e| e.status());
        assert_eq!(status(Some("Bearer s3cret")), None);
        assert_eq!(status(None), Some(http::StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(Some("Basic czNjcmV0")),
            Some(http::StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(Some("Bearer nope")),
            Some(http::StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check(&AdminAuth::Open, &headers(None))
                .err()
                .map(|e| e.status()),
            None
        );
    }
}
