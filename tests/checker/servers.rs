//! Real servers on loopback: an HTTP server whose answer can be changed (per checker, by the
//! user-agent the checker sends), and a tonic health service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the HTTP server answers.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// Never answers (a hanging target).
    pub hang: bool,
}

impl Answer {
    pub fn ok(body: &str) -> Self {
        Answer {
            status: 200,
            body: body.to_owned(),
            hang: false,
        }
    }

    pub fn status(status: u16) -> Self {
        Answer {
            status,
            body: String::new(),
            hang: false,
        }
    }

    pub fn hang() -> Self {
        Answer {
            hang: true,
            ..Answer::ok("")
        }
    }
}

#[derive(Default)]
struct State {
    default: Option<Answer>,
    /// Answers for one checker, by its id (from `user-agent: tower-mesh-checker/<id>`).
    per_checker: HashMap<String, Answer>,
    requests: u64,
}

/// An HTTP/1.1 server with keep-alive on a loopback port.
#[derive(Clone)]
pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl HttpServer {
    pub async fn start(answer: Answer) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            default: Some(answer),
            ..State::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let agent = req
                                .headers()
                                .get(http::header::USER_AGENT)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let checker = agent.strip_prefix("tower-mesh-checker/").unwrap_or("");
                            let answer = {
                                let mut s = state.lock().unwrap();
                                s.requests += 1;
                                s.per_checker
                                    .get(checker)
                                    .or(s.default.as_ref())
                                    .cloned()
                                    .unwrap()
                            };
                            if answer.hang {
                                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                            }
                            let mut res = hyper::Response::new(Full::new(Bytes::from(answer.body)));
                            *res.status_mut() = http::StatusCode::from_u16(answer.status).unwrap();
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpServer { addr, state }
    }

    pub fn set(&self, answer: Answer) {
        self.state.lock().unwrap().default = Some(answer);
    }

    pub fn set_for(&self, checker: &str, answer: Answer) {
        self.state
            .lock()
            .unwrap()
            .per_checker
            .insert(checker.to_owned(), answer);
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }
}

/// A tonic server with `grpc.health.v1` on a loopback port, and the reporter that sets its
/// statuses.
pub async fn grpc_health() -> (SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, reporter)
}

/// A port on loopback with nothing listening.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
