//! Two writers on one database: revisions stay unique and ordered, no update is lost.

use super::*;

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
