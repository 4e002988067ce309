//! tonic: real gRPC servers on loopback, a generated client, and channels fed by the registry,
//! through tower's p2c balancer over `TonicEndpoints` and through tonic's own balanced channel.
//!
//! The client and server code in `generated/` was generated from `proto/echo.proto` with
//! `tonic-prost-build` and is committed, so building the tests needs no `protoc`.

#[allow(clippy::all, missing_docs, unreachable_pub)]
#[path = "generated/mesh.echo.v1.rs"]
mod echo;
mod feed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{SayReply, SayRequest};
use tonic::{Request, Response, Status};
use tower_mesh::discover::{balance_channel, p2c_pending, RegistryDiscover, TonicEndpoints};
use tower_mesh::instance::{Instance, Scheme};
use tower_mesh::registry::{MemoryRegistry, Registration, Registry};

struct Named(&'static str);

#[tonic::async_trait]
impl Echo for Named {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        Ok(Response::new(SayReply {
            message: request.into_inner().message,
            server: self.0.to_owned(),
        }))
    }
}

async fn server(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(Named(name)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

pub(crate) fn grpc(id: &str, addr: SocketAddr) -> Registration {
    Instance::builder("echo", id)
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .scheme(Scheme::Grpc)
        .build()
        .unwrap()
        .into()
}

async fn say_n<T>(client: &mut EchoClient<T>, n: usize) -> HashMap<String, usize>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut seen = HashMap::new();
    for i in 0..n {
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
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_client_through_p2c_over_registry_channels() {
    let (a, b) = (server("a").await, server("b").await);
    let registry = MemoryRegistry::new();
    registry.register(grpc("a", a)).await.unwrap();
    let rev = registry.register(grpc("b", b)).await.unwrap();
    let endpoints = TonicEndpoints::new().configure(|e| e.connect_timeout(Duration::from_secs(5)));
    let discover = RegistryDiscover::new(registry.clone(), "echo", endpoints).spawn();
    let handle = discover.handle();
    handle.applied(rev).await;
    let balancer = tower::buffer::Buffer::new(p2c_pending(discover), 64);
    let mut client = EchoClient::new(balancer);
    let seen = say_n(&mut client, 40).await;
    assert_eq!(seen.values().sum::<usize>(), 40);
    assert!(seen.contains_key("a") && seen.contains_key("b"), "{seen:?}");

    let rev = registry
        .deregister(&"echo".parse().unwrap(), &"a".parse().unwrap())
        .await
        .unwrap();
    handle.applied(rev).await;
    let seen = say_n(&mut client, 20).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_client_through_tonic_balance_channel() {
    let (a, b) = (server("a").await, server("b").await);
    let registry = MemoryRegistry::new();
    registry.register(grpc("a", a)).await.unwrap();
    let rev = registry.register(grpc("b", b)).await.unwrap();
    let (channel, handle) =
        balance_channel(registry.clone(), "echo", TonicEndpoints::new(), 16).unwrap();
    handle.applied(rev).await;
    let mut client = EchoClient::new(channel);
    let seen = say_n(&mut client, 40).await;
    assert_eq!(seen.values().sum::<usize>(), 40);
    assert!(seen.contains_key("a") && seen.contains_key("b"), "{seen:?}");

    // Unlike a bare balance_channel fed by hand, this one stops sending to a dead host: the
    // registry says it is critical and it is removed.
    let rev = registry
        .set_health(
            &"echo".parse().unwrap(),
            &"a".parse().unwrap(),
            tower_mesh::instance::Health::Critical,
        )
        .await
        .unwrap();
    handle.applied(rev).await;
    let seen = say_n(&mut client, 20).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["b"]);
}

/// A tonic client over a service-level circuit breaker with the gRPC classifier, against a
/// real tonic server: OK replies carry `grpc-status: 0` in their trailers and count as
/// successes once tonic has read them; failed calls (a trailers-only response, status in the
/// headers) count as failures, open the breaker, and then calls fail fast without reaching
/// the server.
#[cfg(feature = "breaker")]
#[tokio::test]
async fn generated_client_through_a_grpc_circuit_breaker() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower_mesh::breaker::error::Open;
    use tower_mesh::breaker::{CircuitBreakerLayer, HttpClassifier, State};

    struct Flaky {
        failing: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl Echo for Flaky {
        async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(Status::unavailable("down"));
            }
            Ok(Response::new(SayReply {
                message: request.into_inner().message,
                server: "flaky".to_owned(),
            }))
        }
    }

    let failing = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(Flaky {
                failing: failing.clone(),
                calls: calls.clone(),
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("echo")
        .classifier(HttpClassifier::grpc())
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .build_with_handle()
        .unwrap();
    let mut client = EchoClient::new(tower::ServiceBuilder::new().layer(layer).service(channel));
    let say = |message: &str| SayRequest {
        message: message.to_owned(),
    };

    for i in 0..5 {
        let reply = client.say(say("hi")).await.unwrap().into_inner();
        assert_eq!(reply.server, "flaky");
        assert_eq!(handle.counters().successes, i + 1);
    }
    failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let status = client.say(say("hi")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    assert_eq!(handle.counters().failures, 3);
    assert_eq!(handle.state(), State::Open);
    let served = calls.load(Ordering::SeqCst);
    let status = client.say(say("hi")).await.unwrap_err();
    let open = Open::find(&status).expect("the breaker's rejection, under tonic's status");
    assert_eq!(open.name(), "echo");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        served,
        "rejected without a call"
    );
}
