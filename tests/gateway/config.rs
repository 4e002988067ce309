//! Configuration errors name the key and the line.

use tower_mesh::gateway::config::{Config, ConfigError};

fn err(text: &str) -> String {
    let e = Config::from_toml(text).unwrap_err();
    e.to_string()
}

#[test]
fn an_unknown_key_is_an_error_with_its_line() {
    let e = err(
        "registry = { url = \"memory:\" }\n\n[listen]\ngateway = \"127.0.0.1:0\"\nadmn = \"x\"\n",
    );
    assert!(e.contains("line 5"), "{e}");
    assert!(e.contains("admn"), "{e}");
}

#[test]
fn a_bad_duration_is_an_error_with_its_line() {
    let e = err("registry = { url = \"memory:\" }\n[[routes]]\nprefix = \"/a\"\nservice = \"a\"\ntimeout = \"soon\"\n");
    assert!(e.contains("line 5"), "{e}");
    assert!(e.contains("soon") || e.contains("duration"), "{e}");
}

#[test]
fn a_bad_value_names_the_key_the_value_and_the_line() {
    let e = Config::from_toml(
        "registry = { url = \"memory:\" }\n\n[[routes]]\nprefix = \"orders\"\nservice = \"orders\"\n",
    )
    .unwrap_err();
    match &e {
        ConfigError::Invalid {
            key, value, line, ..
        } => {
            assert_eq!(key, "routes[0].prefix");
            assert_eq!(value, "orders");
            assert_eq!(*line, 3);
        }
        other => panic!("{other:?}"),
    }
    let e = err(
        "registry = { url = \"memory:\" }\n[[routes]]\nprefix = \"/o\"\nservice = \"Orders!\"\n",
    );
    assert!(
        e.contains("routes[0].service") && e.contains("Orders!"),
        "{e}"
    );
    let e = err(
        "registry = { url = \"memory:\" }\n\n[mesh.services.orders]\nretry = { max_retries = 0 }\n",
    );
    assert!(e.contains("mesh.services.orders.retry.max_retries"), "{e}");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn a_missing_registry_and_a_missing_secret_are_named() {
    let e = err("[listen]\ngateway = \"127.0.0.1:0\"\n");
    assert!(e.contains("registry"), "{e}");
    let config = Config::from_toml(
        "[registry]\nurl = \"postgres://mesh@db/mesh\"\npassword_env = \"TM_TEST_SURELY_UNSET\"\n",
    )
    .unwrap();
    let e = config.registry.resolved_url().unwrap_err().to_string();
    assert!(e.contains("TM_TEST_SURELY_UNSET"), "{e}");
    // Debug never shows a password written into the URL.
    let config =
        Config::from_toml("[registry]\nurl = \"postgres://mesh:hunter2@db/mesh\"\n").unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}
