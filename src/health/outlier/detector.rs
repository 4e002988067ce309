//! The detector: every endpoint's place, ejections and returns, and the interval rules.
//!
//! Calls touch only their endpoint's atomics ([`Endpoint`]); the detector's lock is taken
//! when an endpoint joins or leaves, when a run of failures reaches a threshold, when the
//! interval rules run, and when an ejected endpoint returns. Hooks run and pollers are woken
//! after the lock is released.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::sync::lock;

use super::config::Policy;
use super::endpoint::Endpoint;
use super::hooks::OnEjection;
use super::report::{Ejection, OutlierCounters, Reason};
use super::rules;

/// An ejection in force, in the detector's time (nanoseconds since its base instant).
#[derive(Debug, Clone, Copy)]
struct Active {
    reason: Reason,
    since: u64,
    until: u64,
}

/// One key's place: its endpoint, how many services hold it, and its ejection history.
struct Member<K> {
    endpoint: Arc<Endpoint<K>>,
    services: usize,
    /// Ejections in a row (the ejection time multiplier).
    times: u32,
    ejection: Option<Active>,
    /// Ejected or returned during the current interval (which is then not clean).
    touched: bool,
}

pub(crate) struct State<K> {
    members: HashMap<K, Member<K>>,
    ejected: usize,
    rng: SmallRng,
    pub(crate) counters: OutlierCounters,
}

/// What to do once the lock is released: run the hook and wake the endpoint's poller.
pub(crate) enum Fired<K> {
    Ejected(Ejection<K>, Arc<Endpoint<K>>),
    Returned(Arc<Endpoint<K>>),
}

/// The outlier detector of one service, shared by its layer, endpoints, handles and worker.
pub(crate) struct Detector<K> {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Policy,
    base: Instant,
    state: Mutex<State<K>>,
    hook: Box<dyn OnEjection<K>>,
    #[cfg(feature = "metrics")]
    metrics: bool,
}

impl<K> fmt::Debug for Detector<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<K> Detector<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    pub(crate) fn new(
        policy: Policy,
        name: Arc<str>,
        seed: Option<u64>,
        hook: Box<dyn OnEjection<K>>,
        #[cfg(feature = "metrics")] metrics: bool,
    ) -> Arc<Self> {
        let rng = match seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        Arc::new(Detector {
            name,
            policy,
            base: Instant::now(),
            state: Mutex::new(State {
                members: HashMap::new(),
                ejected: 0,
                rng,
                counters: OutlierCounters::default(),
            }),
            hook,
            #[cfg(feature = "metrics")]
            metrics,
        })
    }

    /// Now, in the detector's time.
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// A service for `key` joins: the key's endpoint, new or shared with the other services
    /// for the key.
    pub(crate) fn join(self: &Arc<Self>, key: K) -> Arc<Endpoint<K>> {
        let mut st = lock(&self.state);
        if let Some(member) = st.members.get_mut(&key) {
            member.services += 1;
            return member.endpoint.clone();
        }
        let threshold = |c: Option<super::config::Consecutive>| c.map_or(0, |c| c.threshold);
        let endpoint = Arc::new(Endpoint::new(
            key.clone(),
            Arc::downgrade(self),
            threshold(self.policy.consecutive_5xx),
            threshold(self.policy.consecutive_gateway_failure),
        ));
        st.members.insert(
            key,
            Member {
                endpoint: endpoint.clone(),
                services: 1,
                times: 0,
                ejection: None,
                touched: false,
            },
        );
        endpoint
    }

    /// A service for `endpoint` is gone; the last one releases the key's state.
    pub(crate) fn leave(&self, endpoint: &Arc<Endpoint<K>>) {
        let mut st = lock(&self.state);
        let Some(member) = st.members.get_mut(&endpoint.key) else {
            return;
        };
        if !Arc::ptr_eq(&member.endpoint, endpoint) {
            return;
        }
        member.services -= 1;
        if member.services > 0 {
            return;
        }
        let ejected = member.ejection.is_some();
        st.members.remove(&endpoint.key);
        if ejected {
            st.ejected -= 1;
            self.gauge(st.ejected);
        }
        tracing::debug!(
            detector = %self.name,
            endpoint = ?endpoint.key,
            ejected,
            "endpoint left outlier detection"
        );
    }

    /// A run of failures on `endpoint` reached its threshold.
    pub(crate) fn trip(&self, endpoint: &Endpoint<K>, reason: Reason) {
        let now = self.now();
        let mut fired = Vec::new();
        {
            let mut st = lock(&self.state);
            let current = st
                .members
                .get(&endpoint.key)
                .is_some_and(|m| std::ptr::eq(Arc::as_ptr(&m.endpoint), endpoint));
            if current {
                let enforcing = match reason {
                    Reason::ConsecutiveGatewayFailure { .. } => {
                        self.policy.consecutive_gateway_failure.map(|c| c.enforcing)
                    }
                    _ => self.policy.consecutive_5xx.map(|c| c.enforcing),
                };
                let key = endpoint.key.clone();
                self.consider(
                    &mut st,
                    &key,
                    reason,
                    enforcing.unwrap_or(0),
                    now,
                    &mut fired,
                );
            }
        }
        self.fire(fired);
    }

    /// An outlier was found: count it, and eject it if the rule is enforced this time and
    /// the cap allows.
    pub(crate) fn consider(
        &self,
        st: &mut State<K>,
        key: &K,
        reason: Reason,
        enforcing: u32,
        now: u64,
        fired: &mut Vec<Fired<K>>,
    ) {
        let rule = reason.rule();
        let hosts = st.members.len();
        let Some(member) = st.members.get_mut(key) else {
            return;
        };
        if member.ejection.is_some() {
            return;
        }
        st.counters.detected.0[rule.index()] += 1;
        self.count("tower_mesh_outlier_detected_total", Some(rule.as_str()));
        let enforced =
            enforcing >= 100 || (enforcing > 0 && st.rng.random_range(0..100) < enforcing);
        if !enforced {
            st.counters.not_enforced += 1;
            tracing::info!(
                detector = %self.name,
                endpoint = ?key,
                rule = rule.as_str(),
                %reason,
                enforcing,
                "outlier detected, not ejected (rule not enforced this time)"
            );
            return;
        }
        let max = self.policy.max_ejection_percent as usize;
        // Envoy's rule: at least one host can be ejected, whatever the percentage (with
        // the default 10%, a service of fewer than ten hosts could otherwise eject none).
        if st.ejected > 0 && (st.ejected + 1) * 100 > max * hosts {
            st.counters.overflow += 1;
            self.count("tower_mesh_outlier_overflow_total", None);
            tracing::warn!(
                detector = %self.name,
                endpoint = ?key,
                rule = rule.as_str(),
                %reason,
                ejected = st.ejected,
                hosts,
                max_ejection_percent = max,
                "outlier detected, not ejected: max_ejection_percent reached"
            );
            return;
        }
        member.times = member.times.saturating_add(1);
        let duration = self.policy.ejection_time(member.times);
        let until = now.saturating_add(nanos(duration)).max(1);
        member.ejection = Some(Active {
            reason,
            since: now,
            until,
        });
        member.touched = true;
        member
            .endpoint
            .ejected_until
            .store(until, Ordering::Release);
        let times = member.times;
        let endpoint = member.endpoint.clone();
        st.ejected += 1;
        st.counters.enforced.0[rule.index()] += 1;
        self.count("tower_mesh_outlier_ejections_total", Some(rule.as_str()));
        self.gauge(st.ejected);
        tracing::warn!(
            detector = %self.name,
            endpoint = ?key,
            rule = rule.as_str(),
            %reason,
            ejected_for = ?duration,
            times,
            "endpoint ejected"
        );
        fired.push(Fired::Ejected(
            Ejection {
                key: key.clone(),
                reason,
                since: self.instant(now),
                until: self.instant(until),
                times,
            },
            endpoint,
        ));
    }

    /// Returns an ejected member (the caller checked that it is).
    fn return_member(
        &self,
        member: &mut Member<K>,
        ejected: &mut usize,
        counters: &mut OutlierCounters,
        fired: &mut Vec<Fired<K>>,
    ) {
        member.ejection = None;
        member.touched = true;
        member.endpoint.reset_runs();
        member.endpoint.ejected_until.store(0, Ordering::Release);
        *ejected -= 1;
        counters.returned += 1;
        self.count("tower_mesh_outlier_returns_total", None);
        self.gauge(*ejected);
        tracing::info!(
            detector = %self.name,
            endpoint = ?member.endpoint.key,
            times = member.times,
            "ejected endpoint returned"
        );
        fired.push(Fired::Returned(member.endpoint.clone()));
    }

    /// Returns `endpoint` if its ejection is over (its `poll_ready` found it so).
    pub(crate) fn return_if_due(&self, endpoint: &Endpoint<K>) {
        let now = self.now();
        let mut fired = Vec::new();
        {
            let mut guard = lock(&self.state);
            let State {
                members,
                ejected,
                counters,
                ..
            } = &mut *guard;
            if let Some(member) = members.get_mut(&endpoint.key) {
                let due = member.ejection.is_some_and(|a| a.until <= now);
                if due && std::ptr::eq(Arc::as_ptr(&member.endpoint), endpoint) {
                    self.return_member(member, ejected, counters, &mut fired);
                }
            }
        }
        self.fire(fired);
    }

    /// Returns the endpoint for `key` now, if it is ejected. Whether it was.
    pub(crate) fn uneject(&self, key: &K) -> bool {
        let mut fired = Vec::new();
        {
            let mut guard = lock(&self.state);
            let State {
                members,
                ejected,
                counters,
                ..
            } = &mut *guard;
            if let Some(member) = members.get_mut(key) {
                if member.ejection.is_some() {
                    self.return_member(member, ejected, counters, &mut fired);
                }
            }
        }
        let returned = !fired.is_empty();
        self.fire(fired);
        returned
    }

    /// One evaluation interval: decay the ejection counts of endpoints that had a clean
    /// interval, run the success-rate and failure-percentage rules over the interval's
    /// counts, and return the endpoints whose ejection is over.
    pub(crate) fn evaluate(&self) {
        let now = self.now();
        let mut fired = Vec::new();
        {
            let mut guard = lock(&self.state);
            for member in guard.members.values_mut() {
                if member.ejection.is_none() && !member.touched {
                    member.times = member.times.saturating_sub(1);
                }
                member.touched = false;
            }
            let volumes: Vec<rules::Volume<K>> = guard
                .members
                .iter()
                .filter_map(|(key, member)| {
                    let (successes, failures) = member.endpoint.take_calls();
                    (successes + failures > 0).then(|| rules::Volume {
                        key: key.clone(),
                        successes,
                        failures,
                    })
                })
                .collect();
            for (key, reason, enforcing) in rules::outliers(&self.policy, &volumes) {
                self.consider(&mut guard, &key, reason, enforcing, now, &mut fired);
            }
            let State {
                members,
                ejected,
                counters,
                ..
            } = &mut *guard;
            for member in members.values_mut() {
                if member.ejection.is_some_and(|a| a.until <= now) {
                    self.return_member(member, ejected, counters, &mut fired);
                }
            }
        }
        self.fire(fired);
    }

    /// Runs the hook and wakes the pollers for what happened under the lock.
    fn fire(&self, fired: Vec<Fired<K>>) {
        for event in fired {
            match event {
                Fired::Ejected(ejection, endpoint) => {
                    self.hook.on_ejection(&ejection);
                    endpoint.waker.wake();
                }
                Fired::Returned(endpoint) => {
                    self.hook.on_return(&endpoint.key);
                    endpoint.waker.wake();
                }
            }
        }
    }

    /// The ejections in force.
    pub(crate) fn ejections(&self) -> Vec<Ejection<K>> {
        let st = lock(&self.state);
        st.members
            .iter()
            .filter_map(|(key, member)| self.ejection_of(key, member))
            .collect()
    }

    /// The ejection in force for `key`, if any.
    pub(crate) fn ejection(&self, key: &K) -> Option<Ejection<K>> {
        let st = lock(&self.state);
        st.members
            .get(key)
            .and_then(|member| self.ejection_of(key, member))
    }

    fn ejection_of(&self, key: &K, member: &Member<K>) -> Option<Ejection<K>> {
        member.ejection.map(|a| Ejection {
            key: key.clone(),
            reason: a.reason,
            since: self.instant(a.since),
            until: self.instant(a.until),
            times: member.times,
        })
    }

    /// The number of endpoints (keys) watched.
    pub(crate) fn endpoints(&self) -> usize {
        lock(&self.state).members.len()
    }

    pub(crate) fn counters(&self) -> OutlierCounters {
        lock(&self.state).counters
    }

    /// Ejections in a row recorded for `key` (0 for an unknown key).
    pub(crate) fn times(&self, key: &K) -> u32 {
        lock(&self.state).members.get(key).map_or(0, |m| m.times)
    }

    #[allow(unused_variables)]
    fn count(&self, name: &'static str, rule: Option<&'static str>) {
        #[cfg(feature = "metrics")]
        if self.metrics {
            let detector = self.name.to_string();
            match rule {
                Some(rule) => {
                    metrics::counter!(name, "detector" => detector, "rule" => rule).increment(1)
                }
                None => metrics::counter!(name, "detector" => detector).increment(1),
            }
        }
    }

    #[allow(unused_variables)]
    fn gauge(&self, ejected: usize) {
        #[cfg(feature = "metrics")]
        if self.metrics {
            metrics::gauge!("tower_mesh_outlier_ejected", "detector" => self.name.to_string())
                .set(ejected as f64);
        }
    }
}
