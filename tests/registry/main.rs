//! The registry conformance suite against every backend (and through [`AnyRegistry`]), the SQL
//! backends' own faults (corrupt rows, two writers on one database, outages, restores, the
//! PostgreSQL listener, passwords kept out of errors), leases, settings refused at build, and
//! how errors print.

mod any;
mod checks;
mod config;
mod corrupt;
mod errors;
mod leases;
mod listener;
mod one_watch;
mod outage;
mod restore;
mod secrets;
mod suite;
#[path = "../support/mod.rs"]
mod support;
mod writers;

use std::time::Duration;

use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{
    AnyRegistry, Cached, Error, Event, ManualClock, MemoryRegistry, Registry, Revision, Watch,
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

/// An [`AnyRegistry`] from `url`, with the same settings as [`sql_at`] for SQL (a manual
/// clock) and tokio's clock for `memory:`.
async fn any_at(url: &str) -> Ctx<AnyRegistry> {
    if url == "memory:" {
        return Ctx {
            registry: AnyRegistry::connect(url).await.unwrap(),
            manual: None,
        };
    }
    let clock = ManualClock::new(START_MS);
    let registry = AnyRegistry::builder(url)
        .clock(clock.clone().into())
        .sql(|b| {
            b.poll_interval(Duration::from_millis(20))
                .fallback_poll(Duration::from_millis(200))
        })
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    Ctx {
        registry,
        manual: Some(clock),
    }
}

async fn any_memory() -> Option<Ctx<AnyRegistry>> {
    Some(any_at("memory:").await)
}

async fn any_sqlite() -> Option<Ctx<AnyRegistry>> {
    Some(any_at("sqlite::memory:").await)
}

async fn any_postgres() -> Option<Ctx<AnyRegistry>> {
    let base = support::server_url("TOWER_MESH_TEST_POSTGRES")?;
    Some(any_at(&support::fresh_database(&base).await).await)
}

async fn any_mysql() -> Option<Ctx<AnyRegistry>> {
    let base = support::server_url("TOWER_MESH_TEST_MYSQL")?;
    Some(any_at(&support::fresh_database(&base).await).await)
}

async fn cached_any_postgres() -> Option<Ctx<Cached<AnyRegistry>>> {
    let ctx = any_postgres().await?;
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
                bad_input_is_rejected checks_round_trip
                health_output_round_trips);
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
    any_memory_backend_extra: any_memory, tokio::test(start_paused = true);
    any_mysql_backend_extra: any_mysql, tokio::test(flavor = "multi_thread", worker_threads = 2);
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
conformance!(
    any_memory_backend,
    any_memory,
    tokio::test(start_paused = true)
);
conformance!(
    any_sqlite_backend,
    any_sqlite,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
conformance!(
    any_postgres_backend,
    any_postgres,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
conformance!(
    any_mysql_backend,
    any_mysql,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
conformance!(
    cached_any_postgres_backend,
    cached_any_postgres,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);
