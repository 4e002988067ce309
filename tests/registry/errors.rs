//! Every registry error prints once in a chain: transparent over the error it carries, or a
//! message of its own with no `source` repeating it.

use std::error::Error as StdError;

use super::*;
use tower_mesh::instance::Instance;
use tower_mesh::registry::{DatabaseError, DatabaseErrorKind, Registration};

/// The messages down `err`'s `source` chain.
fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut messages = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        messages.push(e.to_string());
        next = e.source();
    }
    messages
}

/// No message in the chain repeats the one below it.
fn prints_once(err: &(dyn StdError + 'static)) -> Vec<String> {
    let messages = chain(err);
    for pair in messages.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "printed twice: {:?} holds its source {:?}",
            pair[0],
            pair[1]
        );
    }
    messages
}

/// `err` is transparent: its message and source are `inner`'s.
fn transparent(err: &Error, inner: &(dyn StdError + 'static)) {
    assert_eq!(err.to_string(), inner.to_string());
    assert_eq!(
        err.source().map(ToString::to_string),
        inner.source().map(ToString::to_string)
    );
    prints_once(err);
}

#[tokio::test]
async fn each_kind_prints_once() {
    // Invalid: a value refused before anything was stored.
    let instance = Instance::builder("orders", "o-1").port(1).build().unwrap();
    let invalid = Registration::new(instance)
        .with_ttl(Duration::ZERO)
        .unwrap_err();
    let err = Error::from(invalid.clone());
    assert!(matches!(err, Error::Invalid(_)));
    transparent(&err, &invalid);
    assert!(err.to_string().contains("ttl"), "{err}");

    // NotFound and NoLease: messages of their own, no source.
    let registry = MemoryRegistry::new();
    let err = registry
        .deregister(&svc("orders"), &id("nobody"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!(
        chain(&err),
        [r#"instance "nobody" of service "orders" not found"#]
    );
    registry
        .register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let err = registry
        .heartbeat(&svc("orders"), &id("o-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoLease { .. }));
    assert_eq!(chain(&err).len(), 1, "{err}");
    assert!(err.to_string().contains("no lease"), "{err}");

    // Database: a real driver failure (a directory that does not exist), kept as text.
    let err = SqlRegistry::connect("sqlite:///no/such/dir/tm.db")
        .await
        .unwrap_err();
    let Error::Database(db) = &err else {
        panic!("expected a database error, got {err:?}");
    };
    transparent(&err, db);
    assert!(db.source().is_none());
    assert!(
        err.to_string()
            .starts_with("database error during connect: "),
        "{err}"
    );
    let own = DatabaseError::new(DatabaseErrorKind::Other, "watch", "it broke");
    transparent(&Error::Database(own.clone()), &own);
    assert_eq!(own.to_string(), "database error during watch: it broke");

    // Config: the setting, the value and the reason, once.
    let err = AnyRegistry::connect("redis://h/0").await.unwrap_err();
    let Error::Config(config) = &err else {
        panic!("expected a config error, got {err:?}");
    };
    transparent(&err, config);
    assert_eq!(
        err.to_string(),
        "invalid registry url \"redis://h/0\": must start with memory:, sqlite:, postgres://, \
         postgresql://, mysql:// or mariadb://"
    );
}

/// A stored event that does not decode reaches a watcher as `Error::Corrupt`, transparent over
/// the record, which names the service, the instance, the field and the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_records_print_once() {
    use sqlx::Executor;
    let ctx = sqlite().await.unwrap();
    let r = &ctx.registry;
    r.pool()
        .execute(
            "INSERT INTO mesh_events (revision, kind, service, instance_id, host, port, scheme, \
             version, weight, zone, metadata, health) \
             VALUES (1, 'put', 'orders', 'o-1', '127.0.0.1', 70000, 'http', '1', 100, NULL, \
             '{}', 'passing')",
        )
        .await
        .unwrap();
    r.pool()
        .execute("UPDATE mesh_state SET revision = 1 WHERE id = 1")
        .await
        .unwrap();
    let mut w = r.watch(&svc("orders"), Revision::ZERO);
    let err = match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(err))) => err,
        other => panic!("expected a corrupt event, got {other:?}"),
    };
    let Error::Corrupt(record) = &err else {
        panic!("expected a corrupt record, got {err:?}");
    };
    transparent(&err, record);
    assert_eq!(
        err.to_string(),
        "corrupt stored instance \"o-1\" of service \"orders\" at revision 1: port \"70000\" \
         does not decode: must be in 1..=65535"
    );
}
