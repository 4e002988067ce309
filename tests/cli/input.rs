//! Bad input: refused with a typed error naming the field and the value, before anything is
//! written.

use tower_mesh::gateway::cli::{run, CliError, RegistryArgs, RegistryCommand};

use crate::{fails, ok, parse, TempDir};

/// Asserts `err` is `Invalid` for `field` and `value`, and that its message names both.
#[track_caller]
fn invalid(err: CliError, field: &str, value: &str) {
    match &err {
        CliError::Invalid {
            field: f, value: v, ..
        } if *f == field && v == value => {}
        _ => panic!("expected invalid {field} {value:?}, got {err:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("invalid {field} {value:?}: ")),
        "{text}"
    );
}

const REGISTER: [&str; 7] = [
    "register", "orders", "orders-1", "--host", "10.0.0.7", "--port", "8080",
];

/// `register orders orders-1 --host 10.0.0.7 --port 8080` with `extra` after, or with the
/// port replaced when `extra` starts with `--port`.
fn register<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut argv = REGISTER.to_vec();
    if extra.first() == Some(&"--port") {
        argv.truncate(5);
    }
    argv.extend_from_slice(extra);
    argv
}

#[tokio::test]
async fn bad_values_are_refused_by_field_and_value() {
    let dir = TempDir::new("input");
    let url = dir.sqlite_url();
    let url = url.as_str();

    let err = fails(url, &register(&["--port", "0"])).await;
    assert_eq!(err.to_string(), r#"invalid port "0": must be in 1..=65535"#);
    invalid(err, "port", "0");
    invalid(
        fails(url, &register(&["--port", "70000"])).await,
        "port",
        "70000",
    );
    invalid(fails(url, &register(&["--ttl", "ten"])).await, "ttl", "ten");
    let err = fails(url, &register(&["--ttl", "ten"])).await;
    assert!(
        err.to_string().contains("not a duration such as 10s"),
        "{err}"
    );
    invalid(fails(url, &register(&["--ttl", "48h"])).await, "ttl", "48h");
    invalid(fails(url, &register(&["--ttl", "0s"])).await, "ttl", "0s");
    invalid(
        fails(url, &register(&["--scheme", "ftp"])).await,
        "scheme",
        "ftp",
    );
    invalid(
        fails(url, &register(&["--metadata", "team"])).await,
        "metadata",
        "team",
    );
    invalid(
        fails(url, &register(&["--metadata", "a=1", "--metadata", "a=2"])).await,
        "metadata",
        "a=2",
    );
    invalid(
        fails(url, &register(&["--zone", "eu west"])).await,
        "zone",
        "eu west",
    );
    invalid(
        fails(url, &register(&["--weight", "2000000"])).await,
        "weight",
        "2000000",
    );
    invalid(
        fails(url, &register(&["--version", "1 2"])).await,
        "version",
        "1 2",
    );
    invalid(
        fails(
            url,
            &["register", "Orders!", "o-1", "--host", "h", "--port", "1"],
        )
        .await,
        "service name",
        "Orders!",
    );
    invalid(
        fails(
            url,
            &["register", "orders", "o 1", "--host", "h", "--port", "1"],
        )
        .await,
        "instance id",
        "o 1",
    );
    invalid(
        fails(
            url,
            &[
                "register",
                "orders",
                "o-1",
                "--host",
                "bad_host!",
                "--port",
                "1",
            ],
        )
        .await,
        "host",
        "bad_host!",
    );
    invalid(
        fails(url, &["show", "Orders"]).await,
        "service name",
        "Orders",
    );
    invalid(
        fails(url, &["deregister", "orders", "o/1"]).await,
        "instance id",
        "o/1",
    );
    invalid(
        fails(url, &["health", "orders", "orders-1", "--set", "sick"]).await,
        "health",
        "sick",
    );
    // A long value is cut in the message.
    let long = "x".repeat(500);
    let err = fails(url, &register(&["--metadata", &long])).await;
    assert!(err.to_string().len() < 300, "{err}");

    // Nothing was written.
    assert_eq!(ok(url, &["list"]).await, "no services registered\n");

    // An unknown service is named.
    let err = fails(url, &["show", "nope"]).await;
    assert!(
        matches!(&err, CliError::UnknownService(s) if s == "nope"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(r#"service "nope" not found"#),
        "{err}"
    );
}

#[test]
fn clap_refuses_what_cannot_be_parsed() {
    for (argv, names) in [
        (
            &[
                "register", "orders", "o-1", "--host", "h", "--port", "eighty",
            ][..],
            &["--port", "eighty"][..],
        ),
        (&["register", "orders", "o-1", "--port", "80"], &["--host"]),
        (&["health", "orders", "--set", "critical"], &["ID"]),
        (&["health", "orders", "o-1", "--output", "text"], &["--set"]),
        (&["deregister", "orders"], &["ID"]),
        (&["frobnicate"], &["frobnicate"]),
    ] {
        let Err(err) = parse(argv) else {
            panic!("{argv:?} parsed");
        };
        let text = err.to_string();
        for name in names {
            assert!(text.contains(name), "{argv:?}: {text}");
        }
    }
}

#[test]
fn help_explains_leases() {
    let err = parse(&["register", "--help"]).err().unwrap();
    let help = err.to_string();
    assert!(help.contains("heartbeat"), "{help}");
    assert!(help.contains("--metadata <KEY=VALUE>"), "{help}");
}

#[tokio::test]
async fn a_registry_is_required_and_named_once() {
    let dir = TempDir::new("which");
    let args = RegistryArgs {
        registry: None,
        config: None,
        json: false,
        command: RegistryCommand::List,
    };
    let err = run(args, &mut Vec::new()).await.unwrap_err();
    assert!(matches!(err, CliError::NoRegistry), "{err:?}");
    assert!(err.to_string().contains("--registry"), "{err}");

    // From a gateway configuration file.
    let config = dir.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!("[registry]\nurl = {:?}\n", dir.sqlite_url()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let url = dir.sqlite_url();
    ok(&url, &REGISTER).await;
    let mut out = Vec::new();
    run(parse(&["--config", config, "list"]).unwrap(), &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.lines().nth(1).unwrap().starts_with("orders "), "{out}");
    // Options go before or after the command.
    let mut out = Vec::new();
    run(
        parse(&["list", "--config", config, "--json"]).unwrap(),
        &mut out,
    )
    .await
    .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(list["services"][0]["service"], "orders");

    // Both: refused, not guessed.
    let args = parse(&["--registry", &url, "--config", config, "list"]).unwrap();
    let err = run(args, &mut Vec::new()).await.unwrap_err();
    assert!(matches!(err, CliError::TwoRegistries { .. }), "{err:?}");

    // A bad configuration file is named with its line.
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[registry]\nurl = \"memory:\"\nsecret = 1\n").unwrap();
    let args = parse(&["--config", bad.to_str().unwrap(), "list"]).unwrap();
    let err = run(args, &mut Vec::new()).await.unwrap_err();
    assert!(matches!(err, CliError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("line 3"), "{err}");
}

/// Accepts `limit` bytes, then fails as a pipe whose reader is gone.
struct ClosedAfter {
    limit: usize,
    kind: std::io::ErrorKind,
}

impl std::io::Write for ClosedAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.limit == 0 {
            return Err(self.kind.into());
        }
        let n = buf.len().min(self.limit);
        self.limit -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_closed_pipe_ends_quietly_other_write_errors_do_not() {
    let dir = TempDir::new("pipe");
    let url = dir.sqlite_url();
    ok(&url, &REGISTER).await;
    let args = || parse(&["--registry", &url, "show", "orders", "--json"]).unwrap();
    let mut pipe = ClosedAfter {
        limit: 10,
        kind: std::io::ErrorKind::BrokenPipe,
    };
    run(args(), &mut pipe).await.unwrap();
    let mut full = ClosedAfter {
        limit: 10,
        kind: std::io::ErrorKind::StorageFull,
    };
    let err = run(args(), &mut full).await.unwrap_err();
    assert!(matches!(err, CliError::Io(_)), "{err:?}");
}
