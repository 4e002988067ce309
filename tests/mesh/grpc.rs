//! `Mesh::grpc` under a generated tonic client: three tonic servers, one stopped.

use std::collections::HashMap;
use std::net::SocketAddr;

use tonic::{Request, Response, Status};
use tower_mesh::instance::Microservice;
use tower_mesh::mesh::Mesh;

use crate::echo::echo_client::EchoClient;
use crate::echo::echo_server::{Echo, EchoServer};
use crate::echo::{SayReply, SayRequest};

struct Named(&'static str);

#[tonic::async_trait]
impl Echo for Named {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let message = request.into_inner().message;
        if message == "invalid" {
            return Err(Status::invalid_argument("no"));
        }
        Ok(Response::new(SayReply {
            message,
            server: self.0.to_owned(),
        }))
    }
}

/// A tonic server; dropping the sender stops it.
async fn server(name: &'static str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(Named(name)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_through_the_mesh_survives_a_stopped_server() {
    let (a, stop_a) = server("a").await;
    let (b, _keep_b) = server("b").await;
    let (c, _keep_c) = server("c").await;
    let mesh = Mesh::builder()
        .registry_url("memory:")
        .config(toml::from_str(r#"defaults = { strategy = { name = "round_robin" } }"#).unwrap())
        .build()
        .await
        .unwrap();
    let echo = [a, b, c]
        .iter()
        .fold(Microservice::new("echo", "1"), |m, addr| {
            m.endpoint(format!("grpc://{addr}"))
        });
    mesh.register_service(&echo).await.unwrap();
    let mut client = EchoClient::new(mesh.grpc("echo").unwrap());

    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        let reply = client
            .say(SayRequest {
                message: format!("hello {i}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.message, format!("hello {i}"));
        *seen.entry(reply.server).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "spread over the three: {seen:?}");

    // A caller's mistake is the caller's: passed through, not retried, not a failure.
    let status = client
        .say(SayRequest {
            message: "invalid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Server a stops: its connections close, and every call is still answered by b or c
    // (a refused connection is retried on another endpoint).
    drop(stop_a);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut after: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        let reply = client
            .say(SayRequest {
                message: format!("again {i}"),
            })
            .await
            .expect("answered by b or c")
            .into_inner();
        *after.entry(reply.server).or_default() += 1;
    }
    assert!(!after.contains_key("a"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_limit_is_refused_before_sending() {
    let (a, _keep) = server("a").await;
    let mesh = Mesh::builder()
        .registry_url("memory:")
        .grpc_max_request(64)
        .build()
        .await
        .unwrap();
    mesh.register_service(&Microservice::new("echo", "1").endpoint(format!("grpc://{a}")))
        .await
        .unwrap();
    let mut client = EchoClient::new(mesh.grpc("echo").unwrap());
    let status = client
        .say(SayRequest {
            message: "x".repeat(1000),
        })
        .await
        .unwrap_err();
    let source = std::error::Error::source(&status).expect("the mesh's error");
    let err = source
        .downcast_ref::<tower_mesh::mesh::Error>()
        .expect("a mesh error");
    assert!(err.is_request(), "{err:?}");
}
