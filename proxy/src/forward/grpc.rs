//! The bits of gRPC the proxy speaks itself: deadlines and error responses.
//!
//! An error the proxy makes for a gRPC call is a trailers-only response
//! (HTTP 200, `grpc-status`, `grpc-message`, END_STREAM on the headers) so
//! every gRPC client reports it as a status, with the message intact.

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use std::time::Duration;

/// Header names looked up on every call, parsed once.
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

pub(crate) const UNAVAILABLE: u16 = 14;
pub(crate) const DEADLINE_EXCEEDED: u16 = 4;
pub(crate) const INTERNAL: u16 = 13;
pub(crate) const RESOURCE_EXHAUSTED: u16 = 8;

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Parses `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` of trailers (or of trailers-only headers).
pub(crate) fn status_of(headers: &HeaderMap) -> Option<u16> {
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Percent-encodes a status message as the gRPC spec asks: everything
/// outside printable ASCII, and `%` itself.
pub(crate) fn encode_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn set_status(headers: &mut HeaderMap, code: u16, message: &str) {
    headers.insert(GRPC_STATUS.clone(), HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&encode_message(message)) {
        headers.insert(GRPC_MESSAGE.clone(), v);
    }
}

/// A trailers-only response carrying `code` and `message`.
pub(crate) fn error_response(code: u16, message: &str) -> Response<()> {
    let mut res = Response::new(());
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    set_status(headers, code, message);
    res
}

/// Trailers ending a call whose response headers were already sent.
pub(crate) fn error_trailers(code: u16, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    set_status(&mut trailers, code, message);
    trailers
}

/// A plain-HTTP error: the status and the message as text.
pub(crate) fn http_error(status: StatusCode, message: &str) -> Response<String> {
    let mut res = Response::new(format!("{message}\n"));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        let t = |s: &'static str| parse_timeout(&HeaderValue::from_static(s));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(t("123456789S"), None);
        assert_eq!(t("S"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t(""), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("a b%c"), "a b%25c");
        assert_eq!(encode_message("é"), "%C3%A9");
    }

    #[test]
    fn trailers_only_errors() {
        let res = error_response(UNAVAILABLE, "no endpoints");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(status_of(res.headers()), Some(14));
        assert_eq!(res.headers()["grpc-message"], "no endpoints");
    }
}
