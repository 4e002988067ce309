//! The shared breaker core: state machine, permits, counters and the handle.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::classify::Outcome;
use super::error::{Name, Open};
use super::hooks::{Hooks, SlowCall, Transition};
use super::policy::{Policy, Window};
use super::window::Outcomes;
use super::word::{self, Word};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass and their outcomes are recorded.
    Closed,
    /// Calls are rejected (service level) or held back (endpoint level) until the open
    /// duration has passed.
    Open,
    /// A limited number of probe calls pass; enough successes close the breaker, one failure
    /// opens it again.
    HalfOpen,
    /// Set through the [`Handle`]: every call passes and nothing is recorded.
    Disabled,
    /// Set through the [`Handle`]: every call is rejected until the handle resets the breaker.
    ForcedOpen,
}

impl State {
    fn from_code(code: u8) -> State {
        match code {
            word::CLOSED => State::Closed,
            word::OPEN => State::Open,
            word::HALF_OPEN => State::HalfOpen,
            word::DISABLED => State::Disabled,
            _ => State::ForcedOpen,
        }
    }

    fn code(self) -> u8 {
        match self {
            State::Closed => word::CLOSED,
            State::Open => word::OPEN,
            State::HalfOpen => word::HALF_OPEN,
            State::Disabled => word::DISABLED,
            State::ForcedOpen => word::FORCED_OPEN,
        }
    }

    /// A short lowercase name (`"closed"`, `"open"`, `"half_open"`, `"disabled"`,
    /// `"forced_open"`), as used in tracing and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused call: the state that refused it and, for an open breaker, when it may half-open
/// (nanoseconds since the breaker's base instant; 0 otherwise). Small and `Copy`, so that a
/// rejection moves no more than two words until an [`Open`] error is made of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rejection {
    pub(crate) state: State,
    until: u64,
}

/// The fields of a service-level [`Open`] error, kept in the response future until it is
/// polled; the future reads them in place and builds the error straight into its output.
#[derive(Debug)]
pub(crate) struct OpenParts {
    pub(crate) name: &'static str,
    pub(crate) state: State,
    pub(crate) base: Instant,
    pub(crate) until: u64,
}

impl OpenParts {
    #[inline]
    pub(crate) fn open(&self) -> Open {
        Open::new(Name::Static(self.name), self.state, self.base, self.until)
    }
}

/// Configuration shared by every breaker a builder makes.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) policy: Policy,
    pub(crate) hooks: Hooks,
    pub(crate) name: Arc<str>,
    pub(crate) seed: Option<u64>,
    /// Whether `metrics` counters are kept per call (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) metrics: bool,
}

/// A snapshot of a breaker's counters, read through [`Handle::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Calls classified as successes.
    pub successes: u64,
    /// Calls classified as failures.
    pub failures: u64,
    /// Calls classified as ignored.
    pub ignored: u64,
    /// Calls rejected (service level) or readiness polls held back (endpoint level).
    pub rejected: u64,
    /// Calls at least as slow as the slow-call duration.
    pub slow: u64,
    /// State transitions.
    pub transitions: u64,
    /// The current run of consecutive failures in the closed state.
    pub consecutive_failures: u32,
}

struct Cold {
    openings: u32,
    rng: Option<SmallRng>,
}

impl fmt::Debug for Cold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cold")
            .field("openings", &self.openings)
            .finish_non_exhaustive()
    }
}

/// What every call reads: the state word, the current run of failures and the end of the
/// current opening. Written only by transitions, probes and failures.
#[derive(Debug)]
struct Hot {
    word: Word,
    /// The current run of consecutive failures in the closed state.
    consecutive: AtomicU32,
    /// When an open breaker may half-open, in nanoseconds since the base instant.
    open_until: AtomicU64,
}

/// The breaker's counters: plain atomic counts, each added to with one `fetch_add`. The two
/// that every call writes (a success, a rejection) share a line of their own, away from the
/// state every call reads.
#[derive(Debug, Default)]
struct Counts {
    successes: AtomicU64,
    rejected: AtomicU64,
    failures: AtomicU64,
    ignored: AtomicU64,
    slow: AtomicU64,
}

#[inline]
fn add(count: &AtomicU64) {
    count.fetch_add(1, Ordering::Relaxed);
}

#[repr(align(64))]
#[derive(Debug)]
struct Padded<T>(T);

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Metrics {
    success: metrics::Counter,
    failure: metrics::Counter,
    ignored: metrics::Counter,
    rejected: metrics::Counter,
    state: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(name: &Arc<str>, on: bool) -> Self {
        if !on {
            return Metrics {
                success: metrics::Counter::noop(),
                failure: metrics::Counter::noop(),
                ignored: metrics::Counter::noop(),
                rejected: metrics::Counter::noop(),
                state: metrics::Gauge::noop(),
            };
        }
        let calls = |outcome: &'static str| metrics::counter!("tower_mesh_breaker_calls_total", "breaker" => name.to_string(), "outcome" => outcome);
        Metrics {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            state: metrics::gauge!("tower_mesh_breaker_state", "breaker" => name.to_string()),
        }
    }
}

/// The state one breaker shares, through an `Arc`, between its services, response futures
/// and handles. Every call's permit holds a reference; the breaker is freed with the last.
pub(crate) struct Shared {
    hot: Padded<Hot>,
    counts: Padded<Counts>,
    /// Whether calls are timed (a slow-call duration is set).
    timed: bool,
    transitions: AtomicU64,
    cold: Mutex<Cold>,
    window: Option<Mutex<Outcomes>>,
    pub(crate) notify: Arc<Notify>,
    config: Arc<Config>,
    name: Arc<str>,
    /// The name, interned on the first service-level rejection.
    static_name: OnceLock<&'static str>,
    base: Instant,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

use crate::sync::lock;

impl Shared {
    /// A new breaker, in the `Arc` its services, futures and handles share.
    pub(crate) fn new(config: Arc<Config>, name: Arc<str>) -> Arc<Self> {
        Arc::new(Self::unshared(config, name))
    }

    fn unshared(config: Arc<Config>, name: Arc<str>) -> Self {
        let policy = &config.policy;
        let rng = (policy.jitter > 0.0).then(|| match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        });
        Shared {
            hot: Padded(Hot {
                word: Word::new(word::CLOSED),
                consecutive: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
            }),
            counts: Padded(Counts::default()),
            timed: policy.slow_call_duration.is_some(),
            transitions: AtomicU64::new(0),
            cold: Mutex::new(Cold { openings: 0, rng }),
            window: policy
                .uses_window()
                .then(|| Mutex::new(Outcomes::new(policy.window))),
            notify: Arc::new(Notify::new()),
            #[cfg(feature = "metrics")]
            metrics: Metrics::new(&name, config.metrics),
            config,
            name,
            static_name: OnceLock::new(),
            base: Instant::now(),
        }
    }

    #[inline]
    fn policy(&self) -> &Policy {
        &self.config.policy
    }

    pub(crate) fn state(&self) -> State {
        State::from_code(self.hot.0.word.load().state())
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// When an open breaker may half-open, if it is open.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        (self.hot.0.word.load().state() == word::OPEN)
            .then(|| self.instant(self.hot.0.open_until.load(Ordering::Acquire)))
    }

    /// The generation, if the breaker is closed: a call may then be made without taking a
    /// permit up front (see [`closed_permit`](Self::closed_permit)).
    #[inline]
    pub(crate) fn closed_generation(&self) -> Option<u32> {
        let cur = self.hot.0.word.load();
        (cur.state() == word::CLOSED).then_some(cur.generation())
    }

    /// A permit for a call admitted while the breaker was closed in `generation`, started (see
    /// [`Permit::start`]); its outcome is recorded only if the breaker is still in that
    /// generation.
    #[inline(always)]
    pub(crate) fn closed_permit(self: &Arc<Self>, generation: u32) -> Permit {
        let mut permit = Permit::new(self.clone(), generation, false);
        permit.start();
        permit
    }

    /// Asks to make one call. On success the permit must be completed with the call's outcome
    /// (or dropped, which gives a probe permit back).
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejection> {
        match self.closed_generation() {
            Some(generation) => Ok(self.closed_permit(generation)),
            None => self.try_acquire_slow(),
        }
    }

    /// The slow path of [`try_acquire`](Self::try_acquire): every state but closed.
    #[cold]
    #[inline(never)]
    fn try_acquire_slow(self: &Arc<Self>) -> Result<Permit, Rejection> {
        loop {
            let cur = self.hot.0.word.load();
            match cur.state() {
                word::CLOSED => return Ok(self.closed_permit(cur.generation())),
                word::DISABLED => {
                    return Ok(Permit::new(self.clone(), cur.generation(), false));
                }
                word::OPEN => {
                    let until = self.hot.0.open_until.load(Ordering::Acquire);
                    if self.nanos(Instant::now()) < until {
                        return Err(self.reject(State::Open, until));
                    }
                    self.transition(cur.generation(), State::Open, State::HalfOpen);
                }
                word::HALF_OPEN => {
                    let policy = self.policy();
                    match self.hot.0.word.try_acquire_probe(
                        cur.generation(),
                        policy.half_open_probes,
                        policy.success_threshold,
                    ) {
                        Ok(()) => return Ok(Permit::new(self.clone(), cur.generation(), true)),
                        Err(now) if now.generation() == cur.generation() => {
                            return Err(self.reject(State::HalfOpen, 0));
                        }
                        Err(_) => {}
                    }
                }
                _ => return Err(self.reject(State::ForcedOpen, 0)),
            }
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn word_snapshot(&self) -> word::Snapshot {
        self.hot.0.word.load()
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn base(&self) -> Instant {
        self.base
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn generation(&self) -> u32 {
        self.hot.0.word.load().generation()
    }

    /// Whether a permit of `generation` is still current.
    #[inline]
    pub(crate) fn is_current(&self, generation: u32) -> bool {
        self.hot.0.word.load().generation() == generation
    }

    /// Counts a rejection in `state`; `until` is when an open breaker may half-open (in
    /// nanoseconds since the base instant, 0 if not open).
    #[inline]
    fn reject(&self, state: State, until: u64) -> Rejection {
        add(&self.counts.0.rejected);
        #[cfg(feature = "metrics")]
        self.metrics.rejected.increment(1);
        let rejection = Rejection { state, until };
        if let Some(hook) = &self.config.hooks.on_rejected {
            hook.on_rejected(&self.open(rejection, Name::Shared(self.name.clone())));
        }
        rejection
    }

    /// The [`Open`] error for `rejection`, carrying `name`.
    pub(crate) fn open(&self, rejection: Rejection, name: Name) -> Open {
        Open::new(name, rejection.state, self.base, rejection.until)
    }

    /// What a service-level [`Open`] error for a call refused in `state` is made of (the
    /// name interned once per breaker); an open breaker says when it may half-open.
    #[inline]
    pub(crate) fn open_parts(&self, state: State) -> OpenParts {
        OpenParts {
            name: self.static_name.get_or_init(|| Name::interned(&self.name)),
            state,
            base: self.base,
            until: if state == State::Open {
                self.hot.0.open_until.load(Ordering::Acquire)
            } else {
                0
            },
        }
    }

    /// When an open breaker that refused a call may half-open.
    pub(crate) fn retry_at(&self, rejection: Rejection) -> Option<Instant> {
        (rejection.until != 0).then(|| self.instant(rejection.until))
    }

    /// Records a call's outcome. The common case (closed, consecutive failures only, no slow
    /// calls, a success with no failure run to reset) is one load and one `fetch_add`.
    #[inline]
    fn complete(&self, generation: u32, probe: bool, outcome: Outcome, elapsed: Option<Duration>) {
        // A success that is not a probe, not timed and not windowed changes nothing but the
        // counters unless it ends a run of failures, whatever the state is now.
        if !probe
            && elapsed.is_none()
            && outcome == Outcome::Success
            && self.window.is_none()
            && self.hot.0.consecutive.load(Ordering::Relaxed) == 0
        {
            add(&self.counts.0.successes);
            #[cfg(feature = "metrics")]
            self.metrics.success.increment(1);
            return;
        }
        self.complete_slow(generation, probe, outcome, elapsed)
    }

    #[inline(never)]
    fn complete_slow(
        &self,
        generation: u32,
        probe: bool,
        outcome: Outcome,
        elapsed: Option<Duration>,
    ) {
        let slow = match (elapsed, self.policy().slow_call_duration) {
            (Some(elapsed), Some(limit)) if elapsed >= limit => {
                self.config.hooks.on_slow_call.on_slow_call(&SlowCall {
                    name: &self.name,
                    elapsed,
                });
                true
            }
            _ => false,
        };
        match outcome {
            Outcome::Success => {
                add(&self.counts.0.successes);
                #[cfg(feature = "metrics")]
                self.metrics.success.increment(1);
            }
            Outcome::Failure => {
                add(&self.counts.0.failures);
                #[cfg(feature = "metrics")]
                self.metrics.failure.increment(1);
            }
            Outcome::Ignored => {
                add(&self.counts.0.ignored);
                #[cfg(feature = "metrics")]
                self.metrics.ignored.increment(1);
            }
        }
        if slow {
            add(&self.counts.0.slow);
        }

        let cur = self.hot.0.word.load();
        if cur.generation() != generation {
            return;
        }
        match cur.state() {
            word::CLOSED => self.record_closed(generation, outcome, slow),
            // A probe slower than the slow-call duration counts as a failed probe: the
            // endpoint answers, but not well enough to close on (resilience4j evaluates
            // half-open calls by failure and slow-call rate alike).
            word::HALF_OPEN if probe => match outcome {
                Outcome::Success if !slow => {
                    if let Some(successes) = self.hot.0.word.probe_succeeded(generation) {
                        if successes >= self.policy().success_threshold {
                            self.transition(generation, State::HalfOpen, State::Closed);
                        } else {
                            self.notify.notify_waiters();
                        }
                    }
                }
                Outcome::Success | Outcome::Failure => {
                    self.transition(generation, State::HalfOpen, State::Open);
                }
                Outcome::Ignored => self.release(generation),
            },
            _ => {}
        }
    }

    #[cold]
    fn release(&self, generation: u32) {
        if self.hot.0.word.release_probe(generation) {
            self.notify.notify_waiters();
        }
    }

    fn record_closed(&self, generation: u32, outcome: Outcome, slow: bool) {
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return,
        };
        let policy = self.policy();
        let mut trip = false;
        if let Some(threshold) = policy.consecutive_failures {
            if failure {
                trip = self.hot.0.consecutive.fetch_add(1, Ordering::AcqRel) + 1 >= threshold;
            } else if self.hot.0.consecutive.load(Ordering::Relaxed) != 0 {
                self.hot.0.consecutive.store(0, Ordering::Relaxed);
            }
        }
        if let Some(window) = &self.window {
            let second = match policy.window {
                Window::Time(_) => Instant::now()
                    .saturating_duration_since(self.base)
                    .as_secs(),
                Window::Count(_) => 0,
            };
            let totals = lock(window).record(failure, slow, second);
            if totals.calls >= u64::from(policy.minimum_calls) {
                let calls = totals.calls as f64;
                let over = |count: u64, rate: Option<f64>| {
                    rate.is_some_and(|rate| count as f64 / calls >= rate)
                };
                trip |= over(totals.failures, policy.failure_rate)
                    || over(totals.slow, policy.slow_call_rate);
            }
        }
        if trip {
            self.transition(generation, State::Closed, State::Open);
        }
    }

    /// Moves from `from` in `generation` to `to`; returns false if the breaker has moved on.
    #[cold]
    pub(crate) fn transition(&self, generation: u32, from: State, to: State) -> bool {
        let open_for = {
            let mut cold = lock(&self.cold);
            let cur = self.hot.0.word.load();
            if cur.generation() != generation || cur.state() != from.code() {
                return false;
            }
            let open_for = self.prepare(&mut cold, to);
            let published = self.hot.0.word.publish(generation, to.code());
            debug_assert!(
                published,
                "generation moved while the transition lock was held"
            );
            open_for
        };
        self.after_transition(from, to, open_for);
        true
    }

    /// Moves to `to` from whatever state the breaker is in (the handle's operations).
    fn force(&self, to: State) {
        let (from, open_for) = {
            let mut cold = lock(&self.cold);
            let cur = self.hot.0.word.load();
            let open_for = self.prepare(&mut cold, to);
            let published = self.hot.0.word.publish(cur.generation(), to.code());
            debug_assert!(
                published,
                "generation moved while the transition lock was held"
            );
            (State::from_code(cur.state()), open_for)
        };
        self.after_transition(from, to, open_for);
    }

    fn prepare(&self, cold: &mut Cold, to: State) -> Option<Duration> {
        match to {
            State::Open => {
                let policy = self.policy();
                let mut open_for = policy.open_duration(cold.openings);
                if let Some(rng) = cold.rng.as_mut() {
                    let u: f64 = rng.random();
                    open_for = open_for.mul_f64(1.0 + policy.jitter * u);
                }
                cold.openings = cold.openings.saturating_add(1);
                let until = self.nanos(Instant::now() + open_for);
                self.hot.0.open_until.store(until, Ordering::Release);
                Some(open_for)
            }
            State::Closed => {
                cold.openings = 0;
                self.hot.0.consecutive.store(0, Ordering::Relaxed);
                if let Some(window) = &self.window {
                    lock(window).reset();
                }
                None
            }
            _ => None,
        }
    }

    fn after_transition(&self, from: State, to: State, open_for: Option<Duration>) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        if to == State::Open || to == State::ForcedOpen {
            tracing::warn!(breaker = %self.name, %from, %to, ?open_for, "circuit breaker opened");
        } else {
            tracing::info!(breaker = %self.name, %from, %to, "circuit breaker state changed");
        }
        #[cfg(feature = "metrics")]
        if self.config.metrics {
            metrics::counter!(
                "tower_mesh_breaker_transitions_total",
                "breaker" => self.name.to_string(),
                "from" => from.as_str(),
                "to" => to.as_str()
            )
            .increment(1);
            self.metrics.state.set(f64::from(to.code()));
        }
        self.config
            .hooks
            .on_state_change
            .on_state_change(&Transition {
                name: &self.name,
                from,
                to,
                open_for,
            });
        self.notify.notify_waiters();
    }

    fn counters(&self) -> CounterSnapshot {
        CounterSnapshot {
            successes: self.counts.0.successes.load(Ordering::Relaxed),
            failures: self.counts.0.failures.load(Ordering::Relaxed),
            ignored: self.counts.0.ignored.load(Ordering::Relaxed),
            rejected: self.counts.0.rejected.load(Ordering::Relaxed),
            slow: self.counts.0.slow.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            consecutive_failures: self.hot.0.consecutive.load(Ordering::Relaxed),
        }
    }
}

/// Leave to make one call, taken from the breaker before calling the inner service.
///
/// It holds a reference to the breaker, so that the call's outcome can be recorded after the
/// service that made it is gone. Completing it records the outcome; dropping it uncompleted (a
/// cancelled call, or a service dropped after `poll_ready`) gives a half-open probe permit
/// back.
pub(crate) enum Permit {
    /// A call admitted in `generation`.
    Call {
        shared: Arc<Shared>,
        /// Nanoseconds since the breaker's base instant, plus one, when the call started;
        /// zero if slow calls are not tracked.
        start: u64,
        generation: u32,
        /// A half-open probe still holding its place (cleared once the outcome is recorded).
        probe: bool,
    },
    /// Completed (or never taken): records nothing and releases nothing.
    Done,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permit::Call {
                generation, probe, ..
            } => f
                .debug_struct("Permit")
                .field("generation", generation)
                .field("probe", probe)
                .finish(),
            Permit::Done => f.write_str("Permit(done)"),
        }
    }
}

impl Permit {
    #[inline]
    fn new(shared: Arc<Shared>, generation: u32, probe: bool) -> Self {
        Permit::Call {
            shared,
            start: 0,
            generation,
            probe,
        }
    }

    /// Whether the breaker is still in the generation this permit was taken in.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        match self {
            Permit::Call {
                shared, generation, ..
            } => shared.is_current(*generation),
            Permit::Done => false,
        }
    }

    /// Starts the slow-call clock, if slow calls are tracked. Called when the call is made.
    #[inline]
    pub(crate) fn start(&mut self) {
        if let Permit::Call { shared, start, .. } = self {
            if shared.timed {
                *start = shared.nanos(Instant::now()).saturating_add(1);
            }
        }
    }

    /// Records the call's outcome; the permit is done afterwards (and its reference to the
    /// breaker dropped).
    ///
    /// Works in place (the permit's fields are read where they lie, not moved), which keeps
    /// the closed-state path free of store-forwarding stalls.
    #[inline(always)]
    pub(crate) fn complete(&mut self, outcome: Outcome) {
        if let Permit::Call {
            shared,
            start,
            generation,
            probe,
        } = self
        {
            let elapsed = (*start != 0).then(|| {
                Duration::from_nanos(shared.nanos(Instant::now()).saturating_sub(*start - 1))
            });
            shared.complete(*generation, *probe, outcome, elapsed);
            *probe = false;
            *self = Permit::Done;
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Permit::Call {
            shared,
            generation,
            probe: true,
            ..
        } = self
        {
            shared.release(*generation);
        }
    }
}

/// A handle on a breaker: read its state and counters, force it open, disable it, reset it.
///
/// Cheap to clone; made by [`Builder::build_with_handle`](super::Builder::build_with_handle)
/// for service-level breakers and [`EndpointBreaker::handle`](super::EndpointBreaker::handle)
/// for endpoint breakers.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

impl Handle {
    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current state. An open breaker reports [`State::Open`] until a call (or, at the
    /// endpoint level, the readiness wake-up) finds the open duration over and half-opens it.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// When an open breaker may half-open; `None` in every other state.
    pub fn open_until(&self) -> Option<Instant> {
        self.shared.open_until()
    }

    /// The breaker's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters()
    }

    /// Forces the breaker open: every call is rejected until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.shared.force(State::ForcedOpen);
    }

    /// Disables the breaker: every call passes and nothing is recorded until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.shared.force(State::Disabled);
    }

    /// Closes the breaker and clears its failure counts, window and open-duration backoff.
    pub fn reset(&self) {
        self.shared.force(State::Closed);
    }
}
