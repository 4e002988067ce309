//! Checkers sharing one registry: every instance checked by exactly `replicas` of them, a
//! killed checker's share taken over, a joining one moving about 1/N, and what two replicas
//! that disagree write.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_mesh::health::{Assignment, HealthChecker, CHECKERS_SERVICE};
use tower_mesh::instance::{Check, Health, InstanceId, ServiceName};
use tower_mesh::registry::sql::SqlRegistry;
use tower_mesh::registry::{LeaseConfig, MemoryRegistry, Reaper, Registration, Registry};

use crate::counting::Counting;
use crate::servers::{Answer, HttpServer};
use crate::{eventually, health_of, iid, instance, quick, support, svc, until_health};

const POLL: Duration = Duration::from_millis(100);
const TTL: Duration = Duration::from_secs(2);

/// A checker on a runtime of its own, as if in another process: `kill` stops it dead (no
/// deregistration; its lease lapses).
struct Remote {
    runtime: Option<tokio::runtime::Runtime>,
    checker: Option<HealthChecker>,
    assignment: watch::Receiver<Assignment>,
}

impl Remote {
    fn start(url: &str, id: &str) -> Remote {
        let (url, id) = (url.to_owned(), id.to_owned());
        // Made on a thread of its own: a runtime cannot be entered from within another.
        std::thread::spawn(move || Remote::start_here(&url, &id))
            .join()
            .unwrap()
    }

    fn start_here(url: &str, id: &str) -> Remote {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let checker = runtime.block_on(async {
            let registry = SqlRegistry::builder(url)
                .poll_interval(POLL)
                .connect()
                .await
                .unwrap();
            HealthChecker::builder(id)
                .lease_ttl(TTL)
                .spawn(registry)
                .unwrap()
        });
        Remote {
            assignment: checker.assignment(),
            runtime: Some(runtime),
            checker: Some(checker),
        }
    }

    fn kill(mut self) {
        // The runtime first: the checker's tasks die without a word.
        self.runtime.take().unwrap().shutdown_background();
        drop(self.checker.take());
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let (Some(runtime), Some(checker)) = (self.runtime.take(), self.checker.take()) {
            std::thread::spawn(move || {
                runtime.block_on(checker.shutdown());
                runtime.shutdown_background();
            })
            .join()
            .unwrap();
        }
    }
}

type Key = (ServiceName, InstanceId);

/// Waits until the checkers agree on `live` members and split `all` exactly (each instance
/// owned by exactly one), and returns each checker's share.
async fn until_split(
    assignments: &[watch::Receiver<Assignment>],
    live: usize,
    all: &BTreeSet<Key>,
) -> Vec<BTreeSet<Key>> {
    eventually("the checkers to split the instances", async {
        loop {
            let shares: Vec<(usize, BTreeSet<Key>)> = assignments
                .iter()
                .map(|a| {
                    let a = a.borrow();
                    (a.checkers().len(), a.instances().clone())
                })
                .collect();
            let total: usize = shares.iter().map(|(_, s)| s.len()).sum();
            let union: BTreeSet<Key> = shares.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
            if shares.iter().all(|(n, _)| *n == live) && total == all.len() && union == *all {
                return shares.into_iter().map(|(_, s)| s).collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn share_and_take_over(url: &str, checkers: usize) {
    let registry = SqlRegistry::builder(url)
        .poll_interval(POLL)
        .connect()
        .await
        .unwrap();
    let config = LeaseConfig::builder()
        .grace(Duration::from_secs(60))
        .sweep_interval(Duration::from_millis(100))
        .without_self_preservation()
        .build()
        .unwrap();
    let _reaper = Reaper::new(registry.clone(), config).spawn();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let all: BTreeSet<Key> = (0..60).map(|i| (svc(), iid(&format!("o-{i}")))).collect();
    let registrations: Vec<Registration> = all
        .iter()
        .map(|(_, id)| instance(id.as_str(), port, quick(Check::tcp())).into())
        .collect();
    registry.register_all(registrations).await.unwrap();

    let mut remotes: Vec<Remote> = (0..checkers)
        .map(|i| Remote::start(url, &format!("checker-{i}")))
        .collect();
    let receivers: Vec<_> = remotes.iter().map(|r| r.assignment.clone()).collect();
    let shares = until_split(&receivers, checkers, &all).await;
    assert!(
        shares.iter().all(|s| !s.is_empty()),
        "every checker has a share"
    );
    let members = registry
        .snapshot(&CHECKERS_SERVICE.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(members.instances().len(), checkers);

    // Kill checker 0: its lease lapses after the TTL, the reaper turns it critical, and the
    // others take its share over.
    let killed = remotes.remove(0);
    let started = Instant::now();
    killed.kill();
    let after = until_split(&receivers[1..], checkers - 1, &all).await;
    let took = started.elapsed();
    // Within the TTL of the last heartbeat (a third of a TTL before the kill, at most), plus a
    // reaper sweep (100 ms) and a poll of the watch (100 ms); the bound leaves generous slack
    // for a loaded machine.
    eprintln!("{checkers} checkers: the killed checker's share taken over in {took:?}");
    assert!(took < TTL + Duration::from_secs(3), "took over in {took:?}");
    for (before, now) in shares[1..].iter().zip(&after) {
        assert!(before.is_subset(now), "a survivor keeps its own share");
    }
    // The instances stay healthy through the takeover: nobody wrote a spurious transition.
    let snapshot = registry.snapshot(&svc()).await.unwrap();
    assert!(snapshot
        .instances()
        .iter()
        .all(|i| i.health() == Health::Passing));
    drop(remotes);
}

fn sqlite_url(name: &str) -> (String, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("tm-checker-{name}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    (format!("sqlite://{}?mode=rwc", path.display()), path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_checkers_share_a_sqlite_file() {
    let (url, path) = sqlite_url("two");
    share_and_take_over(&url, 2).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_checkers_share_a_sqlite_file() {
    let (url, path) = sqlite_url("three");
    share_and_take_over(&url, 3).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_checkers_share_postgres() {
    let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") else {
        return;
    };
    let url = support::fresh_database(&base).await;
    share_and_take_over(&url, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_checker_moves_about_one_in_n() {
    let registry = MemoryRegistry::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let check = Check::tcp()
        .interval(Duration::from_secs(60))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let all: BTreeSet<Key> = (0..1_000)
        .map(|i| (svc(), iid(&format!("o-{i}"))))
        .collect();
    let registrations: Vec<Registration> = all
        .iter()
        .map(|(_, id)| instance(id.as_str(), port, check.clone()).into())
        .collect();
    registry.register_all(registrations).await.unwrap();
    let mut checkers: Vec<HealthChecker> = (0..3)
        .map(|i| {
            HealthChecker::builder(format!("checker-{i}"))
                .spawn(registry.clone())
                .unwrap()
        })
        .collect();
    let receivers: Vec<_> = checkers.iter().map(HealthChecker::assignment).collect();
    let before = until_split(&receivers, 3, &all).await;

    checkers.push(
        HealthChecker::builder("checker-3")
            .spawn(registry.clone())
            .unwrap(),
    );
    let receivers: Vec<_> = checkers.iter().map(HealthChecker::assignment).collect();
    let after = until_split(&receivers, 4, &all).await;
    // Only instances that go to the newcomer move; about 1/4 of them (250 expected).
    for (b, a) in before.iter().zip(&after) {
        assert!(a.is_subset(b), "an old checker only loses instances");
    }
    let moved = after[3].len();
    assert!((180..=320).contains(&moved), "moved {moved} of 1000");

    // One leaves gracefully: its share is spread over the rest at once (no lease to wait for).
    let leaving = checkers.remove(3);
    leaving.shutdown().await;
    let receivers: Vec<_> = checkers.iter().map(HealthChecker::assignment).collect();
    let back = until_split(&receivers, 3, &all).await;
    assert_eq!(back, before);
    for checker in checkers {
        checker.shutdown().await;
    }
}

/// `replicas = 2`: both checkers check the instance; each writes only its own transitions, so
/// when they disagree the registry holds the verdict that changed last, with one write per
/// transition and no write war.
#[tokio::test(start_paused = true)]
async fn two_replicas_that_disagree_write_their_own_transitions() {
    let server = HttpServer::start(Answer::ok("")).await;
    let registry = Counting::new();
    registry
        .register(instance("o-1", server.addr.port(), quick(Check::http("/"))).into())
        .await
        .unwrap();
    let a = HealthChecker::builder("a")
        .replicas(2)
        .spawn(registry.clone())
        .unwrap();
    let b = HealthChecker::builder("b")
        .replicas(2)
        .spawn(registry.clone())
        .unwrap();
    for checker in [&a, &b] {
        checker
            .assignment()
            .wait_for(|x| x.checkers().len() == 2 && x.len() == 1)
            .await
            .unwrap();
    }

    // `b` cannot get a good answer, `a` can: `b` writes critical once; `a`, whose verdict
    // does not change, writes nothing, and the registry stays critical.
    server.set_for("b", Answer::status(503));
    until_health(&registry, "o-1", Health::Critical).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(registry.writes(), 1);
    assert_eq!((a.stats().writes, b.stats().writes), (0, 1));
    assert!(a.stats().checks >= 20 && b.stats().checks >= 20);
    assert_eq!(health_of(&registry, "o-1").await.0, Health::Critical);

    // `b` recovers: its own transition back to passing is written.
    server.set_for("b", Answer::ok(""));
    until_health(&registry, "o-1", Health::Passing).await;
    // Now `a` sees failures: its transition is the last one, and it stands.
    server.set_for("a", Answer::status(500));
    let output = until_health(&registry, "o-1", Health::Critical).await;
    assert_eq!(output.as_deref(), Some("HTTP 500 Internal Server Error"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(registry.writes(), 3);
    assert_eq!((a.stats().writes, b.stats().writes), (1, 2));
    a.shutdown().await;
    b.shutdown().await;
}
