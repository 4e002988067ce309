//! An axum server's graceful shutdown: the guard deregisters before the server drains, and a
//! request in flight is still answered after the instance left the registry.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tower_mesh::registry::MemoryRegistry;

use super::*;

#[tokio::test]
async fn deregisters_before_the_server_drains() {
    let registry = MemoryRegistry::new();
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let app = Router::new().route(
        "/slow",
        get(move || {
            let (e, r) = (e.clone(), r.clone());
            async move {
                e.notify_one();
                r.notified().await;
                "done"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = guard("o-1", addr.port()).spawn(registry.clone()).unwrap();
    eventually("the first registration", g.registered()).await;
    assert_eq!(health_of(&registry, "o-1").await, Some(Health::Passing));

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (drain_tx, drain_rx) = oneshot::channel();
    let reg = registry.clone();
    let signal = async move {
        stop_rx.await.ok();
        g.shutdown().await.unwrap();
        // What a caller's discovery sees when the server starts draining.
        drain_tx.send(health_of(&reg, "o-1").await).unwrap();
    };
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
    });

    // A request in flight when the shutdown starts.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    eventually("the request to arrive", entered.notified()).await;
    stop_tx.send(()).unwrap();
    let at_drain = eventually("the server to start draining", drain_rx)
        .await
        .unwrap();
    assert_eq!(at_drain, None, "deregistered before draining");

    release.notify_one();
    let mut response = String::new();
    eventually("the response", client.read_to_string(&mut response))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("done"), "{response}");
    eventually("the server to stop", server)
        .await
        .unwrap()
        .unwrap();
}
