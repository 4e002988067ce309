//! The `metrics` a breaker reports, read back from a real recorder.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_layer::Layer;

use super::*;

/// The `metrics` counters and gauge, read back from a real recorder: calls by outcome,
/// transitions and the state; a breaker built with `metrics(false)` reports nothing.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_report_outcomes_transitions_and_state() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This thread only (current-thread runtime), so other tests' breakers do not count here.
    let _local = ::metrics::set_default_local_recorder(&recorder);

    let (layer, handle) = quick()
        .name("metered")
        .metrics(true)
        .consecutive_failures(2)
        .build_with_handle()
        .unwrap();
    let mut svc = layer.layer(echo());
    for _ in 0..3 {
        run(&mut svc, Ok("ok")).await.unwrap();
    }
    run(&mut svc, Err("x")).await.unwrap_err();
    run(&mut svc, Err("x")).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    assert!(is_open(&run(&mut svc, Ok("ok")).await.unwrap_err()));

    let (silent, _) = quick()
        .name("silent")
        .metrics(false)
        .build_with_handle()
        .unwrap();
    let mut quiet = silent.layer(echo());
    run(&mut quiet, Ok("ok")).await.unwrap();

    let mut calls = HashMap::new();
    let (mut transitions, mut state) = (HashMap::new(), None);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
        };
        assert_eq!(label("breaker").as_deref(), Some("metered"), "{key:?}");
        match (key.name(), value) {
            ("tower_mesh_breaker_calls_total", DebugValue::Counter(v)) => {
                calls.insert(label("outcome").unwrap(), v);
            }
            ("tower_mesh_breaker_transitions_total", DebugValue::Counter(v)) => {
                transitions.insert((label("from").unwrap(), label("to").unwrap()), v);
            }
            ("tower_mesh_breaker_state", DebugValue::Gauge(v)) => state = Some(v.into_inner()),
            (name, v) => panic!("unexpected metric {name} {v:?}"),
        }
    }
    assert_eq!(calls.get("success"), Some(&3), "{calls:?}");
    assert_eq!(calls.get("failure"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("rejected"), Some(&1), "{calls:?}");
    assert_eq!(
        transitions.get(&("closed".to_owned(), "open".to_owned())),
        Some(&1),
        "{transitions:?}"
    );
    assert_eq!(state, Some(1.0), "the gauge says open");
}
