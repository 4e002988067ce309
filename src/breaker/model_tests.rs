//! A property test of the breaker against a small reference model of its state machine.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tokio::time::advance;

use super::permit::Permit;
use super::*;

#[derive(Debug, Clone)]
struct Setup {
    consecutive: Option<u32>,
    failure_rate: Option<f64>,
    slow: Option<(u64, f64)>,
    window: Window,
    minimum_calls: u32,
    base_ms: u64,
    multiplier: f64,
    max_ms: u64,
    k: u32,
    s: u32,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Complete(usize, Outcome),
    Drop(usize),
    Advance(u64),
    ForceOpen,
    Disable,
    Reset,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        proptest::option::weighted(0.7, 1u32..4),
        proptest::option::weighted(0.5, prop_oneof![Just(0.25), Just(0.5), Just(1.0)]),
        proptest::option::weighted(
            0.3,
            (
                prop_oneof![Just(50u64), Just(200)],
                prop_oneof![Just(0.5), Just(1.0)],
            ),
        ),
        prop_oneof![
            (2u32..6).prop_map(Window::Count),
            (1u32..4).prop_map(Window::Time)
        ],
        1u32..4,
        (1u64..4).prop_map(|s| s * 1000),
        prop_oneof![Just(1.0), Just(2.0)],
        1u64..5,
        1u32..4,
        1u32..4,
    )
        .prop_map(
            |(
                consecutive,
                failure_rate,
                slow,
                window,
                minimum_calls,
                base_ms,
                multiplier,
                max_factor,
                k,
                s,
            )| {
                let consecutive = if failure_rate.is_none() && slow.is_none() {
                    Some(consecutive.unwrap_or(2))
                } else {
                    consecutive
                };
                // The builder refuses a count window smaller than the minimum of calls.
                let minimum_calls = match window {
                    Window::Count(n) => minimum_calls.min(n),
                    Window::Time(_) => minimum_calls,
                };
                Setup {
                    consecutive,
                    failure_rate,
                    slow,
                    window,
                    minimum_calls,
                    base_ms,
                    multiplier,
                    max_ms: base_ms * max_factor,
                    k,
                    s,
                }
            },
        )
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        5 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => Just(Op::Acquire),
        10 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Complete(i, o)),
        1 => any::<usize>().prop_map(Op::Drop),
        5 => prop_oneof![0u64..300, 0u64..6000].prop_map(Op::Advance),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::Disable), Just(Op::Reset)],
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    Closed,
    Open,
    HalfOpen,
    Disabled,
    Forced,
}

/// Transition kinds counted across the run.
const KINDS: [&str; 7] = [
    "closed->open",
    "open->half_open",
    "half_open->closed",
    "half_open->open",
    "->forced_open",
    "->disabled",
    "reset->closed",
];

struct MPermit {
    generation: u64,
    probe: bool,
    start: u64,
}

struct Model {
    setup: Setup,
    now: u64,
    state: M,
    generation: u64,
    until: u64,
    openings: u32,
    consecutive: u32,
    inflight: u32,
    successes: u32,
    count_window: VecDeque<(bool, bool)>,
    time_window: Vec<(u64, bool, bool)>,
    kinds: [u64; 7],
}

impl Model {
    fn new(setup: Setup) -> Self {
        Model {
            setup,
            now: 0,
            state: M::Closed,
            generation: 0,
            until: 0,
            openings: 0,
            consecutive: 0,
            inflight: 0,
            successes: 0,
            count_window: VecDeque::new(),
            time_window: Vec::new(),
            kinds: [0; 7],
        }
    }

    fn go(&mut self, to: M, kind: usize) {
        self.kinds[kind] += 1;
        self.generation += 1;
        self.inflight = 0;
        self.successes = 0;
        match to {
            M::Open => {
                let d = ((self.setup.base_ms as f64)
                    * self.setup.multiplier.powi(self.openings as i32))
                    as u64;
                self.until = self.now + d.min(self.setup.max_ms);
                self.openings += 1;
            }
            M::Closed => {
                self.openings = 0;
                self.consecutive = 0;
                self.count_window.clear();
                self.time_window.clear();
            }
            _ => {}
        }
        self.state = to;
    }

    fn acquire(&mut self) -> Option<MPermit> {
        match self.state {
            M::Closed | M::Disabled => Some(MPermit {
                generation: self.generation,
                probe: false,
                start: self.now,
            }),
            M::Forced => None,
            M::Open if self.now < self.until => None,
            M::Open | M::HalfOpen => {
                if self.state == M::Open {
                    self.go(M::HalfOpen, 1);
                }
                if self.inflight < self.setup.k && self.inflight + self.successes < self.setup.s {
                    self.inflight += 1;
                    Some(MPermit {
                        generation: self.generation,
                        probe: true,
                        start: self.now,
                    })
                } else {
                    None
                }
            }
        }
    }

    fn complete(&mut self, p: MPermit, outcome: Outcome) {
        if p.generation != self.generation {
            return;
        }
        let slow = self
            .setup
            .slow
            .is_some_and(|(ms, _)| self.now - p.start >= ms);
        match self.state {
            M::Closed => {
                let failure = match outcome {
                    Outcome::Ignored => return,
                    o => o == Outcome::Failure,
                };
                let mut trip = false;
                if let Some(n) = self.setup.consecutive {
                    if failure {
                        self.consecutive += 1;
                        trip = self.consecutive >= n;
                    } else {
                        self.consecutive = 0;
                    }
                }
                if self.setup.failure_rate.is_some() || self.setup.slow.is_some() {
                    let (calls, failures, slows) = match self.setup.window {
                        Window::Count(n) => {
                            self.count_window.push_back((failure, slow));
                            if self.count_window.len() > n as usize {
                                self.count_window.pop_front();
                            }
                            let w = &self.count_window;
                            (
                                w.len(),
                                w.iter().filter(|x| x.0).count(),
                                w.iter().filter(|x| x.1).count(),
                            )
                        }
                        Window::Time(n) => {
                            let sec = self.now / 1000;
                            self.time_window.push((sec, failure, slow));
                            let oldest = sec.saturating_sub(u64::from(n) - 1);
                            let w: Vec<_> =
                                self.time_window.iter().filter(|x| x.0 >= oldest).collect();
                            (
                                w.len(),
                                w.iter().filter(|x| x.1).count(),
                                w.iter().filter(|x| x.2).count(),
                            )
                        }
                    };
                    if calls >= self.setup.minimum_calls as usize {
                        let over = |c: usize, r: Option<f64>| {
                            r.is_some_and(|r| c as f64 / calls as f64 >= r)
                        };
                        trip |= over(failures, self.setup.failure_rate)
                            || over(slows, self.setup.slow.map(|s| s.1));
                    }
                }
                if trip {
                    self.go(M::Open, 0);
                }
            }
            M::HalfOpen if p.probe => match outcome {
                Outcome::Success if !slow => {
                    self.inflight -= 1;
                    self.successes += 1;
                    if self.successes >= self.setup.s {
                        self.go(M::Closed, 2);
                    }
                }
                Outcome::Success | Outcome::Failure => self.go(M::Open, 3),
                _ => self.inflight -= 1,
            },
            _ => {}
        }
    }

    fn drop_permit(&mut self, p: MPermit) {
        if p.probe && p.generation == self.generation && self.state == M::HalfOpen {
            self.inflight -= 1;
        }
    }
}

fn check(model: &Model, handle: &Handle) -> Result<(), TestCaseError> {
    let expected = match model.state {
        M::Closed => State::Closed,
        M::Open => State::Open,
        M::HalfOpen => State::HalfOpen,
        M::Disabled => State::Disabled,
        M::Forced => State::ForcedOpen,
    };
    prop_assert_eq!(handle.state(), expected);
    let word = handle.shared.word_snapshot();
    prop_assert_eq!(u64::from(word.generation()), model.generation);
    prop_assert_eq!(word.inflight(), model.inflight);
    prop_assert_eq!(word.successes(), model.successes);
    if let Some(until) = handle.open_until() {
        prop_assert_eq!(
            until,
            handle.shared.base() + Duration::from_millis(model.until)
        );
    }
    Ok(())
}

fn run_case(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    ops: &[Op],
    kinds: &mut [u64; 7],
) -> Result<(), TestCaseError> {
    rt.block_on(async {
        let mut b = CircuitBreakerLayer::builder()
            .name("model")
            .window(setup.window)
            .minimum_calls(setup.minimum_calls)
            .open_duration(Duration::from_millis(setup.base_ms))
            .max_open_duration(Duration::from_millis(setup.max_ms))
            .backoff_multiplier(setup.multiplier)
            .half_open_probes(setup.k)
            .success_threshold(setup.s);
        b = match setup.consecutive {
            Some(n) => b.consecutive_failures(n),
            None => b.without_consecutive_failures(),
        };
        if let Some(r) = setup.failure_rate {
            b = b.failure_rate(r);
        }
        if let Some((ms, r)) = setup.slow {
            b = b.slow_calls(Duration::from_millis(ms), r);
        }
        // Half the cases without metrics, so that closed-state calls under a plain policy take
        // the reference-count-free path (the other half hold the breaker).
        #[cfg(feature = "metrics")]
        {
            b = b.metrics(setup.base_ms.is_multiple_of(2));
        }
        let (_, handle) = b.build_with_handle().unwrap();
        let mut model = Model::new(setup.clone());
        let mut permits: Vec<(Permit, MPermit)> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    let real = handle.shared.try_acquire();
                    let expected = model.acquire();
                    prop_assert_eq!(real.is_ok(), expected.is_some(), "admission differs");
                    if let (Ok(mut p), Some(m)) = (real, expected) {
                        p.start();
                        permits.push((p, m));
                    }
                }
                Op::Complete(i, outcome) if !permits.is_empty() => {
                    let (mut p, m) = permits.swap_remove(i % permits.len());
                    p.complete(*outcome);
                    model.complete(m, *outcome);
                }
                Op::Drop(i) if !permits.is_empty() => {
                    let (p, m) = permits.swap_remove(i % permits.len());
                    drop(p);
                    model.drop_permit(m);
                }
                Op::Advance(ms) => {
                    advance(Duration::from_millis(*ms)).await;
                    model.now += ms;
                }
                Op::ForceOpen => {
                    handle.force_open();
                    model.go(M::Forced, 4);
                }
                Op::Disable => {
                    handle.disable();
                    model.go(M::Disabled, 5);
                }
                Op::Reset => {
                    handle.reset();
                    model.go(M::Closed, 6);
                }
                _ => {}
            }
            check(&model, &handle)?;
        }
        for (k, n) in kinds.iter_mut().zip(model.kinds) {
            *k += n;
        }
        Ok(())
    })
}

#[test]
fn breaker_matches_reference_model() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig {
            cases: 10_000,
            failure_persistence: None,
            ..RunnerConfig::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let kinds = std::cell::RefCell::new([0u64; 7]);
    let cases = std::cell::Cell::new(0u32);
    runner
        .run(
            &(setup(), proptest::collection::vec(op(), 1..48)),
            |(setup, ops)| {
                cases.set(cases.get() + 1);
                run_case(&rt, &setup, &ops, &mut kinds.borrow_mut())
            },
        )
        .unwrap();
    assert!(cases.get() >= 10_000, "ran {} cases", cases.get());
    let kinds = kinds.into_inner();
    for (name, n) in KINDS.iter().zip(kinds) {
        assert!(
            n >= 100,
            "transition {name} reached only {n} times: {kinds:?}"
        );
    }
    println!(
        "transitions reached: {:?}",
        KINDS.iter().zip(kinds).collect::<Vec<_>>()
    );
}
