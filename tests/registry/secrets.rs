//! Passwords, in the user-info or in a query parameter, never reach errors, `Debug` or logs.

use super::*;

const CANARY: &str = "CANARY-pw-7f3a9";

fn assert_no_canary(e: &Error) {
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(CANARY), "password leaked: {shown}");
}

#[tokio::test]
async fn passwords_never_appear_in_errors() {
    // Nothing listens on port 1: a connection error.
    let url = format!("postgres://mesh:{CANARY}@127.0.0.1:1/test");
    let builder = SqlRegistry::builder(&url).acquire_timeout(Duration::from_millis(300));
    assert!(!format!("{builder:?}").contains(CANARY));
    let err = builder.connect().await.unwrap_err();
    assert_no_canary(&err);
    if cfg!(feature = "registry-postgres") {
        assert!(err.is_transient(), "{err}");
        // The cause, not only that the pool timed out.
        let text = err.to_string().to_lowercase();
        assert!(text.contains("refused"), "{err}");
        assert!(text.contains("acquire timeout (300ms)"), "{err}");
    } else {
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    let err = SqlRegistry::connect(&format!("redis://u:{CANARY}@127.0.0.1/0"))
        .await
        .unwrap_err();
    assert_no_canary(&err);
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("***"), "{err}");
    // Real servers refusing the canary.
    if let Some(base) = support::server_url("TOWER_MESH_TEST_MYSQL") {
        let mut u = url::Url::parse(&base).unwrap();
        u.set_password(Some(CANARY)).unwrap();
        let err = SqlRegistry::builder(u.as_str())
            .acquire_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_err();
        assert_no_canary(&err);
    }
    if let Some(base) = support::server_url("TOWER_MESH_TEST_POSTGRES") {
        let mut u = url::Url::parse(&base).unwrap();
        u.set_password(Some(CANARY)).unwrap();
        u.set_path("/no_such_database_for_canary");
        let err = SqlRegistry::builder(u.as_str())
            .acquire_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_err();
        assert_no_canary(&err);
    }
}

/// Everything written through `tracing` while the guard lives, on this thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || me.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The ways a URL can carry a password besides its user-info: a `password` parameter (any
/// case), or another parameter that holds one (`sslpassword`), plain, percent-encoded or
/// form-encoded.
fn password_parameters() -> Vec<String> {
    vec![
        format!("password={CANARY}"),
        format!("statement-cache-capacity=50&sslpassword={CANARY}"),
        format!("PassWord={CANARY}&statement-cache-capacity=50"),
        format!("password={}", CANARY.replace('-', "%2D")),
        format!("password={CANARY}+and+more"),
    ]
}

/// Notes `shown` in `leaks` if it holds the canary (plain or percent-encoded).
fn check_canary(leaks: &mut Vec<String>, what: &str, shown: &str) {
    if shown.replace("%2D", "-").contains(CANARY) {
        leaks.push(format!("{what}: {shown}"));
    }
}

/// A password given as a URL parameter is redacted wherever the user-info password is: the
/// builder's and the registry's `Debug`, errors, and logs (sqlx itself logs parameters it does
/// not know with their values, so those never reach it).
#[tokio::test(flavor = "current_thread")]
async fn password_parameters_are_redacted() {
    let logs = Captured::default();
    let _guard = logs.start();
    let mut leaks = Vec::new();
    for params in password_parameters() {
        // The builder, and the errors of a backend that is not compiled in or unreachable.
        for url in [
            format!("postgres://mesh@127.0.0.1:1/test?{params}"),
            format!("mysql://mesh@127.0.0.1:1/test?{params}"),
            format!("redis://127.0.0.1/0?{params}"),
        ] {
            let builder = SqlRegistry::builder(&url).acquire_timeout(Duration::from_millis(300));
            check_canary(&mut leaks, "the builder's Debug", &format!("{builder:?}"));
            let err = builder.connect().await.unwrap_err();
            check_canary(&mut leaks, "an error", &format!("{err} {err:?}"));
        }
        // Real servers that accept the connection (trust auth; MySQL ignores the parameter).
        for var in ["TOWER_MESH_TEST_POSTGRES", "TOWER_MESH_TEST_MYSQL"] {
            let Some(base) = support::server_url(var) else {
                continue;
            };
            let url = format!("{}?{params}", support::fresh_database(&base).await);
            let registry = SqlRegistry::builder(&url).connect().await.unwrap();
            check_canary(&mut leaks, "the registry's Debug", &format!("{registry:?}"));
            // Start the PostgreSQL listener too: it connects with the same URL.
            let mut w = registry.watch(&svc("orders"), Revision::ZERO);
            let rev = registry
                .register(inst("orders", "o-1", 8001).into())
                .await
                .unwrap();
            assert_eq!(next_event(&mut w).await.revision(), rev);
        }
    }
    for line in logs.text().lines() {
        check_canary(&mut leaks, "the logs", line);
    }
    assert!(leaks.is_empty(), "passwords leaked:\n{}", leaks.join("\n"));
}
