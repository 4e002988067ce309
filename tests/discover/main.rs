//! Discovery: the stream on the memory registry with paused time (changes, filters, duplicates,
//! a 30 s outage), then tower's p2c balancer over it with real hyper servers on loopback and
//! SQLite and PostgreSQL registries.

#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use tower::discover::Change;
use tower::{Service, ServiceExt};
use tower_mesh::discover::{p2c_pending, HttpEndpoints, RegistryDiscover};
use tower_mesh::instance::{Health, Instance, InstanceId, ServiceName};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{
    Clock, DatabaseError, DatabaseErrorKind, Error, Event, LeaseConfig, MemoryRegistry, ReapReport,
    Registration, Registry, Revision, Snapshot, Watch,
};

fn svc(name: &str) -> ServiceName {
    name.parse().unwrap()
}

fn id(name: &str) -> InstanceId {
    name.parse().unwrap()
}

fn inst(id: &str, port: u32) -> Instance {
    Instance::builder("orders", id)
        .host("127.0.0.1")
        .port(port)
        .build()
        .unwrap()
}

/// Endpoints in tests are just the instance they were made from.
fn echo(i: &Instance) -> Instance {
    i.clone()
}

/// Collects what the stream yields until it would wait (paused time auto-advances only when
/// everything is idle, so a short sleep lets every task run first).
async fn drain<S, T>(stream: &mut S) -> Vec<Change<InstanceId, T>>
where
    S: Stream<Item = Result<Change<InstanceId, T>, Error>> + Unpin,
{
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            item = stream.next() => match item {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => panic!("the stream must never yield an error here: {e}"),
                None => panic!("the stream must never end"),
            },
            _ = tokio::time::sleep(Duration::from_millis(1)) => return out,
        }
    }
}

fn summary(changes: &[Change<InstanceId, Instance>]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Insert(k, i) => format!("+{k}:{}", i.port()),
            Change::Remove(k) => format!("-{k}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn inserts_updates_removes_and_filters() {
    let r = MemoryRegistry::new();
    r.register(inst("a", 1).into()).await.unwrap();
    r.register(inst("b", 2).into()).await.unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    let mut first = summary(&drain(&mut d).await);
    first.sort();
    assert_eq!(first, ["+a:1", "+b:2"]);
    assert_eq!(handle.endpoints(), 2);

    // Address change: re-inserted. Health passing -> warning: no change.
    r.register(inst("a", 11).into()).await.unwrap();
    r.set_health(&svc("orders"), &id("b"), Health::Warning)
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["+a:11"]);
    // Critical: removed; passing again: back.
    r.set_health(&svc("orders"), &id("b"), Health::Critical)
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["-b"]);
    r.set_health(&svc("orders"), &id("b"), Health::Passing)
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["+b:2"]);
    // Maintenance: removed. Drain (weight 0): removed too.
    r.set_health(&svc("orders"), &id("b"), Health::Maintenance)
        .await
        .unwrap();
    r.register(inst("a", 11).with_weight(0).unwrap().into())
        .await
        .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["-b", "-a"]);
    // Deregistered while absent: nothing; a new one: inserted; deregistered: removed.
    r.deregister(&svc("orders"), &id("b")).await.unwrap();
    let rev = r.register(inst("c", 3).into()).await.unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["+c:3"]);
    assert_eq!(handle.revision(), rev);
    r.deregister(&svc("orders"), &id("c")).await.unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["-c"]);
    // Other services never show up.
    r.register(
        Instance::builder("billing", "x")
            .port(9)
            .build()
            .unwrap()
            .into(),
    )
    .await
    .unwrap();
    assert!(drain(&mut d).await.is_empty());
    assert!(!handle.is_stale());
}

#[tokio::test(start_paused = true)]
async fn warning_filter_and_zone_preference() {
    let r = MemoryRegistry::new();
    let zoned = |id: &str, port, zone: &str| {
        Instance::builder("orders", id)
            .port(port)
            .zone(zone)
            .build()
            .unwrap()
    };
    r.register(zoned("a", 1, "z1").into()).await.unwrap();
    r.register(zoned("b", 2, "z2").into()).await.unwrap();
    r.register(zoned("w", 3, "z1").with_health(Health::Warning).into())
        .await
        .unwrap();
    let mut d = RegistryDiscover::builder()
        .include_warning(false)
        .prefer_zone("z1")
        .build(r.clone(), "orders", echo);
    assert_eq!(summary(&drain(&mut d).await), ["+a:1"]);
    // The preferred zone empties: fall back to every zone.
    r.set_health(&svc("orders"), &id("a"), Health::Critical)
        .await
        .unwrap();
    let mut got = summary(&drain(&mut d).await);
    got.sort();
    assert_eq!(got, ["+b:2", "-a"]);
    // It comes back: only it again.
    r.set_health(&svc("orders"), &id("a"), Health::Passing)
        .await
        .unwrap();
    let mut got = summary(&drain(&mut d).await);
    got.sort();
    assert_eq!(got, ["+a:1", "-b"]);
}

#[tokio::test(start_paused = true)]
async fn invalid_service_name_ends_with_an_error_at_first_poll() {
    let mut d = RegistryDiscover::new(MemoryRegistry::new(), "Not Valid", echo);
    match d.next().await {
        Some(Err(Error::Invalid(e))) => assert!(e.to_string().contains("Not Valid"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(d.next().await.is_none());
}

/// A registry that can be taken down: while down, snapshots fail and watches yield an error
/// every second instead of events (as a database registry does); the changes made meanwhile
/// arrive when it comes back, from the last revision.
#[derive(Clone)]
struct Flaky {
    inner: MemoryRegistry,
    down: Arc<AtomicBool>,
    script: Arc<std::sync::Mutex<Option<Vec<Event>>>>,
    /// Watches panic when polled (a bug in a registry).
    panics: Arc<AtomicBool>,
}

fn outage() -> Error {
    Error::Database(DatabaseError::new(
        DatabaseErrorKind::Connection,
        "watch",
        "connection refused",
    ))
}

struct FlakyWatch {
    inner: Watch,
    down: Arc<AtomicBool>,
    panics: Arc<AtomicBool>,
    tick: Pin<Box<tokio::time::Sleep>>,
}

impl Stream for FlakyWatch {
    type Item = Result<Event, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.down.load(Ordering::SeqCst) {
            futures_util::ready!(self.tick.as_mut().poll(cx));
            let next = tokio::time::Instant::now() + Duration::from_secs(1);
            self.tick.as_mut().reset(next);
            return Poll::Ready(Some(Err(outage())));
        }
        let item = futures_util::ready!(self.inner.poll_next_unpin(cx));
        if self.panics.load(Ordering::SeqCst) {
            panic!("a bug in the registry's watch");
        }
        Poll::Ready(item)
    }
}

use std::future::Future;

impl Registry for Flaky {
    async fn register(&self, r: Registration) -> Result<Revision, Error> {
        self.inner.register(r).await
    }
    async fn register_all(&self, r: Vec<Registration>) -> Result<Revision, Error> {
        self.inner.register_all(r).await
    }
    async fn deregister(&self, s: &ServiceName, i: &InstanceId) -> Result<Revision, Error> {
        self.inner.deregister(s, i).await
    }
    async fn heartbeat(&self, s: &ServiceName, i: &InstanceId) -> Result<Option<Revision>, Error> {
        self.inner.heartbeat(s, i).await
    }
    async fn set_health(
        &self,
        s: &ServiceName,
        i: &InstanceId,
        h: Health,
    ) -> Result<Revision, Error> {
        self.inner.set_health(s, i, h).await
    }
    async fn snapshot(&self, s: &ServiceName) -> Result<Snapshot, Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(outage());
        }
        self.inner.snapshot(s).await
    }
    async fn services(&self) -> Result<Vec<ServiceName>, Error> {
        self.inner.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.inner.revision().await
    }
    fn watch(&self, s: &ServiceName, since: Revision) -> Watch {
        if let Some(events) = self.script.lock().unwrap().take() {
            // A scripted watch: the given events, then the real ones.
            let rest = self.inner.watch(s, since);
            return Watch::new(futures_util::stream::iter(events.into_iter().map(Ok)).chain(rest));
        }
        Watch::new(FlakyWatch {
            inner: self.inner.watch(s, since),
            down: self.down.clone(),
            panics: self.panics.clone(),
            tick: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
        })
    }
    fn watch_all(&self, since: Revision) -> Watch {
        self.inner.watch_all(since)
    }
    async fn compact(&self, r: Revision) -> Result<(), Error> {
        self.inner.compact(r).await
    }
    async fn reap(&self, c: &LeaseConfig) -> Result<ReapReport, Error> {
        self.inner.reap(c).await
    }
    fn clock(&self) -> &Clock {
        self.inner.clock()
    }
}

fn flaky() -> Flaky {
    Flaky {
        inner: MemoryRegistry::new(),
        down: Arc::new(AtomicBool::new(false)),
        script: Arc::new(std::sync::Mutex::new(None)),
        panics: Arc::new(AtomicBool::new(false)),
    }
}

#[tokio::test(start_paused = true)]
async fn outage_of_30s_keeps_the_set_and_resumes_exactly_once() {
    let r = flaky();
    for (n, port) in [("a", 1), ("b", 2), ("c", 3)] {
        r.register(inst(n, port).into()).await.unwrap();
    }
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    assert_eq!(drain(&mut d).await.len(), 3);

    r.down.store(true, Ordering::SeqCst);
    // Changes made while the registry is unreachable to this process.
    r.register(inst("d", 4).into()).await.unwrap();
    r.deregister(&svc("orders"), &id("a")).await.unwrap();
    r.register(inst("b", 22).into()).await.unwrap();
    r.set_health(&svc("orders"), &id("c"), Health::Critical)
        .await
        .unwrap();
    let last = r.register(inst("e", 5).into()).await.unwrap();
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            drain(&mut d).await.is_empty(),
            "nothing changes and nothing errors during the outage"
        );
    }
    assert!(handle.is_stale());
    assert!(handle.last_error().unwrap().contains("connection refused"));
    assert_eq!(handle.endpoints(), 3, "the last known set is still served");

    r.down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    let got = summary(&drain(&mut d).await);
    assert_eq!(
        got,
        ["+d:4", "-a", "+b:22", "-c", "+e:5"],
        "every missed change once, in order"
    );
    assert!(!handle.is_stale());
    assert_eq!(handle.revision(), last);
    assert_eq!(handle.endpoints(), 3);
}

#[tokio::test(start_paused = true)]
async fn registry_down_at_start_retries_until_it_answers() {
    let r = flaky();
    r.register(inst("a", 1).into()).await.unwrap();
    r.down.store(true, Ordering::SeqCst);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(drain(&mut d).await.is_empty());
    assert!(handle.is_stale());
    r.down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(summary(&drain(&mut d).await), ["+a:1"]);
    assert!(!handle.is_stale());
}

#[tokio::test(start_paused = true)]
async fn duplicate_and_out_of_order_events_are_ignored() {
    let r = flaky();
    let a1 = inst("a", 1);
    let a2 = inst("a", 2);
    *r.script.lock().unwrap() = Some(vec![
        Event::Put {
            revision: Revision::new(5),
            instance: a2.clone(),
        },
        Event::Put {
            revision: Revision::new(5),
            instance: a2.clone(),
        }, // duplicate
        Event::Put {
            revision: Revision::new(3),
            instance: a1.clone(),
        }, // late, older
        Event::Delete {
            revision: Revision::new(4),
            service: svc("orders"),
            id: id("a"),
        }, // late
        Event::Delete {
            revision: Revision::new(6),
            service: svc("orders"),
            id: id("a"),
        },
        Event::Put {
            revision: Revision::new(5),
            instance: a2,
        }, // older than the delete
    ]);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    assert_eq!(summary(&drain(&mut d).await), ["+a:2", "-a"]);
}

#[tokio::test(start_paused = true)]
async fn mass_disappearance_from_a_stale_registry_is_held() {
    let r = flaky();
    for n in 0..4 {
        r.register(inst(&format!("i{n}"), 1 + n).into())
            .await
            .unwrap();
    }
    // A stale source (a cache serving old data while its database is down) resets the set
    // to one instance: three of four would go.
    let stale = Snapshot::new(Revision::new(4), vec![inst("i0", 1)]).with_stale(true);
    *r.script.lock().unwrap() = Some(vec![Event::Reset(stale)]);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let handle = d.handle();
    assert_eq!(drain(&mut d).await.len(), 4, "the first load");
    assert!(drain(&mut d).await.is_empty(), "the removals are held");
    assert_eq!(handle.endpoints(), 4);
    // The registry is heard from again: the held removals are re-checked against it and go.
    r.register(inst("i9", 9).into()).await.unwrap();
    let mut got = summary(&drain(&mut d).await);
    got.sort();
    assert_eq!(got, ["+i9:9", "-i1", "-i2", "-i3"]);

    // A small reset from a stale source is applied at once.
    let r = flaky();
    for n in 0..4 {
        r.register(inst(&format!("i{n}"), 1 + n).into())
            .await
            .unwrap();
    }
    let names: Vec<_> = (0..3).map(|n| inst(&format!("i{n}"), 1 + n)).collect();
    *r.script.lock().unwrap() = Some(vec![Event::Reset(
        Snapshot::new(Revision::new(4), names).with_stale(true),
    )]);
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo);
    let got = summary(&drain(&mut d).await);
    assert_eq!(got.len(), 5);
    assert_eq!(got[4], "-i3");
}

/// A hyper server on loopback answering with its name, counting its requests.
async fn server(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(name)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn at(id: &str, addr: SocketAddr) -> Registration {
    Instance::builder("orders", id)
        .host(addr.ip().to_string())
        .port(u32::from(addr.port()))
        .build()
        .unwrap()
        .into()
}

async fn send_n<S>(balancer: &mut S, n: usize) -> HashMap<String, usize>
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    let mut seen = HashMap::new();
    for _ in 0..n {
        let req = http::Request::get("/orders/42").body(Empty::new()).unwrap();
        let res = balancer.ready().await.unwrap().call(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        *seen
            .entry(String::from_utf8(body.to_vec()).unwrap())
            .or_default() += 1;
    }
    seen
}

/// tower's p2c balancer over the registry-fed stream, real servers: requests flow; a
/// deregistered instance gets no more traffic; a newly registered one gets some.
async fn p2c_follows_the_registry<R: Registry>(registry: R) {
    let (a, a_hits) = server("a").await;
    let (b, _) = server("b").await;
    let (c, _) = server("c").await;
    registry.register(at("a", a)).await.unwrap();
    let rev = registry.register(at("b", b)).await.unwrap();
    let discover = RegistryDiscover::new(
        registry.clone(),
        "orders",
        HttpEndpoints::<Empty<Bytes>>::new(),
    )
    .spawn();
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
    let mut d = RegistryDiscover::builder()
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(watcher, "orders", echo);
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

/// tower-mesh's own balancer over the registry-fed stream: smooth weighted round robin reads
/// each instance's registered weight, real servers on loopback, and a re-registration with a
/// new weight takes effect.
#[cfg(feature = "balance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_balance_reads_instance_weights() {
    use tower_mesh::balance::{BalanceLayer, Weighted};
    use tower_mesh::discover::MakeEndpoint;
    let (a, _) = server("a").await;
    let (b, _) = server("b").await;
    let registry = MemoryRegistry::new();
    let weighted = |id: &str, addr: SocketAddr, weight: u32| -> Registration {
        Instance::builder("orders", id)
            .host(addr.ip().to_string())
            .port(u32::from(addr.port()))
            .weight(weight)
            .build()
            .unwrap()
            .into()
    };
    registry.register(weighted("a", a, 100)).await.unwrap();
    let rev = registry.register(weighted("b", b, 300)).await.unwrap();
    let discover = RegistryDiscover::new(
        registry.clone(),
        "orders",
        HttpEndpoints::<Empty<Bytes>>::new().weighted(),
    )
    .spawn();
    let handle = discover.handle();
    handle.applied(rev).await;
    let mut balancer = BalanceLayer::new(Weighted::new()).build(discover);
    let seen = send_n(&mut balancer, 400).await;
    assert_eq!(seen["a"], 100, "{seen:?}");
    assert_eq!(seen["b"], 300, "{seen:?}");

    // Equal weights now: the re-registration re-inserts "b" with its new weight.
    let rev = registry.register(weighted("b", b, 100)).await.unwrap();
    handle.applied(rev).await;
    let seen = send_n(&mut balancer, 400).await;
    assert_eq!((seen["a"], seen["b"]), (200, 200), "{seen:?}");
}

/// A waker that records being woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

fn flag() -> (Arc<Flag>, std::task::Waker) {
    let flag = Arc::new(Flag::default());
    (flag.clone(), std::task::Waker::from(flag))
}

/// A spawned stream keeps the set the balancer should hold and hands out the differences when
/// polled: nothing piles up while no request flows, and no endpoint is made before it is taken.
#[tokio::test(start_paused = true)]
async fn spawned_hands_out_differences_not_every_change() {
    let r = MemoryRegistry::new();
    let first = r.register(inst("x", 9).into()).await.unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let mut d = RegistryDiscover::new(r.clone(), "orders", move |i: &Instance| {
        counter.fetch_add(1, Ordering::SeqCst);
        i.clone()
    })
    .spawn();
    let handle = d.handle();
    handle.applied(first).await;
    assert_eq!(summary(&drain(&mut d).await), ["+x:9"]);
    assert_eq!(made.load(Ordering::SeqCst), 1);
    // The balancer has taken everything; then no request flows for a while.
    let (woken, waker) = flag();
    assert!(Pin::new(&mut d)
        .poll_next(&mut Context::from_waker(&waker))
        .is_pending());

    r.register(inst("a", 1).into()).await.unwrap();
    r.deregister(&svc("orders"), &id("a")).await.unwrap();
    for port in 1..=10 {
        r.register(inst("b", port).into()).await.unwrap();
    }
    let mut rev = Revision::ZERO;
    for n in 0..10_000 {
        let pod = format!("pod-{n}");
        r.register(inst(&pod, 80).into()).await.unwrap();
        rev = r.deregister(&svc("orders"), &id(&pod)).await.unwrap();
    }
    handle.applied(rev).await;
    assert!(
        woken.take(),
        "the balancer's task is woken when there is a change"
    );
    assert_eq!(
        made.load(Ordering::SeqCst),
        1,
        "no endpoint is made before the balancer takes it"
    );
    assert_eq!(handle.endpoints(), 2);
    assert_eq!(
        summary(&drain(&mut d).await),
        ["+b:10"],
        "a came and went, b changed ten times, the pods came and went"
    );
    assert_eq!(made.load(Ordering::SeqCst), 2);

    // Held by the balancer now: changed and changed back is one re-insert; removed is a removal.
    r.register(inst("b", 11).into()).await.unwrap();
    let rev = r.register(inst("b", 10).into()).await.unwrap();
    handle.applied(rev).await;
    assert_eq!(summary(&drain(&mut d).await), ["+b:10"]);
    r.register(inst("c", 3).into()).await.unwrap();
    let rev = r.deregister(&svc("orders"), &id("b")).await.unwrap();
    handle.applied(rev).await;
    assert_eq!(summary(&drain(&mut d).await), ["+c:3", "-b"]);
    assert_eq!(handle.endpoints(), 2);
    assert_eq!(made.load(Ordering::SeqCst), 4);
}

fn ok(_: ()) -> std::future::Ready<Result<(), Infallible>> {
    std::future::ready(Ok(()))
}

type Always = tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), Infallible>>>;
type Endpoint = tower_mesh::discover::InstanceEndpoint<Always>;

fn weighted_endpoints() -> tower_mesh::discover::Weighted<impl FnMut(&Instance) -> Always> {
    use tower_mesh::discover::MakeEndpoint;
    (|_: &Instance| tower::service_fn(ok as fn(()) -> _)).weighted()
}

/// An instance that registered as `Warning` turns `Passing`: no re-insert, but the endpoint the
/// balancer holds reads `Passing` (so it counts as healthy for the panic threshold), and the
/// task that last polled its readiness is woken to re-read it. The same both ways, and for
/// clones.
async fn health_changes_reach_the_endpoint<S>(r: &MemoryRegistry, d: &mut S)
where
    S: Stream<Item = Result<Change<InstanceId, Endpoint>, Error>> + Unpin,
{
    let mut got = drain(d).await;
    assert_eq!(got.len(), 1);
    let Some(Change::Insert(_, mut endpoint)) = got.pop() else {
        panic!("an insert");
    };
    let copy = endpoint.clone();
    assert_eq!(endpoint.health(), Health::Warning);
    let (woken, waker) = flag();
    let mut cx = Context::from_waker(&waker);
    assert!(endpoint.poll_ready(&mut cx).is_ready());

    r.set_health(&svc("orders"), &id("a"), Health::Passing)
        .await
        .unwrap();
    assert!(
        drain(d).await.is_empty(),
        "no re-insert for Warning -> Passing"
    );
    assert_eq!(endpoint.health(), Health::Passing);
    assert_eq!(copy.health(), Health::Passing, "clones share the health");
    assert!(woken.take(), "the task that polled the endpoint is woken");
    #[cfg(feature = "balance")]
    assert!(tower_mesh::balance::Weight::is_healthy(&endpoint));

    // And back, after the balancer polled the endpoint again.
    assert!(endpoint.poll_ready(&mut cx).is_ready());
    r.set_health(&svc("orders"), &id("a"), Health::Warning)
        .await
        .unwrap();
    assert!(drain(d).await.is_empty());
    assert_eq!(endpoint.health(), Health::Warning);
    assert!(woken.take());
    #[cfg(feature = "balance")]
    assert!(!tower_mesh::balance::Weight::is_healthy(&endpoint));

    // A re-registration with the same address and health is no change and wakes nothing.
    r.register(inst("a", 1).with_health(Health::Warning).into())
        .await
        .unwrap();
    assert!(drain(d).await.is_empty());
    assert!(!woken.take());

    // Critical is a change: removed.
    r.set_health(&svc("orders"), &id("a"), Health::Critical)
        .await
        .unwrap();
    let got = drain(d).await;
    assert!(matches!(&got[..], [Change::Remove(k)] if k.as_str() == "a"));
}

#[tokio::test(start_paused = true)]
async fn health_changes_reach_the_endpoint_without_reinsert() {
    let r = MemoryRegistry::new();
    r.register(inst("a", 1).with_health(Health::Warning).into())
        .await
        .unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", weighted_endpoints());
    health_changes_reach_the_endpoint(&r, &mut d).await;
}

#[tokio::test(start_paused = true)]
async fn health_changes_reach_the_endpoint_through_spawn() {
    let r = MemoryRegistry::new();
    r.register(inst("a", 1).with_health(Health::Warning).into())
        .await
        .unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", weighted_endpoints()).spawn();
    health_changes_reach_the_endpoint(&r, &mut d).await;
}

/// The task driving a spawned stream dies (here, a registry whose watch panics): the handle
/// reports it and the balancer's task is woken, instead of the set silently freezing.
#[tokio::test(start_paused = true)]
async fn a_spawned_stream_whose_task_dies_reports_it() {
    let r = flaky();
    let rev = r.register(inst("a", 1).into()).await.unwrap();
    let mut d = RegistryDiscover::new(r.clone(), "orders", echo).spawn();
    let handle = d.handle();
    handle.applied(rev).await;
    assert_eq!(summary(&drain(&mut d).await), ["+a:1"]);
    let (woken, waker) = flag();
    assert!(Pin::new(&mut d)
        .poll_next(&mut Context::from_waker(&waker))
        .is_pending());

    r.panics.store(true, Ordering::SeqCst);
    r.register(inst("b", 2).into()).await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(handle.is_stale(), "the dead task is reported");
    assert!(
        handle
            .last_error()
            .unwrap()
            .contains("background task stopped"),
        "{:?}",
        handle.last_error()
    );
    assert!(woken.take(), "the balancer is woken to see it");
    assert!(drain(&mut d).await.is_empty());
    assert_eq!(handle.endpoints(), 1, "the last set is still served");
}
