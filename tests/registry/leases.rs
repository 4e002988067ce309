//! Leases: the reaper task, schema upgrades of critical instances, clock skew between
//! processes, and a reaper that survives a panicking sweep.

use super::*;

/// The memory reaper on tokio's paused clock: a lease lapses, then the instance goes.
#[tokio::test(start_paused = true)]
async fn reaper_task_expires_on_paused_time() {
    use tower_mesh::registry::{LeaseConfig, Reaper};
    let registry = MemoryRegistry::new();
    let _reaper = Reaper::new(
        registry.clone(),
        LeaseConfig::builder()
            .grace(Duration::from_secs(5))
            .sweep_interval(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
    .spawn();
    registry
        .register(suite::leased(inst("orders", "o-1", 1), 3))
        .await
        .unwrap();
    let mut w = registry.watch(&svc("orders"), registry.revision().await.unwrap());
    match next_event(&mut w).await {
        Event::Put { instance, .. } => {
            assert_eq!(instance.health(), tower_mesh::instance::Health::Critical)
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(next_event(&mut w).await, Event::Delete { .. }));
    assert!(registry
        .snapshot(&svc("orders"))
        .await
        .unwrap()
        .instances()
        .is_empty());
}

/// A database made by the first schema version, holding an instance that is already critical,
/// is upgraded by `connect`: the instance's grace period then counts from its lease's deadline
/// (the best the old schema knows), and it is reaped once that has passed.
///
/// `now_ms` is the SQL for the current lease time: the manual clock's start on SQLite, the
/// server's clock on PostgreSQL and MySQL.
async fn upgrade_keeps_critical_instances(url: &str, backend: &str, now_ms: &str) {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let dir = std::env::temp_dir().join(format!(
        "tm-migrations-{backend}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let first = "20261129000001_registry.sql";
    std::fs::copy(
        format!(
            "{}/migrations/{backend}/{first}",
            env!("CARGO_MANIFEST_DIR")
        ),
        dir.join(first),
    )
    .unwrap();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let cols = "service, instance_id, host, port, scheme, version, weight, zone, metadata, \
                health, ttl_ms, expires_at_ms, lease_expired, revision";
    pool.execute(
        format!(
            "INSERT INTO mesh_instances ({cols}) VALUES \
             ('orders', 'o-1', '127.0.0.1', 8001, 'http', '1', 100, NULL, '{{}}', 'passing', \
             10000, {now_ms} - 20000, 1, 1)"
        )
        .as_str(),
    )
    .await
    .unwrap();
    pool.execute("UPDATE mesh_state SET revision = 1 WHERE id = 1")
        .await
        .unwrap();
    pool.close().await;
    let ctx = sql_at(url).await;
    let r = &ctx.registry;
    let cfg = suite::grace(Duration::from_secs(30));
    assert!(r.reap(&cfg).await.unwrap().deregistered.is_empty());
    ctx.advance(Duration::from_secs(11)).await;
    assert_eq!(
        r.reap(&cfg).await.unwrap().deregistered,
        vec![(svc("orders"), id("o-1"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_keeps_critical_instances() {
    let path = std::env::temp_dir().join(format!("tm-upgrade-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    upgrade_keeps_critical_instances(
        &format!("sqlite://{}?mode=rwc", path.display()),
        "sqlite",
        &START_MS.to_string(),
    )
    .await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_keeps_critical_instances() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        let url = support::fresh_database(&base).await;
        let now = "CAST(FLOOR(EXTRACT(EPOCH FROM now()) * 1000) AS BIGINT)";
        upgrade_keeps_critical_instances(&url, "postgres", now).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_upgrade_keeps_critical_instances() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        let url = support::fresh_database(&base).await;
        let now = "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000)";
        upgrade_keeps_critical_instances(&url, "mysql", now).await;
    }
}

/// Two processes share one database, and their clocks are 8 s apart. Lease times come from the
/// database's clock, so neither process's reaper expires the other's fresh lease; when the
/// leases really lapse, either reaper expires both.
async fn skewed_clocks_share_the_database_clock(base: &str) {
    let url = support::fresh_database(base).await;
    let connect = |start_ms: i64| {
        let url = url.clone();
        async move {
            let clock = ManualClock::new(start_ms);
            let registry = SqlRegistry::builder(&url)
                .clock(clock.clone().into())
                .connect()
                .await
                .unwrap();
            (registry, clock)
        }
    };
    let (a, clock_a) = connect(START_MS).await;
    let (b, clock_b) = connect(START_MS + 8_000).await;
    let cfg = tower_mesh::registry::LeaseConfig::builder()
        .without_self_preservation()
        .build()
        .unwrap();
    a.register(suite::leased(inst("orders", "from-a", 8001), 5))
        .await
        .unwrap();
    b.register(suite::leased(inst("orders", "from-b", 8002), 5))
        .await
        .unwrap();
    for (name, reaper) in [("the fast clock", &b), ("the slow clock", &a)] {
        let report = reaper.reap(&cfg).await.unwrap();
        assert!(
            report.expired.is_empty(),
            "the reaper with {name} expired a fresh lease: {report:?}"
        );
    }
    // Heartbeats through either registry renew by the database's clock too.
    b.heartbeat(&svc("orders"), &id("from-a")).await.unwrap();
    a.heartbeat(&svc("orders"), &id("from-b")).await.unwrap();
    assert!(b.reap(&cfg).await.unwrap().expired.is_empty());
    assert!(a.reap(&cfg).await.unwrap().expired.is_empty());
    // 6 s later (the injected clocks move the database's time for tests), both have lapsed.
    clock_a.advance(Duration::from_secs(6));
    clock_b.advance(Duration::from_secs(6));
    let mut expired = a.reap(&cfg).await.unwrap().expired;
    expired.sort();
    assert_eq!(
        expired,
        vec![(svc("orders"), id("from-a")), (svc("orders"), id("from-b"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_skewed_clocks_share_the_database_clock() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        skewed_clocks_share_the_database_clock(&base).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_skewed_clocks_share_the_database_clock() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        skewed_clocks_share_the_database_clock(&base).await;
    }
}

/// A registry whose first sweep panics (a bug in a registry of one's own, say).
#[derive(Clone)]
struct PanicsOnce {
    inner: MemoryRegistry,
    panicked: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Registry for PanicsOnce {
    async fn register(&self, r: tower_mesh::registry::Registration) -> Result<Revision, Error> {
        self.inner.register(r).await
    }
    async fn register_all(
        &self,
        r: Vec<tower_mesh::registry::Registration>,
    ) -> Result<Revision, Error> {
        self.inner.register_all(r).await
    }
    async fn deregister(
        &self,
        s: &tower_mesh::instance::ServiceName,
        i: &tower_mesh::instance::InstanceId,
    ) -> Result<Revision, Error> {
        self.inner.deregister(s, i).await
    }
    async fn heartbeat(
        &self,
        s: &tower_mesh::instance::ServiceName,
        i: &tower_mesh::instance::InstanceId,
    ) -> Result<Option<Revision>, Error> {
        self.inner.heartbeat(s, i).await
    }
    async fn set_health(
        &self,
        s: &tower_mesh::instance::ServiceName,
        i: &tower_mesh::instance::InstanceId,
        h: tower_mesh::instance::Health,
    ) -> Result<Revision, Error> {
        self.inner.set_health(s, i, h).await
    }
    async fn snapshot(
        &self,
        s: &tower_mesh::instance::ServiceName,
    ) -> Result<tower_mesh::registry::Snapshot, Error> {
        self.inner.snapshot(s).await
    }
    async fn services(&self) -> Result<Vec<tower_mesh::instance::ServiceName>, Error> {
        self.inner.services().await
    }
    async fn revision(&self) -> Result<Revision, Error> {
        self.inner.revision().await
    }
    fn watch(&self, s: &tower_mesh::instance::ServiceName, since: Revision) -> Watch {
        self.inner.watch(s, since)
    }
    fn watch_all(&self, since: Revision) -> Watch {
        self.inner.watch_all(since)
    }
    async fn compact(&self, up_to: Revision) -> Result<(), Error> {
        self.inner.compact(up_to).await
    }
    async fn reap(
        &self,
        c: &tower_mesh::registry::LeaseConfig,
    ) -> Result<tower_mesh::registry::ReapReport, Error> {
        if !self
            .panicked
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("injected: the first sweep panics");
        }
        self.inner.reap(c).await
    }
    fn clock(&self) -> &tower_mesh::registry::Clock {
        self.inner.clock()
    }
}

/// A sweep that panics does not end the reaper: the handle reports it, and later sweeps still
/// expire leases.
#[tokio::test(start_paused = true)]
async fn reaper_survives_a_panicking_sweep() {
    use tower_mesh::registry::{LeaseConfig, Reaper};
    let registry = PanicsOnce {
        inner: MemoryRegistry::new(),
        panicked: Default::default(),
    };
    registry
        .register(suite::leased(inst("orders", "o-1", 1), 3))
        .await
        .unwrap();
    let reaper = Reaper::new(
        registry.clone(),
        LeaseConfig::builder()
            .grace(Duration::from_secs(5))
            .sweep_interval(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
    .spawn();
    let mut w = registry.watch(&svc("orders"), registry.revision().await.unwrap());
    match next_event(&mut w).await {
        Event::Put { instance, .. } => {
            assert_eq!(instance.health(), tower_mesh::instance::Health::Critical)
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(next_event(&mut w).await, Event::Delete { .. }));
    let stats = reaper.stats();
    assert_eq!(stats.panicked, 1, "{stats:?}");
    assert!(stats.sweeps >= 7, "{stats:?}"); // t = 1..=7 s; the 8th deregistered it
    assert!(reaper.is_running());
}

/// A reaper whose runtime shut down says so through its handle.
#[test]
fn reaper_handle_reports_a_stopped_reaper() {
    use tower_mesh::registry::{LeaseConfig, Reaper};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle =
        rt.block_on(async { Reaper::new(MemoryRegistry::new(), LeaseConfig::default()).spawn() });
    assert!(handle.is_running());
    drop(rt);
    assert!(!handle.is_running());
}
