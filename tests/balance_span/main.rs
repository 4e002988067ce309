//! The balancer's tracing span, alone in its own test binary: tracing's global level and
//! callsite caches are shared by every test thread of a process, and another test's threads
//! (with no subscriber) can leave them disabled while this test's thread-local subscriber
//! listens.

#[path = "../balance/support.rs"]
#[allow(dead_code)]
mod support;

use tower_mesh::balance::{BalanceLayer, RoundRobin};

use support::{send, setup};

/// The chosen endpoint is recorded as the `endpoint` field of a `balance` span.
#[tokio::test]
async fn span_records_chosen_endpoint() {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    struct Capture(Arc<Mutex<Vec<String>>>);
    struct Visitor(Option<String>);

    impl tracing::field::Visit for Visitor {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "endpoint" {
                self.0 = Some(format!("{value:?}"));
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _id: &tracing::span::Id,
            _ctx: Context<'_, S>,
        ) {
            if attrs.metadata().name() == "balance" {
                let mut v = Visitor(None);
                attrs.record(&mut v);
                self.0.lock().unwrap().extend(v.0);
            }
        }
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests' threads may have cached this callsite as disabled (no subscriber there).
    tracing::callsite::rebuild_interest_cache();
    let (_c, mut b, _) = setup(BalanceLayer::new(RoundRobin::new()), &[1, 1, 1]);
    let ids: Vec<u32> = (0..3).map(|r| send(&mut b, r)).collect();
    let expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
}
