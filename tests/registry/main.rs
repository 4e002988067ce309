//! The registry conformance suite against every backend, and the SQL backends' own faults:
//! corrupt rows, two writers on one database, outages, and passwords kept out of errors.

mod suite;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{
    Cached, Error, Event, ManualClock, MemoryRegistry, Registry, Revision, Watch,
};

use suite::{id, inst, next_event, svc, Ctx};

const START_MS: i64 = 1_800_000_000_000;

async fn memory() -> Option<Ctx<MemoryRegistry>> {
    Some(Ctx {
        registry: MemoryRegistry::new(),
        manual: None,
    })
}

async fn sql_at(url: &str) -> Ctx<SqlRegistry> {
    let clock = ManualClock::new(START_MS);
    let registry = SqlRegistry::builder(url)
        .clock(clock.clone().into())
        .poll_interval(Duration::from_millis(20))
        .fallback_poll(Duration::from_millis(200))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    Ctx {
        registry,
        manual: Some(clock),
    }
}

async fn sqlite() -> Option<Ctx<SqlRegistry>> {
    Some(sql_at("sqlite::memory:").await)
}

async fn postgres() -> Option<Ctx<SqlRegistry>> {
    let base = support::server_url("TOWER_MESH_TEST_POSTGRES")?;
    Some(sql_at(&support::fresh_database(&base).await).await)
}

async fn mysql() -> Option<Ctx<SqlRegistry>> {
    let base = support::server_url("TOWER_MESH_TEST_MYSQL")?;
    Some(sql_at(&support::fresh_database(&base).await).await)
}

async fn cached_memory() -> Option<Ctx<Cached<MemoryRegistry>>> {
    Some(Ctx {
        registry: Cached::new(MemoryRegistry::new()).await.unwrap(),
        manual: None,
    })
}

async fn cached_sqlite() -> Option<Ctx<Cached<SqlRegistry>>> {
    let ctx = sql_at("sqlite::memory:").await;
    Some(Ctx {
        registry: Cached::new(ctx.registry).await.unwrap(),
        manual: ctx.manual,
    })
}

macro_rules! conformance {
    ($name:ident, $make:path, $attr:meta) => {
        mod $name {
            use super::*;
            conformance!(@each [$attr] $make;
                register_and_snapshot upsert_replaces deregister_removes set_health_changes
                heartbeat_and_ttl self_preservation outage_never_empties
                grace_counts_from_critical watch_from_zero watch_from_middle
                watch_after_compaction concurrent_writers batch_registration
                bad_input_is_rejected);
        }
    };
    (@each [$attr:meta] $make:path; $($test:ident)*) => { $(
        #[$attr]
        async fn $test() {
            if let Some(ctx) = $make().await {
                suite::$test(ctx).await
            }
        }
    )* };
}

/// Suite tests that the registries hold and [`Cached`] does not yet (its own watchers wait at
/// a position above the cache's; see `src/registry/cached.rs`).
macro_rules! registries_only {
    ($($name:ident: $make:path, $attr:meta;)*) => { $(
        mod $name {
            use super::*;
            #[$attr]
            async fn watch_from_above_current_revision() {
                if let Some(ctx) = $make().await {
                    suite::watch_from_above_current_revision(ctx).await
                }
            }
        }
    )* };
}

registries_only! {
    memory_backend_extra: memory, tokio::test(start_paused = true);
    sqlite_backend_extra: sqlite, tokio::test(flavor = "multi_thread", worker_threads = 2);
    postgres_backend_extra: postgres, tokio::test(flavor = "multi_thread", worker_threads = 2);
    mysql_backend_extra: mysql, tokio::test(flavor = "multi_thread", worker_threads = 2);
}

conformance!(memory_backend, memory, tokio::test(start_paused = true));
conformance!(
    cached_memory_backend,
    cached_memory,
    tokio::test(start_paused = true)
);
conformance!(
    sqlite_backend,
    sqlite,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
conformance!(
    cached_sqlite_backend,
    cached_sqlite,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
conformance!(
    postgres_backend,
    postgres,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
conformance!(
    mysql_backend,
    mysql,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);

/// Rows written behind the registry's back that do not decode are reported with their service,
/// instance and field, and the other instances are still served; a corrupt event is reported
/// once and the watch goes on.
async fn corrupt_rows_are_reported(ctx: Ctx<SqlRegistry>) {
    use sqlx::Executor;
    let r = &ctx.registry;
    r.register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    r.register(inst("orders", "o-2", 8002).into())
        .await
        .unwrap();
    let cols = "service, instance_id, host, port, scheme, version, weight, zone, metadata, \
                health, ttl_ms, expires_at_ms, lease_expired, revision";
    r.pool()
        .execute(
            format!(
                "INSERT INTO mesh_instances ({cols}) VALUES \
                 ('orders', 'bad-meta', '127.0.0.1', 8003, 'http', '1', 100, NULL, '{{not json', 'passing', NULL, NULL, 0, 2), \
                 ('orders', 'bad-health', '127.0.0.1', 8004, 'http', '1', 100, NULL, '{{}}', 'zombie', NULL, NULL, 0, 2)"
            )
            .as_str(),
        )
        .await
        .unwrap();
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    let good: Vec<_> = snap
        .instances()
        .iter()
        .map(|i| i.id().to_string())
        .collect();
    assert_eq!(good, ["o-1", "o-2"]);
    let mut corrupt: Vec<_> = snap
        .corrupt()
        .iter()
        .map(|c| {
            (
                c.service().to_owned(),
                c.id().to_owned(),
                c.field(),
                c.value().to_owned(),
            )
        })
        .collect();
    corrupt.sort();
    assert_eq!(
        corrupt,
        [
            (
                "orders".into(),
                "bad-health".into(),
                "health",
                "zombie".into()
            ),
            (
                "orders".into(),
                "bad-meta".into(),
                "metadata",
                "{not json".into()
            ),
        ]
    );
    let msg = snap.corrupt()[0].to_string();
    assert!(
        msg.contains("corrupt stored instance") && msg.contains("orders"),
        "{msg}"
    );

    // A corrupt event in the log.
    let from = r.revision().await.unwrap();
    let bad_rev = from.get() + 1;
    r.pool()
        .execute(
            format!(
                "INSERT INTO mesh_events (revision, kind, service, instance_id, host, port, scheme, version, weight, zone, metadata, health) \
                 VALUES ({bad_rev}, 'put', 'orders', 'o-1', '127.0.0.1', 70000, 'http', '1', 100, NULL, '{{}}', 'passing')"
            )
            .as_str(),
        )
        .await
        .unwrap();
    r.pool()
        .execute(format!("UPDATE mesh_state SET revision = {bad_rev} WHERE id = 1").as_str())
        .await
        .unwrap();
    let good_rev = r
        .register(inst("orders", "o-5", 8005).into())
        .await
        .unwrap();
    let mut w = r.watch(&svc("orders"), from);
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(Error::Corrupt(c)))) => {
            assert_eq!((c.id(), c.field(), c.value()), ("o-1", "port", "70000"));
            assert_eq!(c.revision(), Some(Revision::new(bad_rev)));
        }
        other => panic!("expected a corrupt event, got {other:?}"),
    }
    assert_eq!(next_event(&mut w).await.revision(), good_rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_corrupt_rows() {
    corrupt_rows_are_reported(sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_corrupt_rows() {
    if let Some(ctx) = postgres().await {
        corrupt_rows_are_reported(ctx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_corrupt_rows() {
    if let Some(ctx) = mysql().await {
        corrupt_rows_are_reported(ctx).await;
    }
}

/// Two registries (two pools: two processes, as far as the database can tell) do 1,000
/// overlapping upserts and deletes each. The final state is exactly what applying the
/// successful operations in revision order predicts, and the log has each revision once.
async fn two_writers_match_serial_model(url: &str, ops: usize) {
    let a = sql_at(url).await.registry;
    let b = sql_at(url).await.registry;
    let run = |r: SqlRegistry, seed: u64| async move {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut done = Vec::new();
        for _ in 0..ops {
            let n = rng.random_range(0..20u32);
            let key = format!("i-{n}");
            if rng.random_bool(0.7) {
                let port = rng.random_range(1..60_000u32);
                let rev = r.register(inst("orders", &key, port).into()).await.unwrap();
                done.push((rev, key, Some(port)));
            } else {
                match r.deregister(&svc("orders"), &id(&key)).await {
                    Ok(rev) => done.push((rev, key, None)),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        done
    };
    let (x, y) = tokio::join!(tokio::spawn(run(a.clone(), 1)), tokio::spawn(run(b, 2)));
    let mut all: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    all.sort_by_key(|(rev, _, _)| *rev);
    let revs: Vec<_> = all.iter().map(|(r, _, _)| *r).collect();
    let mut unique = revs.clone();
    unique.dedup();
    assert_eq!(unique.len(), revs.len(), "no duplicate revisions");
    let mut model = std::collections::BTreeMap::new();
    for (_, key, port) in &all {
        match port {
            Some(p) => {
                model.insert(key.clone(), *p as u16);
            }
            None => {
                assert!(
                    model.remove(key).is_some(),
                    "a delete succeeded on {key}, which the model says was absent"
                );
            }
        }
    }
    let snap = a.snapshot(&svc("orders")).await.unwrap();
    let actual: std::collections::BTreeMap<_, _> = snap
        .instances()
        .iter()
        .map(|i| (i.id().to_string(), i.port()))
        .collect();
    assert_eq!(actual, model);
    let mut w = a.watch(&svc("orders"), Revision::ZERO);
    for rev in &revs {
        assert_eq!(next_event(&mut w).await.revision(), *rev);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_writers() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        two_writers_match_serial_model(&support::fresh_database(&base).await, 1000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_two_writers() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        two_writers_match_serial_model(&support::fresh_database(&base).await, 1000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_two_writers() {
    let dir = std::env::temp_dir().join(format!("tm-two-writers-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let url = format!("sqlite://{}", dir.display());
    two_writers_match_serial_model(&url, 300).await;
    let _ = std::fs::remove_file(&dir);
}

const CANARY: &str = "CANARY-pw-7f3a9";

fn assert_no_canary(e: &Error) {
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(CANARY), "password leaked: {shown}");
}

#[tokio::test]
async fn passwords_never_appear_in_errors() {
    // Nothing listens on port 1: a connection error.
    let url = format!("postgres://mesh:{CANARY}@127.0.0.1:1/test");
    let builder = SqlRegistry::builder(&url).acquire_timeout(Duration::from_millis(300));
    assert!(!format!("{builder:?}").contains(CANARY));
    let err = builder.connect().await.unwrap_err();
    assert_no_canary(&err);
    if cfg!(feature = "registry-postgres") {
        assert!(err.is_transient(), "{err}");
    } else {
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    let err = SqlRegistry::connect(&format!("redis://u:{CANARY}@127.0.0.1/0"))
        .await
        .unwrap_err();
    assert_no_canary(&err);
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("***"), "{err}");
    // Real servers refusing the canary.
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        let mut u = url::Url::parse(&base).unwrap();
        u.set_password(Some(CANARY)).unwrap();
        let err = SqlRegistry::builder(u.as_str())
            .acquire_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_err();
        assert_no_canary(&err);
    }
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        let mut u = url::Url::parse(&base).unwrap();
        u.set_password(Some(CANARY)).unwrap();
        u.set_path("/no_such_database_for_canary");
        let err = SqlRegistry::builder(u.as_str())
            .acquire_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_err();
        assert_no_canary(&err);
    }
}

/// Reads `watch` until an `Err` item (the outage is seen), returning the events before it.
async fn until_error(w: &mut Watch) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(e))) => events.push(e),
            Ok(Some(Err(e))) => {
                assert!(e.is_transient(), "{e}");
                return events;
            }
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
}

/// The watcher's connection goes through a proxy that is cut; while it is down, another
/// process writes. After the proxy comes back, the watcher resumes from its last revision:
/// every change arrives once, in order.
async fn watch_resumes_after_outage(base: &str) {
    let url = support::fresh_database(base).await;
    let (proxy, watcher) = support::behind_proxy(&url).await;
    let writer = sql_at(&url).await.registry;
    let mut expected = Vec::new();
    for n in 0..3 {
        expected.push(
            writer
                .register(inst("orders", &format!("o-{n}"), 8000 + n).into())
                .await
                .unwrap(),
        );
    }
    let mut w = watcher.watch(&svc("orders"), Revision::ZERO);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut w).await.revision());
    }
    proxy.cut();
    for n in 3..6 {
        expected.push(
            writer
                .register(inst("orders", &format!("o-{n}"), 8000 + n).into())
                .await
                .unwrap(),
        );
    }
    expected.push(writer.deregister(&svc("orders"), &id("o-0")).await.unwrap());
    seen.extend(until_error(&mut w).await.iter().map(Event::revision));
    proxy.restore();
    let mut progressed = false;
    while seen.len() < expected.len() {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(Event::Progress { .. }))) => progressed = true,
            Ok(Some(Ok(e))) => seen.push(e.revision()),
            Ok(Some(Err(e))) => assert!(e.is_transient(), "{e}"),
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
    assert_eq!(seen, expected, "every change once, in order");
    // Recovery is announced once the watcher has caught up.
    while !progressed {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(Event::Progress { .. }))) => progressed = true,
            Ok(Some(Ok(e))) => panic!("unexpected event {e:?}"),
            Ok(Some(Err(e))) => assert!(e.is_transient(), "{e}"),
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_watch_resumes_after_outage() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        watch_resumes_after_outage(&base).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_watch_resumes_after_outage() {
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        watch_resumes_after_outage(&base).await;
    }
}

/// While the database is unreachable, a cache answers from memory, marked stale, and says so
/// to its watchers; when it comes back, the mark clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_serves_stale_data_during_outage() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let url = support::fresh_database(&base).await;
    let (proxy, inner) = support::behind_proxy(&url).await;
    let cache = Cached::new(inner).await.unwrap();
    cache
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let before = cache.snapshot(&svc("orders")).await.unwrap();
    assert!(!before.is_stale());
    let mut w = cache.watch(&svc("orders"), before.revision());
    proxy.cut();
    until_error(&mut w).await;
    assert!(cache.is_stale());
    let during = cache.snapshot(&svc("orders")).await.unwrap();
    assert!(during.is_stale());
    assert_eq!(during.instances(), before.instances());
    proxy.restore();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            Ok(Some(Ok(Event::Progress { .. }))) => break,
            Ok(Some(_)) => {}
            other => panic!("watch ended or hung: {other:?}"),
        }
    }
    assert!(!cache.snapshot(&svc("orders")).await.unwrap().is_stale());
}

/// A cache serves every service's watchers from one watch of its own.
#[tokio::test(start_paused = true)]
async fn cache_fans_out_one_watch() {
    let cache = Cached::new(MemoryRegistry::new()).await.unwrap();
    let mut a = cache.watch(&svc("orders"), Revision::ZERO);
    let mut b = cache.watch(&svc("billing"), Revision::ZERO);
    let ra = cache
        .register(inst("orders", "o-1", 1).into())
        .await
        .unwrap();
    let rb = cache
        .register(inst("billing", "b-1", 2).into())
        .await
        .unwrap();
    assert_eq!(next_event(&mut a).await.revision(), ra);
    assert_eq!(next_event(&mut b).await.revision(), rb);
    assert_eq!(cache.cached_services(), vec![svc("billing"), svc("orders")]);
}

/// The memory reaper on tokio's paused clock: a lease lapses, then the instance goes.
#[tokio::test(start_paused = true)]
async fn reaper_task_expires_on_paused_time() {
    use tower_mesh::registry::{LeaseConfig, Reaper};
    let registry = MemoryRegistry::new();
    let _reaper = Reaper::new(
        registry.clone(),
        LeaseConfig::default().grace(Duration::from_secs(5)),
    )
    .interval(Duration::from_secs(1))
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
    let cfg = tower_mesh::registry::LeaseConfig::default().grace(Duration::from_secs(30));
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
    let cfg = tower_mesh::registry::LeaseConfig::default().without_self_preservation();
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

/// The database is restored from a backup taken at an earlier revision while a watcher waits
/// above it. The watcher gets a `Reset` with the restored state (it would otherwise wait for a
/// revision that this history will reach only by different changes), then the changes after.
async fn restore_resets_watchers(ctx: Ctx<SqlRegistry>) {
    use sqlx::Executor;
    let r = &ctx.registry;
    let mut revs = Vec::new();
    for n in 1..=5 {
        revs.push(
            r.register(inst("orders", &format!("o-{n}"), 8000 + n).into())
                .await
                .unwrap(),
        );
    }
    let backup = revs[1];
    let mut w = r.watch(&svc("orders"), Revision::ZERO);
    for rev in &revs {
        assert_eq!(next_event(&mut w).await.revision(), *rev);
    }
    // The restore: the tables as they were at `backup` (o-3..o-5 came later).
    let b = backup.get();
    for sql in [
        format!("DELETE FROM mesh_events WHERE revision > {b}"),
        format!("DELETE FROM mesh_instances WHERE revision > {b}"),
        format!("UPDATE mesh_state SET revision = {b} WHERE id = 1"),
    ] {
        r.pool().execute(sql.as_str()).await.unwrap();
    }
    match next_event(&mut w).await {
        Event::Reset(snap) => {
            assert_eq!(snap.revision(), backup);
            let ids: Vec<_> = snap
                .instances()
                .iter()
                .map(|i| i.id().to_string())
                .collect();
            assert_eq!(ids, ["o-1", "o-2"]);
        }
        e => panic!("expected a reset, got {e:?}"),
    }
    let after = r
        .register(inst("orders", "o-6", 8006).into())
        .await
        .unwrap();
    assert!(after < revs[4], "the restored history reuses revisions");
    assert_eq!(next_event(&mut w).await.revision(), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restore_resets_watchers() {
    restore_resets_watchers(sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restore_resets_watchers() {
    if let Some(ctx) = postgres().await {
        restore_resets_watchers(ctx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_restore_resets_watchers() {
    if let Some(ctx) = mysql().await {
        restore_resets_watchers(ctx).await;
    }
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
        LeaseConfig::default().grace(Duration::from_secs(5)),
    )
    .interval(Duration::from_secs(1))
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

/// Everything written through `tracing` while the guard lives, on this thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || me.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The ways a URL can carry a password besides its user-info: a `password` parameter (any
/// case), or another parameter that holds one (`sslpassword`), plain, percent-encoded or
/// form-encoded.
fn password_parameters() -> Vec<String> {
    vec![
        format!("password={CANARY}"),
        format!("statement-cache-capacity=50&sslpassword={CANARY}"),
        format!("PassWord={CANARY}&statement-cache-capacity=50"),
        format!("password={}", CANARY.replace('-', "%2D")),
        format!("password={CANARY}+and+more"),
    ]
}

/// Notes `shown` in `leaks` if it holds the canary (plain or percent-encoded).
fn check_canary(leaks: &mut Vec<String>, what: &str, shown: &str) {
    if shown.replace("%2D", "-").contains(CANARY) {
        leaks.push(format!("{what}: {shown}"));
    }
}

/// A password given as a URL parameter is redacted wherever the user-info password is: the
/// builder's and the registry's `Debug`, errors, and logs (sqlx itself logs parameters it does
/// not know with their values, so those never reach it).
#[tokio::test(flavor = "current_thread")]
async fn password_parameters_are_redacted() {
    let logs = Captured::default();
    let _guard = logs.start();
    let mut leaks = Vec::new();
    for params in password_parameters() {
        // The builder, and the errors of a backend that is not compiled in or unreachable.
        for url in [
            format!("postgres://mesh@127.0.0.1:1/test?{params}"),
            format!("mysql://mesh@127.0.0.1:1/test?{params}"),
            format!("redis://127.0.0.1/0?{params}"),
        ] {
            let builder = SqlRegistry::builder(&url).acquire_timeout(Duration::from_millis(300));
            check_canary(&mut leaks, "the builder's Debug", &format!("{builder:?}"));
            let err = builder.connect().await.unwrap_err();
            check_canary(&mut leaks, "an error", &format!("{err} {err:?}"));
        }
        // Real servers that accept the connection (trust auth; MySQL ignores the parameter).
        for var in ["TOWER_MESH_TEST_POSTGRES", "TOWER_MESH_TEST_MYSQL"] {
            let Some(base) = support::server_url(var) else {
                continue;
            };
            let url = format!("{}?{params}", support::fresh_database(&base).await);
            let registry = SqlRegistry::builder(&url).connect().await.unwrap();
            check_canary(&mut leaks, "the registry's Debug", &format!("{registry:?}"));
            // Start the PostgreSQL listener too: it connects with the same URL.
            let mut w = registry.watch(&svc("orders"), Revision::ZERO);
            let rev = registry
                .register(inst("orders", "o-1", 8001).into())
                .await
                .unwrap();
            assert_eq!(next_event(&mut w).await.revision(), rev);
        }
    }
    for line in logs.text().lines() {
        check_canary(&mut leaks, "the logs", line);
    }
    assert!(leaks.is_empty(), "passwords leaked:\n{}", leaks.join("\n"));
}
