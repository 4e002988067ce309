//! Churn, latency-aware picking and metrics.

use super::*;

async fn churn(strategy: Strategy, steps: usize, seed: u64, rate: u32, cap: usize) {
    churn_from(strategy, 0, steps, seed, rate, cap).await
}

/// [`churn`], starting from `start` endpoints.
async fn churn_from(
    strategy: Strategy,
    start: u32,
    steps: usize,
    seed: u64,
    rate: u32,
    cap: usize,
) {
    use std::sync::{Arc, Mutex};
    let mut rng = SmallRng::seed_from_u64(seed);
    let live: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let (changes, disco) = discovery::<u32, support::Probe>();
    let pick = AnyPick::new(strategy).with_key(key_fn).seeded(seed);
    let mut b = BalanceLayer::new(pick).build(disco);
    let mut endpoints: HashMap<u32, support::Probe> = HashMap::new();
    let mut next_id = 0u32;
    let mut open = Vec::new();
    let mut served = 0usize;
    let mut failed = 0usize;
    for _ in 0..start {
        let p = support::Probe::new(next_id, rng.random_range(1..5), live.clone());
        live.lock().unwrap().insert(next_id);
        changes.insert(next_id, p.clone());
        endpoints.insert(next_id, p);
        next_id += 1;
    }
    for step in 0..steps {
        let mut roll = rng.random_range(0..100);
        let changes_set = roll <= 8 || roll == 15;
        if changes_set && rate > 1 && rng.random_range(0..rate) != 0 {
            roll = 99; // a request instead
        }
        match roll {
            0..=4 if endpoints.len() < cap => {
                let p = support::Probe::new(next_id, rng.random_range(1..5), live.clone());
                live.lock().unwrap().insert(next_id);
                changes.insert(next_id, p.clone());
                endpoints.insert(next_id, p);
                next_id += 1;
            }
            5..=8 if !endpoints.is_empty() => {
                let id = *endpoints
                    .keys()
                    .nth(rng.random_range(0..endpoints.len()))
                    .unwrap();
                endpoints.remove(&id);
                live.lock().unwrap().remove(&id);
                changes.remove(id);
            }
            9..=14 if !endpoints.is_empty() => {
                let p = endpoints
                    .values()
                    .nth(rng.random_range(0..endpoints.len()))
                    .unwrap();
                p.flip_ready();
            }
            15 if !endpoints.is_empty() => {
                // This endpoint's next readiness check fails: the balancer drops it.
                let id = *endpoints
                    .keys()
                    .nth(rng.random_range(0..endpoints.len()))
                    .unwrap();
                let p = endpoints.remove(&id).unwrap();
                p.fail_next();
                failed += 1;
            }
            16..=40 if !open.is_empty() => {
                let i = rng.random_range(0..open.len());
                let mut f: tower_mesh::balance::future::ResponseFuture<_> = open.swap_remove(i);
                assert!(poll_once(&mut f).is_ready());
            }
            _ => match poll_ready::<_, u64>(&mut b) {
                Poll::Ready(Ok(())) => {
                    open.push(b.call(step as u64));
                    served += 1;
                }
                Poll::Pending if b.endpoints().usable_len() > 0 => {
                    // Endpoints are ready but the strategy's first table is still being
                    // built on the blocking pool: wait for it (the clock does not move
                    // meanwhile).
                    ServiceExt::<u64>::ready(&mut b).await.unwrap();
                }
                Poll::Ready(Err(_)) | Poll::Pending => {}
            },
        }
    }
    assert!(served > steps / 10, "{strategy}: served {served}");
    // Every endpoint still discovered is in the balancer; failed ones are gone once polled.
    let _ = poll_ready::<_, u64>(&mut b);
    assert!(b.len() >= endpoints.len() && b.len() <= endpoints.len() + failed);
}

#[tokio::test(start_paused = true)]
async fn churn_stress() {
    for (i, s) in [
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::LeastRequests,
        Strategy::P2c,
        Strategy::P2cPending,
        Strategy::Random,
    ]
    .into_iter()
    .enumerate()
    {
        churn(s, 100_000, i as u64, 1, 40).await;
    }
    // Least requests indexes more than 64 endpoints with a tree: churn that too.
    churn(Strategy::LeastRequests, 100_000, 99, 1, 150).await;
}

#[tokio::test(start_paused = true)]
async fn churn_stress_hashers() {
    // Rebuilding a hash table costs far more than a pick (a Maglev table has 65,537 slots):
    // change the set 20 (ring) or 100 (Maglev) times less often, for as many steps.
    churn(Strategy::RingHash, 100_000, 11, 20, 40).await;
    churn(Strategy::Maglev, 100_000, 12, 100, 40).await;
    // Maglev fills its tables on the blocking pool while requests go on over the old one:
    // no request may reach a removed endpoint meanwhile either. (From 80 endpoints, the
    // first table is waited for; without it nothing can be served.)
    churn_from(Strategy::Maglev, 80, 20_000, 13, 10, 120).await;
}

/// Peak EWMA steers traffic away from a slow endpoint (paused time, seeded RNG).
#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_avoids_slow_endpoint() {
    use tower::discover::ServiceList;
    use tower_mesh::balance::WithWeight;

    let endpoints: Vec<_> = (0..5u64)
        .map(|i| {
            let latency = Duration::from_millis(if i == 0 { 100 } else { 10 });
            WithWeight::new(
                tower::service_fn(move |_: u64| async move {
                    tokio::time::sleep(latency).await;
                    Ok::<_, std::convert::Infallible>(i)
                }),
                1,
            )
        })
        .collect();
    let mut b = BalanceLayer::new(P2c::peak_ewma().seeded(3)).build(ServiceList::new(endpoints));
    let mut slow = 0;
    for r in 0..1_000u64 {
        if b.ready().await.unwrap().call(r).await.unwrap() == 0 {
            slow += 1;
        }
    }
    // Round robin would send 200 there; the peak estimate keeps it to a handful.
    assert!(slow <= 10, "slow endpoint got {slow} of 1000");
}

/// The per-endpoint counters, read back from a real recorder after real picks: requests
/// per endpoint, the endpoint removed for failing readiness, and a request that found no
/// endpoint.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_count_requests_failures_and_no_endpoints() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use support::Probe;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A recorder for this thread only (the test runs on a current-thread runtime), so
    // other tests' balancers do not count here.
    let _local = metrics::set_default_local_recorder(&recorder);

    let live = std::sync::Arc::new(std::sync::Mutex::new(HashSet::from([0u32, 1, 2])));
    let (changes, disco) = discovery::<u32, Probe>();
    let probes: Vec<Probe> = (0..3).map(|id| Probe::new(id, 1, live.clone())).collect();
    for (id, p) in probes.iter().enumerate() {
        changes.insert(id as u32, p.clone());
    }
    let mut b = BalanceLayer::builder(RoundRobin::new())
        .no_endpoints_timeout(Duration::from_secs(1))
        .build()
        .expect("valid balancer settings")
        .build(disco);
    let mut picked: HashMap<u32, u64> = HashMap::new();
    for r in 0..30u64 {
        let id = ServiceExt::<u64>::oneshot(&mut b, r).await.unwrap();
        *picked.entry(id).or_default() += 1;
    }
    // Endpoint 2 fails its next readiness check and is removed; the others are drained.
    probes[2].fail_next();
    probes[0].flip_ready();
    probes[1].flip_ready();
    // They woke their poller when they changed: polled again before the next request.
    let err = loop {
        match ServiceExt::<u64>::oneshot(&mut b, 0).await {
            Ok(id) => *picked.entry(id).or_default() += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is::<NoEndpoints>(), "{err}");
    assert_eq!(b.len(), 2);
    let total: u64 = picked.values().sum();
    assert_eq!(total, 30, "{picked:?}");

    let mut requests: HashMap<String, u64> = HashMap::new();
    let (mut failures, mut none) = (HashMap::new(), 0);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let DebugValue::Counter(v) = value else {
            continue;
        };
        let key = key.key();
        let endpoint = key
            .labels()
            .find(|l| l.key() == "endpoint")
            .map(|l| l.value().to_owned());
        match (key.name(), endpoint) {
            ("tower_mesh_balance_requests_total", Some(e)) => {
                requests.insert(e, v);
            }
            ("tower_mesh_balance_endpoint_failures_total", Some(e)) => {
                failures.insert(e, v);
            }
            ("tower_mesh_balance_no_endpoints_total", None) => none += v,
            (name, e) => panic!("unexpected counter {name} {e:?}"),
        }
    }
    let expected: HashMap<String, u64> =
        picked.iter().map(|(id, n)| (id.to_string(), *n)).collect();
    assert_eq!(requests, expected);
    assert_eq!(requests.values().sum::<u64>(), total);
    assert_eq!(failures, HashMap::from([("2".to_owned(), 1)]));
    assert_eq!(none, 1);
}
