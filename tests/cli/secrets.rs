//! A password in the registry URL appears in no output, no error and no `Debug`.

use tower_mesh::gateway::cli::{run, CliError};

use crate::{everything_shown, fails, parse, TempDir};

const SECRET: &str = "hunter2-very-secret";

#[tokio::test]
async fn passwords_never_show() {
    let urls = [
        // Nothing listens on port 1: the connection is refused (after the pool's acquire
        // timeout, so they run at once).
        format!("postgres://mesh:{SECRET}@127.0.0.1:1/mesh"),
        format!("postgres://mesh@127.0.0.1:1/mesh?password={SECRET}"),
        format!("mysql://mesh:{SECRET}@127.0.0.1:1/mesh"),
        // Not a registry URL at all.
        format!("redis://mesh:{SECRET}@127.0.0.1:1/0"),
        format!("memory://mesh:{SECRET}@x"),
    ];
    let errors = futures_util::future::join_all(urls.iter().map(|url| fails(url, &["list"]))).await;
    for (url, err) in urls.iter().zip(errors) {
        let shown = everything_shown(&err);
        assert!(!shown.contains(SECRET), "{url}: {shown}");
        assert!(
            shown.contains("***"),
            "{url}: the URL is shown, redacted: {shown}"
        );
        if url.starts_with("postgres") || url.starts_with("mysql") {
            assert!(matches!(err, CliError::Connect { .. }), "{err:?}");
            assert!(
                err.to_string().starts_with("cannot open registry "),
                "{err}"
            );
        }
        // Nor in the parsed arguments' Debug.
        let args = parse(&["--registry", url, "list"]).unwrap();
        let debug = format!("{args:?}");
        assert!(!debug.contains(SECRET), "{debug}");
    }
}

#[tokio::test]
async fn passwords_from_a_configuration_never_show() {
    let dir = TempDir::new("secrets");
    let var = format!("TOWER_MESH_CLI_TEST_PASSWORD_{}", std::process::id());
    // Set once, before any thread reads it, by this test only.
    std::env::set_var(&var, SECRET);
    let config = dir.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!("[registry]\nurl = \"postgres://mesh@127.0.0.1:1/mesh\"\npassword_env = {var:?}\n"),
    )
    .unwrap();
    let args = parse(&["--config", config.to_str().unwrap(), "list"]).unwrap();
    let err = run(args, &mut Vec::new()).await.unwrap_err();
    let shown = everything_shown(&err);
    assert!(matches!(err, CliError::Connect { .. }), "{err:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(
        shown.contains("postgres://mesh:***@127.0.0.1:1/mesh"),
        "{shown}"
    );

    // An unset variable is named, not guessed.
    std::fs::write(
        &config,
        "[registry]\nurl = \"postgres://mesh@127.0.0.1:1/mesh\"\npassword_env = \"TOWER_MESH_CLI_TEST_UNSET\"\n",
    )
    .unwrap();
    let args = parse(&["--config", config.to_str().unwrap(), "list"]).unwrap();
    let err = run(args, &mut Vec::new()).await.unwrap_err();
    assert!(
        err.to_string().contains("TOWER_MESH_CLI_TEST_UNSET"),
        "{err}"
    );
}
