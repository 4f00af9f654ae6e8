//! Value kinds of settings and their parsers. Each error says what was given
//! and what is accepted.

use crate::backend_tls::BackendTlsError;
use crate::upstreams::UpstreamsError;
use std::net::SocketAddr;
use std::time::Duration;

/// A value a setting does not accept. It names the value and what is
/// accepted, not the setting: [`crate::settings::SettingError`] adds that.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{given}` is not {}{}", .kind.accepted(), .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NotAccepted {
        given: String,
        kind: Kind,
        detail: Option<String>,
    },
    #[error(transparent)]
    Upstreams(Box<UpstreamsError>),
    #[error(transparent)]
    BackendTls(Box<BackendTlsError>),
}

impl From<BackendTlsError> for ValueError {
    fn from(e: BackendTlsError) -> Self {
        ValueError::BackendTls(Box::new(e))
    }
}

impl From<UpstreamsError> for ValueError {
    fn from(e: UpstreamsError) -> Self {
        ValueError::Upstreams(Box::new(e))
    }
}

fn not_accepted(kind: Kind, given: &str) -> ValueError {
    ValueError::NotAccepted {
        given: given.to_owned(),
        kind,
        detail: None,
    }
}

/// What a setting's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ip:port`.
    SocketAddr,
    /// The upstreams list, see [`crate::upstreams`].
    Upstreams,
    /// `kubernetes` or `file:PATH`.
    Discovery,
    /// One of the names in the slice.
    OneOf(&'static [&'static str]),
    /// A DNS name such as `cluster.local`.
    DnsName,
    /// A tracing filter: `info`, `sidelb_proxy=debug,warn`.
    LogFilter,
    /// A duration such as `10s`, `250ms`, `5m`; `0s` where allowed turns a feature off.
    Duration { allow_zero: bool },
    /// A whole number in a range.
    Count { min: u64, max: u64 },
    /// Free text (names set by the downward API).
    Text,
    /// An HTTP header name (`x-user-id`), or empty for none.
    HeaderName,
    /// The backend TLS list, see [`crate::backend_tls`].
    BackendTls,
    /// An absolute file path, or empty for none.
    FilePath,
}

impl Kind {
    /// A short description of accepted values, for error messages and docs.
    pub fn accepted(&self) -> String {
        match self {
            Kind::SocketAddr => "an address `ip:port`, e.g. `127.0.0.1:4140`".into(),
            Kind::Upstreams => "`service[.namespace]:port=localport,…`".into(),
            Kind::Discovery => "`kubernetes` or `file:PATH`".into(),
            Kind::OneOf(names) => format!("one of {}", names.join(", ")),
            Kind::DnsName => "a DNS name such as `cluster.local`".into(),
            Kind::LogFilter => {
                "a level (trace, debug, info, warn, error, off) or `target=level,…`".into()
            }
            Kind::Duration { allow_zero: true } => {
                "a duration from 1ms to 24h such as `10s`, `500ms`, `5m`; `0s` turns it off".into()
            }
            Kind::Duration { allow_zero: false } => {
                "a duration from 1ms to 24h such as `10s`, `500ms`, `5m`".into()
            }
            Kind::Count { min, max } => format!("a whole number from {min} to {max}"),
            Kind::Text => "any text".into(),
            Kind::HeaderName => {
                "an HTTP header name such as `x-user-id` (letters, digits, `-`, `_`, `.`), or empty for none".into()
            }
            Kind::BackendTls => {
                "`service[.namespace][:port][=server-name],…`, or empty for none".into()
            }
            Kind::FilePath => "an absolute file path, or empty for none".into(),
        }
    }

    /// Checks a value; the error names the problem, not the setting (the
    /// caller adds which variable or annotation it came from).
    pub fn check(&self, value: &str) -> Result<(), ValueError> {
        let v = value.trim();
        match self {
            Kind::SocketAddr => socket_addr(v).map(drop),
            Kind::Upstreams => Ok(crate::upstreams::parse(v, "default").map(drop)?),
            Kind::Discovery => discovery(v).map(drop),
            Kind::OneOf(names) => {
                if names.contains(&v) {
                    Ok(())
                } else {
                    Err(not_accepted(*self, v))
                }
            }
            Kind::DnsName => {
                if !v.is_empty() && v.split('.').all(crate::service::is_dns_label) {
                    Ok(())
                } else {
                    Err(not_accepted(*self, v))
                }
            }
            Kind::LogFilter => log_filter(v),
            Kind::Duration { allow_zero } => duration(v, *allow_zero).map(drop),
            Kind::Count { min, max } => count(v, *min, *max).map(drop),
            Kind::Text => Ok(()),
            Kind::HeaderName => header_name(v).map(drop),
            Kind::BackendTls => Ok(crate::backend_tls::parse(v, "default").map(drop)?),
            Kind::FilePath => file_path(v).map(drop),
        }
    }
}

pub fn socket_addr(v: &str) -> Result<SocketAddr, ValueError> {
    v.parse().map_err(|_| not_accepted(Kind::SocketAddr, v))
}

/// `Some(path)` for `file:PATH`, `None` for `kubernetes`.
pub fn discovery(v: &str) -> Result<Option<&str>, ValueError> {
    match v {
        "kubernetes" => Ok(None),
        _ => match v.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(Some(path)),
            _ => Err(not_accepted(Kind::Discovery, v)),
        },
    }
}

pub fn duration(v: &str, allow_zero: bool) -> Result<Duration, ValueError> {
    let kind = Kind::Duration { allow_zero };
    let d = if v == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(v).map_err(|e| ValueError::NotAccepted {
            given: v.to_owned(),
            kind,
            detail: Some(e.to_string()),
        })?
    };
    if d.is_zero() && !allow_zero || !d.is_zero() && !(DURATION_MIN..=DURATION_MAX).contains(&d) {
        return Err(not_accepted(kind, v));
    }
    Ok(d)
}

/// Bounds of a duration setting that is not off: below a millisecond a timer
/// cannot keep it, and above a day it only overflows clocks.
pub const DURATION_MIN: Duration = Duration::from_millis(1);
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

pub fn count(v: &str, min: u64, max: u64) -> Result<u64, ValueError> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(not_accepted(Kind::Count { min, max }, v)),
    }
}

/// A header name, lower-cased as HTTP/2 sends it; `None` when empty.
/// Pseudo-headers (`:authority`) and connection-level headers are refused.
pub fn header_name(v: &str) -> Result<Option<String>, ValueError> {
    if v.is_empty() {
        return Ok(None);
    }
    let token = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let name = v.to_ascii_lowercase();
    let hop_by_hop = [
        "connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
    ];
    if !token || hop_by_hop.contains(&name.as_str()) {
        return Err(not_accepted(Kind::HeaderName, v));
    }
    Ok(Some(name))
}

/// An absolute path; `None` when empty.
pub fn file_path(v: &str) -> Result<Option<&str>, ValueError> {
    match v {
        "" => Ok(None),
        _ if v.starts_with('/') => Ok(Some(v)),
        _ => Err(not_accepted(Kind::FilePath, v)),
    }
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

fn log_filter(v: &str) -> Result<(), ValueError> {
    let bad = || not_accepted(Kind::LogFilter, v);
    if v.is_empty() {
        return Err(bad());
    }
    for directive in v.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) => {
                let target_ok = !target.is_empty()
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b));
                if !target_ok {
                    return Err(bad());
                }
                level
            }
            None => directive,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("10s", false), Ok(Duration::from_secs(10)));
        assert_eq!(duration("250ms", false), Ok(Duration::from_millis(250)));
        assert_eq!(duration("0s", true), Ok(Duration::ZERO));
        assert_eq!(duration("0", true), Ok(Duration::ZERO));
        assert!(duration("0s", false).is_err());
        assert!(duration("ten", true).is_err());
        assert_eq!(duration("1ms", false), Ok(DURATION_MIN));
        assert_eq!(duration("24h", false), Ok(DURATION_MAX));
        for out_of_range in ["1ns", "999us", "25h", "1000years"] {
            let why = duration(out_of_range, true).unwrap_err().to_string();
            assert!(why.contains("from 1ms to 24h"), "{why}");
        }
    }

    #[test]
    fn log_filters() {
        for ok in ["info", "DEBUG", "sidelb_proxy=debug,warn", "h2=off"] {
            assert!(log_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "loud", "=info", "a b=info"] {
            assert!(log_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn discovery_values() {
        assert_eq!(discovery("kubernetes"), Ok(None));
        assert_eq!(discovery("file:/etc/e.yaml"), Ok(Some("/etc/e.yaml")));
        assert!(discovery("file:").is_err());
        assert!(discovery("dns").is_err());
    }

    #[test]
    fn header_names() {
        assert_eq!(header_name(""), Ok(None));
        assert_eq!(header_name("X-User-Id"), Ok(Some("x-user-id".into())));
        for bad in [":authority", "x user", "x-é", "te", "Connection"] {
            assert!(header_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts() {
        assert_eq!(count("5", 1, 10), Ok(5));
        assert!(count("0", 1, 10).is_err());
        assert!(count("-1", 0, 10).is_err());
    }
}
