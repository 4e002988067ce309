//! tower's p2c balancer over SQLite and PostgreSQL registries with real hyper servers; corrupt
//! rows; a real outage through a proxy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tower_mesh::discover::{p2c_pending, Builder, HttpEndpoints, RegistryDiscover};
use tower_mesh::instance::{Health, InstanceId, ServiceName};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{
    Clock, Error, LeaseConfig, ReapReport, Registration, Registry, Revision, Snapshot, Watch,
};

use crate::{at, echo, id, inst, send_n, server, summary, support, svc};

/// tower's p2c balancer over the registry-fed stream, real servers: requests flow; a
/// deregistered instance gets no more traffic; a newly registered one gets some.
async fn p2c_follows_the_registry<R: Registry>(registry: R) {
    let (a, a_hits) = server("a").await;
    let (b, _) = server("b").await;
    let (c, _) = server("c").await;
    registry.register(at("a", a)).await.unwrap();
    let rev = registry.register(at("b", b)).await.unwrap();
    let discover = RegistryDiscover::new(registry.clone(), "orders", HttpEndpoints::new()).spawn();
    let handle = discover.handle();
    let mut balancer = p2c_pending(discover);
    handle.applied(rev).await;
    let seen = send_n(&mut balancer, 60).await;
    assert_eq!(seen.values().sum::<usize>(), 60);
    assert!(seen.contains_key("a") && seen.contains_key("b"), "{seen:?}");

    let rev = registry.deregister(&svc("orders"), &id("a")).await.unwrap();
    handle.applied(rev).await;
    let before = a_hits.load(Ordering::SeqCst);
    let seen = send_n(&mut balancer, 40).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        a_hits.load(Ordering::SeqCst),
        before,
        "no request reached the removed instance"
    );

    let rev = registry.register(at("c", c)).await.unwrap();
    handle.applied(rev).await;
    let seen = send_n(&mut balancer, 60).await;
    assert!(
        seen.contains_key("c"),
        "the new instance takes traffic: {seen:?}"
    );
    assert!(!seen.contains_key("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_with_sqlite_registry_and_hyper_servers() {
    let registry = SqlRegistry::builder("sqlite::memory:")
        .poll_interval(Duration::from_millis(20))
        .connect()
        .await
        .unwrap();
    p2c_follows_the_registry(registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_with_postgres_registry_and_hyper_servers() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let url = support::fresh_database(&base).await;
    // Writes from another registry (process): the watcher is woken by NOTIFY.
    let writer = SqlRegistry::connect(&url).await.unwrap();
    let watcher = SqlRegistry::connect(&url).await.unwrap();
    p2c_follows_the_registry(Split { writer, watcher }).await;
}

/// Writes through one registry, reads and watches through another.
#[derive(Clone)]
struct Split {
    writer: SqlRegistry,
    watcher: SqlRegistry,
}

impl Registry for Split {
    async fn register(&self, r: Registration) -> Result<Revision, Error> {
        self.writer.register(r).await
    }
    async fn register_all(&self, r: Vec<Registration>) -> Result<Revision, Error> {
        self.writer.register_all(r).await
    }
    async fn deregister(&self, s: &ServiceName, i: &InstanceId) -> Result<Revision, Error> {
        self.writer.deregister(s, i).await
    }
    async fn heartbeat(&self, s: &ServiceName, i: &InstanceId) -> Result<Option<Revision>, Error> {
        self.writer.heartbeat(s, i).await
    }
    async fn set_health(
        &self,
        s: &ServiceName,
        i: &InstanceId,
        h: Health,
    ) -> Result<Revision, Error> {
        self.writer.set_health(s, i, h).await
    }
    async fn snapshot(&self, s: &ServiceName) -> Result<Snapshot, Error> {
        self.watcher.snapshot(s).await
    }
    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.watcher.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.watcher.revision().await
    }
    fn watch(&self, s: &ServiceName, since: Revision) -> Watch {
        self.watcher.watch(s, since)
    }
    fn watch_all(&self, since: Revision) -> Watch {
        self.watcher.watch_all(since)
    }
    async fn compact(&self, r: Revision) -> Result<(), Error> {
        self.writer.compact(r).await
    }
    async fn reap(&self, c: &LeaseConfig) -> Result<ReapReport, Error> {
        self.writer.reap(c).await
    }
    fn clock(&self) -> &Clock {
        self.writer.clock()
    }
}

/// A corrupt stored row is skipped for that instance only: an instance seen before keeps its
/// last good version (no removal), one never seen is not offered, and the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_skipped_for_that_instance_only() {
    use sqlx::Executor;
    let registry = SqlRegistry::builder("sqlite::memory:")
        .poll_interval(Duration::from_millis(10))
        .connect()
        .await
        .unwrap();
    registry.register(inst("a", 1).into()).await.unwrap();
    registry.register(inst("b", 2).into()).await.unwrap();
    // "z" is corrupt from the start: never offered.
    registry
        .pool()
        .execute(
            "INSERT INTO mesh_instances (service, instance_id, host, port, scheme, version, weight, zone, metadata, health, ttl_ms, expires_at_ms, lease_expired, revision) \
             VALUES ('orders', 'z', '127.0.0.1', 9, 'http', '1', 100, NULL, '{oops', 'passing', NULL, NULL, 0, 2)",
        )
        .await
        .unwrap();
    let mut d = RegistryDiscover::new(registry.clone(), "orders", echo);
    let handle = d.handle();
    let mut first = Vec::new();
    while first.len() < 2 {
        first.push(d.next().await.unwrap().unwrap());
    }
    let mut first = summary(&first);
    first.sort();
    assert_eq!(first, ["+a:1", "+b:2"]);

    // A corrupt event for "a" (port out of range), then a good change to "b".
    let from = registry.revision().await.unwrap().get();
    registry
        .pool()
        .execute(
            format!(
                "INSERT INTO mesh_events (revision, kind, service, instance_id, host, port, scheme, version, weight, zone, metadata, health) \
                 VALUES ({}, 'put', 'orders', 'a', '127.0.0.1', 70000, 'http', '1', 100, NULL, '{{}}', 'passing')",
                from + 1
            )
            .as_str(),
        )
        .await
        .unwrap();
    registry
        .pool()
        .execute(format!("UPDATE mesh_state SET revision = {} WHERE id = 1", from + 1).as_str())
        .await
        .unwrap();
    registry.register(inst("b", 22).into()).await.unwrap();
    let next = d.next().await.unwrap().unwrap();
    assert_eq!(
        summary(&[next]),
        ["+b:22"],
        "the corrupt event changed nothing for a"
    );
    assert_eq!(handle.endpoints(), 2, "a keeps its last good version");
    assert!(!handle.is_stale(), "a corrupt row is not an outage");
}

/// A real outage: the discovering process reaches PostgreSQL through a proxy that is cut while
/// another process changes the registry. The stream yields nothing, errors nothing, keeps the
/// set and reports staleness; when the proxy comes back every missed change arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_keeps_the_set_and_resumes() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let url = support::fresh_database(&base).await;
    let (proxy, watcher) = support::behind_proxy(&url).await;
    let writer = SqlRegistry::connect(&url).await.unwrap();
    writer.register(inst("a", 1).into()).await.unwrap();
    writer.register(inst("b", 2).into()).await.unwrap();
    let mut d = Builder::new()
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(watcher, "orders", echo)
        .unwrap();
    let handle = d.handle();
    let mut first = Vec::new();
    while first.len() < 2 {
        first.push(d.next().await.unwrap().unwrap());
    }

    proxy.cut();
    writer.deregister(&svc("orders"), &id("a")).await.unwrap();
    writer.register(inst("c", 3).into()).await.unwrap();
    // Drive the stream until it has noticed the outage; it must yield nothing meanwhile.
    let noticed = async {
        while !handle.is_stale() {
            tokio::select! {
                item = d.next() => panic!("nothing may come out during an outage: {item:?}"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), noticed)
        .await
        .expect("the outage is noticed");
    assert_eq!(handle.endpoints(), 2, "the last known set is still served");

    proxy.restore();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(30), d.next()).await {
            Ok(Some(Ok(change))) => got.push(change),
            other => panic!("expected the missed changes, got {other:?}"),
        }
    }
    assert_eq!(
        summary(&got),
        ["-a", "+c:3"],
        "every missed change once, in order"
    );
    assert!(
        !handle.is_stale(),
        "hearing from the registry clears the stale mark"
    );
}
