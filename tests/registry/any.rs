//! [`AnyRegistry`]: the backend a URL names, behind `Cached` too, and the URLs it refuses.

use super::*;
use tower_mesh::registry::sql::Backend;

/// The backend `registry` runs on, as a name.
fn backend(registry: &AnyRegistry) -> &'static str {
    if registry.as_memory().is_some() {
        return "memory";
    }
    registry
        .as_sql()
        .map_or("unknown", |r| r.backend().as_str())
}

/// Registers through a cache in front of `registry`, and reads it back and watches it both
/// through the cache and straight from the registry.
async fn serves_through_a_cache(registry: AnyRegistry) {
    let cache = Cached::new(registry.clone()).await.unwrap();
    let mut w = cache.watch(&svc("orders"), Revision::ZERO);
    let rev = cache
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await.revision(), rev);
    let direct = registry.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(direct.instances(), [inst("orders", "o-1", 8001)]);
    assert_eq!(direct.revision(), rev);
    assert_eq!(cache.snapshot(&svc("orders")).await.unwrap(), direct);
}

/// Every scheme, each spelling on a fresh database of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_url_picks_its_backend() {
    let mut urls = vec![
        ("memory:".to_owned(), "memory"),
        ("memory://".to_owned(), "memory"),
        ("sqlite::memory:".to_owned(), "sqlite"),
    ];
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        urls.push((support::fresh_database(&base).await, "postgres"));
        let other = support::fresh_database(&base).await;
        urls.push((
            other.replacen("postgres://", "postgresql://", 1),
            "postgres",
        ));
    }
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        urls.push((support::fresh_database(&base).await, "mysql"));
        let other = support::fresh_database(&base).await;
        urls.push((other.replacen("mysql://", "mariadb://", 1), "mysql"));
    }
    for (url, expected) in urls {
        let registry = AnyRegistry::connect(&url).await.unwrap();
        assert_eq!(backend(&registry), expected, "{url}");
        serves_through_a_cache(registry).await;
    }
}

#[tokio::test]
async fn from_a_configured_backend() {
    let clock = ManualClock::new(START_MS);
    let sql = SqlRegistry::builder("sqlite::memory:")
        .clock(clock.clone().into())
        .connect()
        .await
        .unwrap();
    let registry = AnyRegistry::from(sql);
    assert_eq!(registry.as_sql().unwrap().backend(), Backend::Sqlite);
    assert_eq!(registry.clock().now_ms(), START_MS);
    let memory = AnyRegistry::from(MemoryRegistry::new());
    assert!(memory.as_memory().is_some() && memory.as_sql().is_none());
    // The builder's clock reaches either backend.
    for url in ["memory:", "sqlite::memory:"] {
        let registry = AnyRegistry::builder(url)
            .clock(clock.clone().into())
            .connect()
            .await
            .unwrap();
        assert_eq!(registry.clock().now_ms(), START_MS, "{url}");
    }
}

#[tokio::test]
async fn bad_urls_are_refused_by_name_without_their_password() {
    let cases = [
        ("redis://u:CANARY-pw@h/0", "\"redis://u:***@h/0\""),
        (
            "etcd://h:2379?password=CANARY-pw",
            "\"etcd://h:2379?password=***\"",
        ),
        ("memory:extra", "\"memory:extra\""),
        ("memory", "\"memory:<unparseable>\""),
    ];
    for (url, shown) in cases {
        let err = AnyRegistry::connect(url).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("CANARY"), "password leaked: {text}");
        match err {
            Error::Config(e) => {
                assert_eq!((e.field(), e.value()), ("registry url", shown), "{e}");
                assert!(e.to_string().starts_with("invalid registry url "), "{e}");
            }
            other => panic!("{url}: expected a config error, got {other:?}"),
        }
    }
}

/// SQL settings that cannot work are refused whatever the URL, before anything connects.
#[tokio::test]
async fn sql_settings_are_checked_for_every_url() {
    for url in ["memory:", "sqlite::memory:"] {
        let err = AnyRegistry::builder(url)
            .sql(|b| b.max_connections(0))
            .connect()
            .await
            .unwrap_err();
        match err {
            Error::Config(e) => assert_eq!((e.field(), e.value()), ("max_connections", "0")),
            other => panic!("{url}: {other:?}"),
        }
    }
}
