//! The `metrics` a breaker reports (feature `metrics`): handles on its call counters, made
//! once, and its transitions and state, registered on each transition; every series is
//! labelled with the breaker's name (shared, not copied). Dropped with the breaker.

use std::sync::Arc;

use super::handle::State;

/// A breaker's `metrics` handles; no-ops when the builder turned metrics off.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) success: metrics::Counter,
    pub(crate) failure: metrics::Counter,
    pub(crate) ignored: metrics::Counter,
    pub(crate) rejected: metrics::Counter,
    on: bool,
}

impl Metrics {
    /// The handles of the breaker `name`, which starts closed.
    pub(crate) fn new(name: &Arc<str>, on: bool) -> Self {
        if !on {
            return Metrics {
                success: metrics::Counter::noop(),
                failure: metrics::Counter::noop(),
                ignored: metrics::Counter::noop(),
                rejected: metrics::Counter::noop(),
                on,
            };
        }
        let calls = |outcome: &'static str| {
            metrics::counter!(
                "tower_mesh_breaker_calls_total",
                "breaker" => name.clone(),
                "outcome" => outcome
            )
        };
        let metrics = Metrics {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            on,
        };
        metrics.state(name, State::Closed);
        metrics
    }

    /// Sets the state gauge, registering it anew: an exporter that dropped it as idle
    /// (a breaker long closed) shows it again.
    fn state(&self, name: &Arc<str>, state: State) {
        metrics::gauge!("tower_mesh_breaker_state", "breaker" => name.clone())
            .set(f64::from(state.code()));
    }

    /// Counts a transition and sets the state gauge.
    pub(crate) fn transition(&self, name: &Arc<str>, from: State, to: State) {
        if !self.on {
            return;
        }
        metrics::counter!(
            "tower_mesh_breaker_transitions_total",
            "breaker" => name.clone(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        self.state(name, to);
    }
}
