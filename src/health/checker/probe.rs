//! One probe of one instance: an HTTP request over the checker's shared keep-alive client, a
//! TCP connect, or (with `tonic`) a gRPC health `Check`; each cut at the check's timeout.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, USER_AGENT};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::instance::{HttpCheck, CHECK_BODY_READ_LIMIT};

/// What a probe found: passed or not, and the output kept with the instance (a status line
/// or an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    pub(crate) output: String,
}

impl Outcome {
    pub(crate) fn pass(output: impl Into<String>) -> Self {
        Outcome {
            ok: true,
            output: output.into(),
        }
    }

    pub(crate) fn fail(output: impl Into<String>) -> Self {
        Outcome {
            ok: false,
            output: output.into(),
        }
    }

    pub(crate) fn timed_out(timeout: Duration) -> Self {
        Outcome::fail(format!("timed out after {timeout:?}"))
    }
}

/// `error` and its sources, joined with `: ` (each printed once).
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            let _ = write!(out, ": {text}");
        }
        source = e.source();
    }
    out
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The HTTP side of the checker: one keep-alive client shared by every HTTP check.
#[derive(Clone)]
pub(crate) struct HttpProber {
    client: Client<HttpConnector, Empty<Bytes>>,
    user_agent: HeaderValue,
}

impl HttpProber {
    pub(crate) fn new(checker: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        // Checker ids are validated instance ids: always a valid header value.
        let user_agent = HeaderValue::try_from(format!("tower-mesh-checker/{checker}"))
            .unwrap_or_else(|_| HeaderValue::from_static("tower-mesh-checker"));
        HttpProber { client, user_agent }
    }

    /// One HTTP check of `authority` (without the timeout, which the caller applies).
    pub(crate) async fn probe(&self, authority: &str, check: &HttpCheck) -> Outcome {
        let uri = format!("http://{authority}{}", check.path());
        let request = match http::Request::builder()
            .method(check.method().clone())
            .uri(&uri)
            .header(USER_AGENT, self.user_agent.clone())
            .body(Empty::new())
        {
            Ok(request) => request,
            Err(error) => return Outcome::fail(format!("bad request {uri}: {}", chain(&error))),
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) => return Outcome::fail(chain(&error)),
        };
        let status = response.status();
        let line = format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let line = line.trim_end().to_owned();
        if !check.accepts(status.as_u16()) {
            return Outcome::fail(line);
        }
        let Some(needle) = check.body() else {
            // Read the (usually tiny) body so the connection goes back to the pool; a body
            // larger than the read limit is dropped, and its connection with it.
            let _ = read_prefix(response.into_body(), None).await;
            return Outcome::pass(line);
        };
        match read_prefix(response.into_body(), Some(needle.as_bytes())).await {
            Ok(true) => Outcome::pass(line),
            Ok(false) => Outcome::fail(format!(
                "{line}: body does not contain {needle:?} in its first {CHECK_BODY_READ_LIMIT} bytes"
            )),
            Err(error) => Outcome::fail(format!("{line}: reading the body: {error}")),
        }
    }
}

/// Reads at most [`CHECK_BODY_READ_LIMIT`] bytes of `body`, stopping early when `needle` is
/// found; whether it was.
async fn read_prefix(
    mut body: hyper::body::Incoming,
    needle: Option<&[u8]>,
) -> Result<bool, String> {
    let mut seen: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| chain(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = CHECK_BODY_READ_LIMIT - seen.len();
        seen.extend_from_slice(&data[..data.len().min(room)]);
        if let Some(needle) = needle {
            if contains(&seen, needle) {
                return Ok(true);
            }
        }
        if seen.len() >= CHECK_BODY_READ_LIMIT {
            break;
        }
    }
    Ok(needle.is_some_and(|n| contains(&seen, n)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// One TCP connect to `host:port` (without the timeout).
pub(crate) async fn probe_tcp(host: &str, port: u16) -> Outcome {
    match tokio::net::TcpStream::connect((host, port)).await {
        Ok(_) => Outcome::pass(format!("TCP connect {}: success", authority(host, port))),
        Err(error) => Outcome::fail(format!(
            "TCP connect {}: {}",
            authority(host, port),
            chain(&error)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_substrings() {
        assert!(contains(b"status: ok", b"ok"));
        assert!(!contains(b"status: down", b"ok"));
        assert!(contains(b"", b""));
    }

    #[test]
    fn brackets_ipv6() {
        assert_eq!(authority("::1", 80), "[::1]:80");
        assert_eq!(authority("localhost", 80), "localhost:80");
    }
}
