//! The `metrics` counters, read back from a real recorder.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_mesh::health::outlier::OutlierLayer;

use super::{calls, Backend};

/// Detections and ejections by rule, overflows, returns and the ejected gauge.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ejections_are_counted_by_rule() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This thread only (a current-thread runtime): other tests' detectors do not count here.
    let _local = metrics::set_default_local_recorder(&recorder);

    let layer = OutlierLayer::builder()
        .name("orders")
        .consecutive_5xx(2)
        .consecutive_gateway_failure(2) // enforcing 0 by default: detected only
        .max_ejection_percent(50)
        .build::<u8>()
        .unwrap();
    let backends: Vec<Backend> = (0..2).map(|_| Backend::new()).collect();
    let mut svcs: Vec<_> = (0..2u8)
        .map(|i| layer.layer_keyed(backends[usize::from(i)].clone(), i))
        .collect();
    for (b, svc) in backends.iter().zip(&mut svcs) {
        b.answer(0);
        calls(svc, 2).await;
    }
    // Endpoint 0: ejected (1 of 2 is 50%); endpoint 1: refused by the cap.
    assert!(layer.handle().uneject(&0));

    let mut seen: HashMap<(String, Option<String>), f64> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
        };
        assert_eq!(label("detector").as_deref(), Some("orders"), "{key:?}");
        let value = match value {
            DebugValue::Counter(v) => v as f64,
            DebugValue::Gauge(v) => v.into_inner(),
            DebugValue::Histogram(_) => panic!("no histogram expected"),
        };
        seen.insert((key.name().to_owned(), label("rule")), value);
    }
    let get = |name: &str, rule: Option<&str>| {
        seen.get(&(name.to_owned(), rule.map(str::to_owned)))
            .copied()
    };
    let detected = "tower_mesh_outlier_detected_total";
    assert_eq!(get(detected, Some("consecutive_5xx")), Some(2.0));
    assert_eq!(
        get(detected, Some("consecutive_gateway_failure")),
        Some(2.0)
    );
    assert_eq!(
        get(
            "tower_mesh_outlier_ejections_total",
            Some("consecutive_5xx")
        ),
        Some(1.0)
    );
    assert_eq!(get("tower_mesh_outlier_overflow_total", None), Some(1.0));
    assert_eq!(get("tower_mesh_outlier_returns_total", None), Some(1.0));
    assert_eq!(get("tower_mesh_outlier_ejected", None), Some(0.0));
    assert_eq!(seen.len(), 6, "{seen:?}");
}
