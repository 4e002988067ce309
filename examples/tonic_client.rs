//! A generated tonic client calling through `mesh.grpc("echo")`, against three tonic servers
//! on loopback, one of which is stopped mid-run.
//!
//! The servers are registered as `grpc://127.0.0.1:PORT` endpoints; the generated
//! `EchoClient` is built over the mesh's gRPC client, so its calls are balanced, retried and
//! broken like any other mesh call. Server `b` is then stopped (it closes its listener and
//! sends its connections a GOAWAY) while it is still registered: every later call goes to
//! `a` or `c`, and none fails.
//!
//! The client and server code is the one the `tonic` tests generated from
//! `tests/tonic/proto/echo.proto` (committed, so no `protoc` is needed). The registry is an
//! embedded SQLite file in the temporary directory, removed at the end.
//!
//! Run it with `cargo run --example tonic_client --features mesh,tonic`.

#[allow(clippy::all, missing_docs, unreachable_pub)]
#[path = "../tests/tonic/generated/mesh.echo.v1.rs"]
mod echo;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{SayReply, SayRequest};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};
use tower::BoxError;
use tower_mesh::instance::Microservice;
use tower_mesh::mesh::{GrpcClient, Mesh};

/// An echo server that names itself in each reply.
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

/// A tonic server on loopback that can be stopped.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    async fn start(name: &'static str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EchoServer::new(Named(name)))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );
        Ok(Self {
            name,
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Stops accepting, tells the connections to go away, and waits for them to close.
    async fn stop(mut self) -> Result<(), BoxError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await??;
        Ok(())
    }
}

/// `n` calls; replies by server, and failed calls.
async fn say_n(client: &mut EchoClient<GrpcClient>, n: usize) -> (BTreeMap<String, usize>, usize) {
    let mut seen = BTreeMap::new();
    let mut failed = 0;
    for i in 0..n {
        let message = format!("hello {i}");
        match client
            .say(SayRequest {
                message: message.clone(),
            })
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                assert_eq!(reply.message, message);
                *seen.entry(reply.server).or_default() += 1;
            }
            Err(status) => {
                failed += 1;
                eprintln!("  call failed: {status}");
            }
        }
    }
    (seen, failed)
}

fn show(phase: &str, names: &[&str], (seen, failed): &(BTreeMap<String, usize>, usize)) {
    let counts: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={:>2}", seen.get(*n).copied().unwrap_or(0)))
        .collect();
    println!("{phase:<24} {}  failed={failed}", counts.join(" "));
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let db =
        std::env::temp_dir().join(format!("tower-mesh-tonic-client-{}.db", std::process::id()));
    // Removed when dropped, also when a check below fails and panics.
    let db = TempDb(db);
    run(&db.0).await
}

async fn run(db: &std::path::Path) -> Result<(), BoxError> {
    let a = Server::start("a").await?;
    let b = Server::start("b").await?;
    let c = Server::start("c").await?;
    let names = [a.name, b.name, c.name];

    let mesh = Mesh::builder()
        .registry_url(format!("sqlite://{}?mode=rwc", db.display()))
        .build()
        .await?;
    let echo = Microservice::new("echo", "1.0.0")
        .endpoint(format!("grpc://{}", a.addr))
        .endpoint(format!("grpc://{}", b.addr))
        .endpoint(format!("grpc://{}", c.addr));
    let ids = mesh.register_service(&echo).await?;
    println!("registered {} grpc:// endpoints of echo", ids.len());

    // The generated client, over the mesh.
    let mut client = EchoClient::new(mesh.grpc("echo")?);

    let before = say_n(&mut client, 60).await;
    show("1. three servers", &names, &before);
    assert_eq!(before.1, 0);
    for name in names {
        assert!(
            before.0.get(name).copied().unwrap_or(0) > 0,
            "{name} took no call"
        );
    }

    // Stop `b` mid-run; it stays registered.
    b.stop().await?;
    let after = say_n(&mut client, 60).await;
    show("2. b stopped", &names, &after);
    assert_eq!(after.1, 0, "no call fails");
    assert_eq!(after.0.get("b"), None, "b takes no call once stopped");

    println!(
        "tonic_client: 120 calls through mesh.grpc(\"echo\"), 0 failed; b took none once stopped"
    );
    drop((a, c));
    Ok(())
}

/// The SQLite file, removed with its WAL companions when dropped.
struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
