//! The end-to-end benchmark's servers: three HTTP/1.1 servers on loopback, on their own
//! runtime, or in a child process for callgrind.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One HTTP/1.1 keep-alive server answering `200 ok` on a loopback port, on the current
/// runtime.
async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Starts the three servers on their own runtime (multi-thread, one worker) in a thread of
/// their own, for the rest of the process.
pub(crate) fn start_servers() -> Vec<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("e2e-servers".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("e2e-server-worker")
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let addrs = tokio::spawn(async {
                    futures_util::future::join_all((0..3).map(|_| serve())).await
                })
                .await
                .unwrap();
                tx.send(addrs).unwrap();
                std::future::pending::<()>().await
            })
        })
        .unwrap();
    rx.recv().unwrap()
}

/// `E2E_SERVE=1`: the servers alone, their addresses on the first line of standard output;
/// exits when standard input closes.
pub(crate) fn serve_child() {
    let addrs = start_servers();
    let line: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line.join(" ")).unwrap();
    out.flush().unwrap();
    drop(out);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// The servers in a child process (this binary with `E2E_SERVE=1`), so that a profiler of
/// this process sees the clients only.
pub(crate) fn spawn_server_process() -> (std::process::Child, Vec<SocketAddr>) {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut child = Command::new(exe)
        .env("E2E_SERVE", "1")
        .env_remove("E2E_CALLGRIND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addrs = line
        .split_whitespace()
        .map(|a| a.parse().expect("a server address"))
        .collect::<Vec<SocketAddr>>();
    assert_eq!(addrs.len(), 3, "three server addresses, got {line:?}");
    (child, addrs)
}
