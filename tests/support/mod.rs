//! Shared test support: fresh databases on the CI servers, and a TCP proxy that can cut a
//! database connection to simulate an outage.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The URL of a CI server from the environment, or `None` after printing why the test is
/// skipped (the variable is unset, or the backend's feature is off). CI (`.ci/run`) always
/// sets both and tests with `--all-features`, and fails if a server is unreachable.
pub fn server_url(var: &str) -> Option<String> {
    #[cfg(not(feature = "registry-postgres"))]
    if var == "TOWER_MESH_TEST_POSTGRES" {
        eprintln!("skipped: the postgres backend is not compiled in (run with --all-features)");
        return None;
    }
    #[cfg(not(feature = "registry-mysql"))]
    if var == "TOWER_MESH_TEST_MYSQL" {
        eprintln!("skipped: the mysql backend is not compiled in (run with --all-features)");
        return None;
    }
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: {var} is not set (CI sets it; see .ci/run)");
            None
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a fresh, empty database next to the one in `base` and returns its URL.
pub async fn fresh_database(base: &str) -> String {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!(
        "tm_t_{}_{}_{}",
        std::process::id(),
        n,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut conn = sqlx::AnyConnection::connect(base)
        .await
        .expect("connect to the test server");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create a test database");
    let mut url = url::Url::parse(base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Replaces the host:port of `url` with `addr` (to route it through a [`Proxy`]).
pub fn via(url: &str, addr: SocketAddr) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_host(Some(&addr.ip().to_string())).unwrap();
    u.set_port(Some(addr.port())).unwrap();
    u.to_string()
}

/// A loopback TCP proxy in front of a database server. `cut()` drops every connection and
/// refuses new ones until `restore()`.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            down: Arc::new(AtomicBool::new(false)),
            cut: Arc::new(Notify::new()),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if p.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = p.cut.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let cut = cut.notified();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        proxy
    }

    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// The host:port of a database URL.
pub fn upstream(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    let host = u.host_str().unwrap();
    let port = u.port_or_known_default().unwrap_or(match u.scheme() {
        "mysql" | "mariadb" => 3306,
        _ => 5432,
    });
    format!("{host}:{port}").parse().unwrap()
}

/// A registry for `url` that reaches its database through a new [`Proxy`], with short polls,
/// backoff and pool timeouts so that an outage is noticed and left quickly.
pub async fn behind_proxy(url: &str) -> (Proxy, tower_mesh::registry::sql::SqlRegistry) {
    use std::time::Duration;
    let proxy = Proxy::start(upstream(url)).await;
    let registry = tower_mesh::registry::sql::SqlRegistry::builder(via(url, proxy.addr))
        .poll_interval(Duration::from_millis(20))
        .fallback_poll(Duration::from_millis(50))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .acquire_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    (proxy, registry)
}
