//! The discover builder refuses bad settings at `build`, naming the setting and the value;
//! nothing is clamped.

use std::error::Error as _;
use std::time::Duration;

use tower_mesh::discover::error::BuildError;
use tower_mesh::discover::{Builder, RegistryDiscover};
use tower_mesh::instance::{Field, Instance};
use tower_mesh::registry::{MemoryRegistry, Registry};

use crate::{drain, echo, id, inst, summary, svc};

type Echoes = RegistryDiscover<MemoryRegistry, fn(&Instance) -> Instance>;

fn build(builder: Builder) -> Result<Echoes, BuildError> {
    builder.build(
        MemoryRegistry::new(),
        "orders",
        echo as fn(&Instance) -> Instance,
    )
}

#[test]
fn zero_first_backoff_is_refused() {
    let err = build(Builder::new().backoff(Duration::ZERO, Duration::from_secs(1))).unwrap_err();
    assert_eq!(
        err,
        BuildError::ZeroDuration {
            setting: "backoff_initial"
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid discovery setting backoff_initial: 0ns (must be positive)"
    );
    assert!(err.source().is_none());
}

#[test]
fn backoff_cap_below_first_pause_is_refused() {
    let err =
        build(Builder::new().backoff(Duration::from_secs(2), Duration::from_secs(1))).unwrap_err();
    assert_eq!(
        err,
        BuildError::MaxBelowInitial {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(1)
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid discovery backoff: max 1s is below initial 2s"
    );
    // Equal is fine: a constant pause.
    build(Builder::new().backoff(Duration::from_secs(1), Duration::from_secs(1))).unwrap();
}

#[test]
fn removal_share_outside_zero_to_one_is_refused() {
    for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        let err = build(Builder::new().max_removal_share(bad)).unwrap_err();
        match err {
            BuildError::InvalidShare { value } => {
                assert!(value.to_bits() == bad.to_bits(), "{value} for {bad}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("invalid discovery setting max_removal_share: "),
            "{err}"
        );
    }
    assert_eq!(
        build(Builder::new().max_removal_share(1.5))
            .unwrap_err()
            .to_string(),
        "invalid discovery setting max_removal_share: 1.5 (must be in [0.0, 1.0])"
    );
    for ok in [0.0, 0.25, 1.0] {
        build(Builder::new().max_removal_share(ok)).unwrap();
    }
}

#[test]
fn invalid_zone_and_service_name_are_refused_with_the_field() {
    let err = build(Builder::new().prefer_zone("eu west")).unwrap_err();
    let BuildError::Invalid(invalid) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(invalid.field(), Field::Zone);
    assert_eq!(invalid.value(), "eu west");
    // Transparent: the message is the inner error's, printed once.
    assert_eq!(err.to_string(), invalid.to_string());
    assert!(
        err.to_string().starts_with(r#"invalid zone "eu west": "#),
        "{err}"
    );

    let err = Builder::new()
        .build(MemoryRegistry::new(), "Not Valid", echo)
        .unwrap_err();
    let BuildError::Invalid(invalid) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(invalid.field(), Field::Service);
    assert_eq!(invalid.value(), "Not Valid");
}

/// The settings are applied as given: with a removal share of 1.0 the guard never holds, and
/// a builder builds the streams of several services.
#[tokio::test(start_paused = true)]
async fn settings_apply_as_given() {
    let r = MemoryRegistry::new();
    for n in 0..4 {
        r.register(inst(&format!("i{n}"), 1 + n).into())
            .await
            .unwrap();
    }
    let builder = Builder::new().include_warning(false).max_removal_share(1.0);
    let mut d = builder.clone().build(r.clone(), "orders", echo).unwrap();
    assert_eq!(drain(&mut d).await.len(), 4);
    r.set_health(
        &svc("orders"),
        &id("i0"),
        tower_mesh::instance::Health::Warning,
    )
    .await
    .unwrap();
    assert_eq!(summary(&drain(&mut d).await), ["-i0"]);
    let mut other = builder.build(r.clone(), "billing", echo).unwrap();
    assert!(drain(&mut other).await.is_empty());
}
