//! The checks behind every validated value.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{
    Field, InvalidInput, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_TOKEN_LEN, MAX_WEIGHT,
};

pub(super) fn check_weight(weight: u32) -> Result<(), InvalidInput> {
    if weight > MAX_WEIGHT {
        return Err(InvalidInput::new(
            Field::Weight,
            weight,
            "must be in 0..=1000000",
        ));
    }
    Ok(())
}

/// Checks a DNS name: labels of 1..=63 bytes joined by `.`, 253 bytes in all. `strict` asks
/// for lowercase letters, digits and `-` only (service names); otherwise any ASCII letter case.
pub(super) fn validate_dns_name(name: &str, strict: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 253 {
        return Err("must be at most 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("must not have an empty label");
        }
        if label.len() > 63 {
            return Err("labels must be at most 63 bytes");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'");
        }
        let ok = label.bytes().all(|b| {
            b.is_ascii_digit()
                || b == b'-'
                || b.is_ascii_lowercase()
                || (!strict && b.is_ascii_uppercase())
        });
        if !ok {
            return Err(if strict {
                "labels may hold only lowercase letters, digits and '-'"
            } else {
                "labels may hold only letters, digits and '-'"
            });
        }
    }
    Ok(())
}

pub(super) fn validate_host(host: &str) -> Result<(), &'static str> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.starts_with('[') {
        return Err("must be an IP literal without brackets or a DNS name");
    }
    // A name made only of digits and dots is a malformed IPv4 address, not a DNS name.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("is neither a valid IP address nor a DNS name");
    }
    validate_dns_name(host, false).map_err(|_| "is neither a valid IP address nor a DNS name")
}

pub(super) fn validate_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() {
        return Err("must not be empty");
    }
    if version.len() > MAX_TOKEN_LEN {
        return Err("must be at most 128 bytes");
    }
    if version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

pub(super) fn validate_token(token: &str, extra: &[u8]) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("must not be empty");
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err("must be at most 128 bytes");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        return Err("has a character outside ASCII letters, digits and the allowed punctuation");
    }
    Ok(())
}

pub(super) fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), InvalidInput> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(InvalidInput::new(
            Field::Metadata,
            format!("{} entries", metadata.len()),
            "must have at most 64 entries",
        ));
    }
    let mut bytes = 0;
    for (key, value) in metadata {
        validate_token(key, b"._-/")
            .map_err(|r| InvalidInput::new(Field::Metadata, format!("key {key}"), r))?;
        if value.chars().any(char::is_control) {
            return Err(InvalidInput::new(
                Field::Metadata,
                format!("value of {key}"),
                "must not contain control characters",
            ));
        }
        bytes += key.len() + value.len();
    }
    if bytes > MAX_METADATA_BYTES {
        return Err(InvalidInput::new(
            Field::Metadata,
            format!("{bytes} bytes"),
            "must hold at most 4096 bytes of keys and values",
        ));
    }
    Ok(())
}

/// Checks a zone (as [`InstanceBuilder::zone`](super::InstanceBuilder::zone) does), for
/// settings that name one.
pub(crate) fn check_zone(zone: &str) -> Result<(), InvalidInput> {
    validate_token(zone, b"._-").map_err(|r| InvalidInput::new(Field::Zone, zone, r))
}
