//! Rows and events written behind the registry's back that do not decode.

use super::*;

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
