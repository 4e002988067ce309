//! Keeping the connection's secrets out of errors, logs and `Debug`: the URL as shown, the
//! URL handed to the driver, and the redaction of driver messages.

use std::fmt;

use super::Backend;

/// Replaces the connection's secrets (see [`secrets_of`]) wherever they appear in a message.
pub(super) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(super) fn new(secrets: Vec<String>) -> Self {
        Redactor { secrets }
    }

    /// Another redactor of the same secrets (for the PostgreSQL listener's task).
    #[cfg_attr(not(feature = "registry-postgres"), allow(dead_code))]
    pub(super) fn share(&self) -> Self {
        Redactor {
            secrets: self.secrets.clone(),
        }
    }

    pub(super) fn text(&self, text: impl fmt::Display) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }
}

/// Whether a URL query parameter carries a secret: `password` in any case, and any other
/// whose name holds one (`sslpassword`, `passwd`, `passphrase`, `pwd`, `secret`, `token`).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|s| name.contains(s))
}

/// The raw `name=value` pairs of a URL's query, with each name decoded.
fn raw_parameters(query: &str) -> impl Iterator<Item = (String, &str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(name), name, value)
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent-decoding.
fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Every form in which the URL's secrets may show up in a message: the user-info password and
/// the values of secret query parameters, as written and decoded. Longest first, so that a
/// secret holding another is replaced whole.
pub(super) fn secrets_of(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    let mut add = |raw: &str| {
        let percent = percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned();
        for form in [raw.to_owned(), percent, form_decode(raw)] {
            if !form.is_empty() && !secrets.contains(&form) {
                secrets.push(form);
            }
        }
    };
    if let Some(password) = parsed.password() {
        add(password);
    }
    for (name, _, value) in raw_parameters(parsed.query().unwrap_or_default()) {
        if is_secret_parameter(&name) {
            add(value);
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// The URL with its user-info password and the values of its secret query parameters
/// replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if let Some(query) = parsed.query() {
                let redacted: Vec<String> = raw_parameters(query)
                    .map(|(name, raw_name, value)| {
                        if is_secret_parameter(&name) {
                            format!("{raw_name}=***")
                        } else {
                            format!("{raw_name}={value}")
                        }
                    })
                    .collect();
                let redacted = redacted.join("&");
                parsed.set_query(Some(&redacted));
            }
            parsed.to_string()
        }
        // Unparseable: it may still hold a password, so show only the scheme.
        Err(_) => format!(
            "{}:<unparseable>",
            url.split(':').next().unwrap_or_default()
        ),
    }
}

/// The URL handed to sqlx. sqlx's PostgreSQL driver logs every query parameter it does not
/// know with its value (and ignores it), so secret parameters other than `password` (which it
/// uses) are taken out here, with a warning that names them only.
pub(super) fn driver_url(backend: Backend, url: &str) -> String {
    if backend != Backend::Postgres {
        return url.to_owned();
    }
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let mut kept = Vec::new();
    for (name, raw_name, value) in raw_parameters(query) {
        if is_secret_parameter(&name) && name != "password" {
            tracing::warn!(
                parameter = %name,
                "database url: ignoring a parameter the PostgreSQL driver does not support \
                 (its value is not shown)"
            );
        } else {
            kept.push(format!("{raw_name}={value}"));
        }
    }
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_secrets() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=pw",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://u@h/db?sslmode=require&sslpassword=pw&application_name=a%20b",
                "postgres://u@h/db?sslmode=require&sslpassword=***&application_name=a%20b",
            ),
            (
                "mysql://u@h/db?PassWord=p%26w+x",
                "mysql://u@h/db?PassWord=***",
            ),
            ("sqlite://mesh.db?mode=rwc", "sqlite://mesh.db?mode=rwc"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn every_form_of_a_secret_is_redacted() {
        let secrets = secrets_of("postgres://u:a%40b@h/db?x=1&password=p%26w+x&sslpassword=s");
        for form in ["a%40b", "a@b", "p%26w+x", "p&w+x", "p&w x", "s"] {
            assert!(secrets.iter().any(|s| s == form), "{form}: {secrets:?}");
        }
        let redactor = Redactor::new(secrets);
        assert_eq!(
            redactor.text("auth p&w x failed for a@b"),
            "auth *** failed for ***"
        );
        assert!(secrets_of("postgres://u@h/db?password=").is_empty());
    }

    #[test]
    fn the_postgres_driver_gets_only_parameters_it_uses() {
        assert_eq!(
            driver_url(
                Backend::Postgres,
                "postgres://u@h/db?password=p&sslpassword=s&sslmode=require"
            ),
            "postgres://u@h/db?password=p&sslmode=require"
        );
        assert_eq!(
            driver_url(Backend::Postgres, "postgres://u@h/db?sslpassword=s"),
            "postgres://u@h/db"
        );
        let mysql = "mysql://u@h/db?sslpassword=s";
        assert_eq!(driver_url(Backend::MySql, mysql), mysql);
    }
}
