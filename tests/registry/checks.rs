//! Health checks in the registry: the check spec declared with an instance, and the last
//! check's output kept with it, on every backend; corrupt stored ones reported.

use std::time::Duration;

use futures_util::StreamExt;
use tower_mesh::instance::{Check, Health, Instance, LastCheck, MAX_CHECK_OUTPUT};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{Error, Event, HealthUpdate, Registration, Registry};

use super::suite::{id, inst, next_event, svc, Ctx};

fn http_check() -> Check {
    Check::http("/healthz?deep=1")
        .method(http::Method::HEAD)
        .statuses([200..=204, 429..=429])
        .body("ok")
        .port(9090)
        .interval(Duration::from_secs(5))
        .jitter(Duration::from_millis(250))
        .timeout(Duration::from_millis(1500))
        .unhealthy_interval(Duration::from_secs(2))
        .healthy_threshold(1)
        .unhealthy_threshold(4)
        .build()
        .unwrap()
}

fn checked(i: Instance, check: Check) -> Instance {
    i.to_builder().check(check).build().unwrap()
}

/// A check declared with an instance comes back whole from snapshots and watches, through
/// single and batch registration; re-registering without one removes it.
pub async fn checks_round_trip<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let from = r.revision().await.unwrap();
    let mut watch = r.watch(&svc("orders"), from);
    let with_http = checked(inst("orders", "o-1", 8001), http_check());
    r.register(with_http.clone().into()).await.unwrap();
    match next_event(&mut watch).await {
        Event::Put { instance, .. } => {
            assert_eq!(instance.check(), Some(&http_check()));
            assert_eq!(instance, with_http);
        }
        e => panic!("expected a put, got {e:?}"),
    }
    let tcp = Check::tcp()
        .interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let grpc = Check::grpc("orders.v1.Orders").build().unwrap();
    let batch = vec![
        Registration::new(checked(inst("orders", "o-2", 8002), tcp.clone())),
        Registration::new(checked(inst("orders", "o-3", 8003), grpc.clone())),
        Registration::new(inst("orders", "o-4", 8004)),
    ];
    r.register_all(batch).await.unwrap();
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert!(snap.corrupt().is_empty(), "{:?}", snap.corrupt());
    let checks: Vec<_> = snap
        .instances()
        .iter()
        .map(|i| i.check().cloned())
        .collect();
    assert_eq!(checks, [Some(http_check()), Some(tcp), Some(grpc), None]);
    assert_eq!(snap.instances()[0], with_http);
    for _ in 0..3 {
        let Event::Put { instance, .. } = next_event(&mut watch).await else {
            panic!("expected puts");
        };
        let stored = snap.instances().iter().find(|i| i.id() == instance.id());
        assert_eq!(Some(&instance), stored);
    }

    // The check survives a health change, and goes when the instance is registered without.
    r.set_health(&svc("orders"), &id("o-1"), Health::Critical)
        .await
        .unwrap();
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(snap.instances()[0].check(), Some(&http_check()));
    r.register(inst("orders", "o-1", 8001).into())
        .await
        .unwrap();
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(snap.instances()[0].check(), None);

    // An instance registered with a last check (deserialized, say) keeps it.
    let noted =
        inst("orders", "o-5", 8005).with_last_check(Some(LastCheck::new("HTTP 200 OK", 42)));
    r.register(noted.clone().into()).await.unwrap();
    let snap = r.snapshot(&svc("orders")).await.unwrap();
    assert_eq!(
        snap.instances().iter().find(|i| i.id() == "o-5"),
        Some(&noted)
    );
}

const T0: i64 = 1_800_000_000_000;

fn put(event: Event) -> Instance {
    match event {
        Event::Put { instance, .. } => instance,
        e => panic!("expected a put, got {e:?}"),
    }
}

/// A health write with a check's output keeps the output and time with the instance, in
/// snapshots and watch events, next to the check spec; a later write replaces them, and a plain
/// `set_health` clears them.
pub async fn health_output_round_trips<R: Registry>(ctx: Ctx<R>) {
    let r = &ctx.registry;
    let (orders, o1) = (svc("orders"), id("o-1"));
    r.register(checked(inst("orders", "o-1", 8001), http_check()).into())
        .await
        .unwrap();
    let mut watch = r.watch(&orders, r.revision().await.unwrap());

    let refused = LastCheck::new("connect: connection refused", T0);
    let update = HealthUpdate::new(Health::Critical).with_last_check(refused.clone());
    let rev = r.set_health_with(&orders, &o1, update).await.unwrap();
    let snap = r.snapshot(&orders).await.unwrap();
    assert_eq!(snap.revision(), rev);
    let stored = &snap.instances()[0];
    assert_eq!(stored.health(), Health::Critical);
    assert_eq!(stored.last_check(), Some(&refused));
    assert_eq!(stored.check(), Some(&http_check()), "the spec is untouched");
    let seen = put(next_event(&mut watch).await);
    assert_eq!(&seen, stored);

    // The same health with a new output is still a write: the output and time are replaced.
    let again = LastCheck::new("connect: timed out after 1.5s", T0 + 5_000);
    let update = HealthUpdate::new(Health::Critical).with_last_check(again.clone());
    let rev2 = r.set_health_with(&orders, &o1, update).await.unwrap();
    assert!(rev2 > rev);
    let seen = put(next_event(&mut watch).await);
    assert_eq!(
        (seen.health(), seen.last_check()),
        (Health::Critical, Some(&again))
    );

    // The longest output there is (multi-byte characters included) is stored whole.
    let long = LastCheck::new("é".repeat(MAX_CHECK_OUTPUT), T0 + 10_000);
    let update = HealthUpdate::new(Health::Passing).with_last_check(long.clone());
    r.set_health_with(&orders, &o1, update).await.unwrap();
    let snap = r.snapshot(&orders).await.unwrap();
    assert_eq!(snap.instances()[0].last_check(), Some(&long));
    assert_eq!(put(next_event(&mut watch).await).last_check(), Some(&long));

    // A plain health write clears the output: no check set that health.
    r.set_health(&orders, &o1, Health::Maintenance)
        .await
        .unwrap();
    let snap = r.snapshot(&orders).await.unwrap();
    assert_eq!(snap.instances()[0].health(), Health::Maintenance);
    assert_eq!(snap.instances()[0].last_check(), None);
    assert_eq!(put(next_event(&mut watch).await).last_check(), None);

    // An update for an unknown instance takes no revision.
    let before = r.revision().await.unwrap();
    let update = HealthUpdate::new(Health::Passing).with_last_check(refused);
    let err = r
        .set_health_with(&orders, &id("ghost"), update)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(r.revision().await.unwrap(), before);
}

/// Stored check specs (and outputs) that do not decode are [`CorruptRecord`]s naming the
/// column, in snapshots and in watches; the instance is never served without its check.
///
/// [`CorruptRecord`]: tower_mesh::registry::CorruptRecord
async fn corrupt_checks_are_reported(ctx: Ctx<SqlRegistry>) {
    use sqlx::Executor;
    let r = &ctx.registry;
    r.register(checked(inst("orders", "o-1", 8001), http_check()).into())
        .await
        .unwrap();
    let from = r.revision().await.unwrap();
    let mut watch = r.watch(&svc("orders"), from);
    let cols = "service, instance_id, host, port, scheme, version, weight, zone, metadata, \
                health, health_check, check_output, checked_at_ms, lease_expired, revision";
    let too_long = format!("'{}'", "x".repeat(MAX_CHECK_OUTPUT + 1));
    let rows = [
        ("bad-json", "'{not json'", "NULL", "NULL"),
        (
            "zero-interval",
            r#"'{"kind":"tcp","interval_ms":0}'"#,
            "NULL",
            "NULL",
        ),
        ("no-time", "NULL", "'HTTP 200 OK'", "NULL"),
        ("long-output", "NULL", too_long.as_str(), "1"),
    ];
    for (n, (iid, check, output, at)) in rows.iter().enumerate() {
        let rev = from.get() + 1 + n as u64;
        for table in ["mesh_instances", "mesh_events"] {
            let (cols, vals) = if table == "mesh_events" {
                (
                    format!("kind, {}", cols.replace(", lease_expired", "")),
                    format!("'put', 'orders', '{iid}', '127.0.0.1', 8002, 'http', '1', 100, NULL, '{{}}', 'passing', {check}, {output}, {at}, {rev}"),
                )
            } else {
                (
                    cols.to_owned(),
                    format!("'orders', '{iid}', '127.0.0.1', 8002, 'http', '1', 100, NULL, '{{}}', 'passing', {check}, {output}, {at}, 0, {rev}"),
                )
            };
            r.pool()
                .execute(format!("INSERT INTO {table} ({cols}) VALUES ({vals})").as_str())
                .await
                .unwrap();
        }
    }
    r.pool()
        .execute(
            format!(
                "UPDATE mesh_state SET revision = {} WHERE id = 1",
                from.get() + rows.len() as u64
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
    assert_eq!(good, ["o-1"]);
    let mut corrupt: Vec<_> = snap
        .corrupt()
        .iter()
        .map(|c| (c.id().to_owned(), c.field(), c.value().to_owned()))
        .collect();
    corrupt.sort();
    assert_eq!(
        corrupt,
        [
            (
                "bad-json".to_owned(),
                "health_check",
                "{not json".to_owned()
            ),
            (
                "long-output".to_owned(),
                "check_output",
                format!("{}...", "x".repeat(117))
            ),
            ("no-time".to_owned(), "checked_at_ms", "NULL".to_owned()),
            (
                "zero-interval".to_owned(),
                "health_check",
                r#"{"kind":"tcp","interval_ms":0}"#.to_owned()
            ),
        ]
    );
    let zero = snap
        .corrupt()
        .iter()
        .find(|c| c.id() == "zero-interval")
        .unwrap();
    assert!(
        zero.reason().contains("invalid check interval 0ns"),
        "{zero}"
    );

    // The same rows as events: each is reported once, and the watch goes on.
    for expected in ["bad-json", "zero-interval", "no-time", "long-output"] {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Err(Error::Corrupt(c)))) => assert_eq!(c.id(), expected, "{c}"),
            other => panic!("expected a corrupt event for {expected}, got {other:?}"),
        }
    }
    let rev = r
        .register(checked(inst("orders", "o-9", 8009), http_check()).into())
        .await
        .unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(event.revision(), rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_corrupt_checks() {
    corrupt_checks_are_reported(super::sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_corrupt_checks() {
    if let Some(ctx) = super::postgres().await {
        corrupt_checks_are_reported(ctx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_corrupt_checks() {
    if let Some(ctx) = super::mysql().await {
        corrupt_checks_are_reported(ctx).await;
    }
}
