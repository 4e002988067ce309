//! A database restored from a backup taken at an earlier revision.

use super::*;

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
