//! The PostgreSQL listener: re-reading after every LISTEN, and restarting after it dies.

use super::*;

/// A loopback TCP proxy that, while closed, holds every new connection (accepted, not yet
/// connected upstream) and leaves established ones alone: a database that existing
/// connections still reach but a reconnecting client cannot, for as long as the test wants.
#[derive(Clone)]
struct Gate {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Gate {
    async fn start(upstream: std::net::SocketAddr) -> Gate {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            addr: listener.local_addr().unwrap(),
            open: std::sync::Arc::new(tokio::sync::watch::channel(true).0),
            held: Default::default(),
        };
        let g = gate.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let g = g.clone();
                tokio::spawn(async move {
                    let mut open = g.open.subscribe();
                    if !*open.borrow() {
                        g.held.fetch_add(1, Ordering::SeqCst);
                        let _ = open.wait_for(|o| *o).await;
                        g.held.fetch_sub(1, Ordering::SeqCst);
                    }
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        gate
    }

    fn close(&self) {
        self.open.send_replace(false);
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    /// Waits (up to 30 s) until a new connection is being held.
    async fn until_held(&self) {
        for _ in 0..3000 {
            if self.held.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no connection attempt reached the gate");
    }
}

/// The pids of the PostgreSQL backends of `database` that listen for the registry's
/// notifications, once there is at least one (waiting up to 30 s).
async fn listener_pids(admin: &str, database: &str) -> Vec<i32> {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(admin).await.unwrap();
    for _ in 0..3000 {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(database.to_owned())
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if !pids.is_empty() {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no listener connection to {database}");
}

/// Terminates the listening backends of `database`; returns how many there were.
async fn kill_listeners(admin: &str, database: &str) -> usize {
    use sqlx::Connection;
    let pids = listener_pids(admin, database).await;
    let mut conn = sqlx::AnyConnection::connect(admin).await.unwrap();
    for pid in &pids {
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(*pid)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(killed, "terminate listener {pid}");
    }
    pids.len()
}

/// Consumes `watch` in a task of its own, as `Cached` and discovery do, so that every wake-up
/// is handled when it comes rather than when a test next asks; the events come out of the
/// receiver.
fn drive(mut watch: Watch) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = watch.next().await {
            if let Ok(event) = item {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The next event from a [`drive`]n watch, failing after 10 s.
async fn next_driven(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Event {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn database_name(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned()
}

/// The listener's connection is killed, and it cannot reconnect for a while; a registration
/// made meanwhile sends a NOTIFY that nobody hears. As soon as the listener is back, the
/// watcher reads `revision > last` and sees it. The fallback poll is an hour, so it cannot be
/// what finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_watch_rereads_after_relisten() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let url = support::fresh_database(&base).await;
    let gate = Gate::start(support::upstream(&url)).await;
    let watcher = SqlRegistry::builder(support::via(&url, gate.addr))
        .fallback_poll(Duration::from_secs(3600))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .max_connections(1)
        .connect()
        .await
        .unwrap();
    let writer = sql_at(&url).await.registry;
    let mut w = drive(watcher.watch(&svc("orders"), Revision::ZERO));
    let first = writer
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    assert_eq!(next_driven(&mut w).await.revision(), first);
    // The listener is up; after the wake-up that follows its LISTEN, changes reach the watcher
    // only by NOTIFY (the fallback poll is an hour away).
    listener_pids(&base, &database_name(&url)).await;
    for n in 2..4 {
        let rev = writer
            .register(inst("orders", &format!("o-{n}"), 8000 + n).into())
            .await
            .unwrap();
        assert_eq!(next_driven(&mut w).await.revision(), rev);
    }

    gate.close();
    assert_eq!(kill_listeners(&base, &database_name(&url)).await, 1);
    gate.until_held().await;
    let missed = writer
        .register(inst("orders", "o-9", 8009).into())
        .await
        .unwrap();
    gate.open();
    assert_eq!(
        next_driven(&mut w).await.revision(),
        missed,
        "a change made while the listener was down is read right after it listens again"
    );
}

/// The PostgreSQL listener task dies: here because it was spawned by a watch first polled on a
/// short-lived runtime (a blocking helper with a runtime of its own) that then shut down. The
/// registry's watchers on the main runtime are not left on the fallback poll (an hour here):
/// the listener is started again, and a change made afterwards reaches them by NOTIFY.
#[test]
fn postgres_listener_restarts_after_it_dies() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    main.block_on(async {
        let url = support::fresh_database(&base).await;
        // One pooled connection, made on the main runtime.
        let watcher = SqlRegistry::builder(&url)
            .fallback_poll(Duration::from_secs(3600))
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .max_connections(1)
            .connect()
            .await
            .unwrap();
        watcher.revision().await.unwrap();
        let writer = sql_at(&url).await.registry;
        let first = writer
            .register(inst("orders", "o-1", 8001).into())
            .await
            .unwrap();
        let mut w = watcher.watch(&svc("orders"), Revision::ZERO);
        let (w, event) = std::thread::spawn(move || {
            let short = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let event = short.block_on(next_event(&mut w));
            (w, event) // `short` shuts down here, and the listener it ran with it
        })
        .join()
        .unwrap();
        assert_eq!(event.revision(), first);
        let mut w = drive(w);
        let second = writer
            .register(inst("orders", "o-2", 8002).into())
            .await
            .unwrap();
        assert_eq!(next_driven(&mut w).await.revision(), second);
        // And the restarted listener hears NOTIFY: once it listens, a change arrives at once.
        listener_pids(&base, &database_name(&url)).await;
        let third = writer
            .register(inst("orders", "o-3", 8003).into())
            .await
            .unwrap();
        assert_eq!(next_driven(&mut w).await.revision(), third);
    });
}
