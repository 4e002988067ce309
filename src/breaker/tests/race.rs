//! Races for half-open probe permits, through the breaker core and through the `Service` API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tower::{service_fn, BoxError, Service, ServiceExt};
use tower_layer::Layer;

use super::*;

/// 64 tasks race for the probe permits of a half-open breaker; exactly K win, every time.
#[test]
fn racing_tasks_admit_exactly_k_probes() {
    const K: u32 = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let (_, handle) = quick()
            .half_open_probes(K)
            .success_threshold(K)
            .build_with_handle()
            .unwrap();
        let shared = handle.shared.clone();
        for _ in 0..10_000 {
            let g = shared.generation();
            shared.transition(g, State::Closed, State::Open);
            shared.transition(g + 1, State::Open, State::HalfOpen);
            let barrier = Arc::new(tokio::sync::Barrier::new(64));
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let shared = shared.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        shared.try_acquire().ok()
                    })
                })
                .collect();
            let mut permits = Vec::new();
            for t in tasks {
                if let Some(p) = t.await.unwrap() {
                    permits.push(p);
                }
            }
            assert_eq!(permits.len(), K as usize);
            drop(permits);
            assert_eq!(shared.state(), State::HalfOpen);
            handle.reset();
        }
    });
}

/// The same race through the `Service` API: 64 tasks, each with a clone of the service-level
/// breaker, call a half-open breaker whose inner calls never finish; exactly K reach the inner
/// service, the rest are rejected with `Open`, and dropping the probes frees their permits.
#[test]
fn racing_service_clones_admit_exactly_k_probes() {
    const K: usize = 2;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let (layer, handle) = quick()
            .half_open_probes(K as u32)
            .success_threshold(K as u32)
            .build_with_handle()
            .unwrap();
        let reached = Arc::new(AtomicUsize::new(0));
        let r2 = reached.clone();
        let svc = layer.layer(service_fn(move |_: ()| {
            r2.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), BoxError>>()
        }));
        let shared = handle.shared.clone();
        for _ in 0..1_000 {
            let g = shared.generation();
            shared.transition(g, State::Closed, State::Open);
            shared.transition(g + 1, State::Open, State::HalfOpen);
            reached.store(0, Ordering::SeqCst);
            let barrier = Arc::new(tokio::sync::Barrier::new(64));
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let mut svc = svc.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        svc.ready().await.unwrap();
                        let mut fut = Box::pin(svc.call(()));
                        match futures_util::FutureExt::now_or_never(&mut fut) {
                            Some(Err(e)) => {
                                assert!(e.is_open(), "{e}");
                                None
                            }
                            Some(Ok(())) => unreachable!("the inner call never finishes"),
                            None => Some(fut),
                        }
                    })
                })
                .collect();
            let mut probes = Vec::new();
            for t in tasks {
                probes.extend(t.await.unwrap());
            }
            assert_eq!(probes.len(), K);
            assert_eq!(reached.load(Ordering::SeqCst), K);
            drop(probes);
            assert_eq!(
                shared.word_snapshot().inflight(),
                0,
                "dropped probes free their permits"
            );
            assert_eq!(shared.state(), State::HalfOpen);
            handle.reset();
        }
    });
}
