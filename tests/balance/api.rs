//! The balancer's public surface: builders that refuse bad values, errors found through
//! `Buffer`'s and `BoxError`'s wrapping and printed once, and the introspection handle.

use super::*;

use std::error::Error as _;

use tower_mesh::balance::error::{BuildError, Discover};

fn refused<P>(r: Result<P, BuildError>, setting: &str, value: &str) {
    let Err(e) = r else {
        panic!("{setting} = {value} accepted")
    };
    assert_eq!(e.setting(), setting, "{e}");
    assert_eq!(e.value(), value, "{e}");
    let text = e.to_string();
    assert!(text.contains(setting) && text.contains(value), "{text}");
}

#[test]
fn builder_refuses_bad_values_naming_the_setting() {
    let b = || BalanceLayer::builder(RoundRobin::new());
    refused(
        b().panic_threshold_percent(101).build(),
        "panic_threshold_percent",
        "101",
    );
    refused(
        b().default_rtt(Duration::ZERO).build(),
        "default_rtt",
        "0ns",
    );
    refused(b().decay(Duration::ZERO).build(), "decay", "0ns");
    refused(
        b().slow_start(SlowStart::new(Duration::ZERO)).build(),
        "slow_start.window",
        "0ns",
    );
    for bad in [0, 101] {
        refused(
            b().slow_start(SlowStart::new(Duration::from_secs(1)).min_weight_percent(bad))
                .build(),
            "slow_start.min_weight_percent",
            &bad.to_string(),
        );
    }
    // The edges are accepted, and so is any no-endpoints bound.
    b().panic_threshold_percent(0).build().unwrap();
    b().panic_threshold_percent(100).build().unwrap();
    b().no_endpoints_timeout(Duration::ZERO).build().unwrap();
    b().no_endpoints_timeout(Duration::MAX).build().unwrap();
    b().slow_start(SlowStart::new(Duration::from_nanos(1)).min_weight_percent(100))
        .build()
        .unwrap();
}

#[test]
fn ring_hash_refuses_bad_sizes() {
    let r = || RingHash::new(key_fn);
    refused(r().vnodes(0), "vnodes", "0");
    refused(r().max_ring_size(0), "max_ring_size", "0");
    refused(
        r().max_ring_size((1 << 28) + 1),
        "max_ring_size",
        "268435457",
    );
    r().vnodes(1).unwrap().max_ring_size(1 << 28).unwrap();
}

/// A failing response future's error, through a `Buffer` and a `BoxError` wrapper.
#[tokio::test(start_paused = true)]
async fn errors_are_found_through_buffer_and_box_wrapping() {
    // No endpoint at all.
    let (_changes, disco) = discovery::<u32, Echo>();
    let balance = BalanceLayer::builder(RoundRobin::new())
        .no_endpoints_timeout(Duration::ZERO)
        .build()
        .unwrap()
        .build(disco);
    let client = tower::buffer::Buffer::new(balance, 4);
    let err = client.clone().oneshot(1u64).await.expect_err("no endpoint");
    let found = NoEndpoints::find(&*err).expect("found through the buffer");
    assert_eq!(found.discovered(), 0);
    assert!(Panic::find(&*err).is_none());
    // Wrapped once more, as an application error keeping it as its source.
    #[derive(Debug, thiserror::Error)]
    #[error("calling orders")]
    struct App(#[source] tower::BoxError);
    let wrapped: tower::BoxError = Box::new(App(err));
    assert!(NoEndpoints::find(&*wrapped).is_some());

    // Fail-fast panic.
    let layer = BalanceLayer::builder(RoundRobin::new())
        .panic_mode(PanicMode::FailFast)
        .build()
        .unwrap();
    let (_c, b, echoes) = setup(layer, &[1, 1, 1, 1]);
    for e in &echoes[1..] {
        e.set_healthy(false);
    }
    let client = tower::buffer::Buffer::new(b, 4);
    let err = client.clone().oneshot(1u64).await.expect_err("panic");
    let found = Panic::find(&*err).expect("found through the buffer");
    assert_eq!((found.healthy(), found.discovered()), (1, 4));
    assert!(NoEndpoints::find(&*err).is_none());
}

/// The discovery error keeps the stream's error as its source and does not repeat it.
#[tokio::test]
async fn discovery_error_prints_once() {
    #[derive(Debug, thiserror::Error)]
    #[error("registry unreachable")]
    struct Down;
    let stream = futures_util::stream::iter(vec![Err::<
        tower::discover::Change<u32, Echo>,
        tower::BoxError,
    >(Box::new(Down))]);
    let mut b = Balance::new(stream, RoundRobin::new());
    let err = ServiceExt::<u64>::ready(&mut b)
        .await
        .err()
        .expect("discovery failed");
    let found = Discover::find(&*err).expect("a discovery error");
    assert_eq!(found.to_string(), "load balancer discovery failed");
    assert_eq!(found.source().unwrap().to_string(), "registry unreachable");
    // Printing the chain names each error once.
    let mut chain = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    let all = chain.join(": ");
    assert_eq!(all.matches("registry unreachable").count(), 1, "{all}");
}

/// The handle reads the balancer's own set behind a `Buffer`: discovered, ready and
/// ejected by key, shrinking as endpoints leave, empty once the balancer is gone.
#[tokio::test(start_paused = true)]
async fn handle_reports_the_balancers_set_behind_buffer() {
    let (changes, disco) = discovery::<u32, Echo>();
    let balance = BalanceLayer::new(RoundRobin::new()).build(disco);
    let handle = balance.handle();
    let client = tower::buffer::Buffer::new(balance, 16);
    assert!(handle.is_empty() && !handle.is_closed());

    let echoes: Vec<Echo> = (0..3).map(|i| Echo::new(i, i + 1)).collect();
    for e in &echoes {
        changes.insert(e.id, e.clone());
    }
    client.clone().oneshot(0u64).await.unwrap();
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    assert_eq!(sorted(handle.discovered()), [0, 1, 2]);
    assert_eq!(sorted(handle.ready()), [0, 1, 2]);
    assert!(handle.ejected().is_empty());
    let states = handle.endpoints();
    let two = states.iter().find(|s| s.key == 2).unwrap();
    assert_eq!((two.weight, two.ready, two.healthy), (3, true, true));

    // Endpoint 1 turns unready (its breaker opened): ejected, with no request flowing.
    echoes[1].set_ready(false);
    client.clone().oneshot(1u64).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(handle.ejected(), [1]);
    assert_eq!(sorted(handle.ready()), [0, 2]);
    assert_eq!((handle.len(), handle.ready_len()), (3, 2));

    // Discovery removes endpoint 0: the handle's count follows the balancer's set.
    changes.remove(0);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(sorted(handle.discovered()), [1, 2]);

    let clone = handle.clone();
    drop(client);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(clone.is_closed());
    assert!(clone.discovered().is_empty() && clone.is_empty());
}
