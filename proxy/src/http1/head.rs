//! Reading an HTTP/1.1 request head, strictly.
//!
//! The proxy parses heads itself (with `httparse`) rather than trusting a
//! lenient server, because a request whose framing two parsers could read
//! differently is how requests get smuggled: Content-Length together with
//! Transfer-Encoding, two Content-Lengths (even equal ones), a
//! Transfer-Encoding other than `chunked`, or one on HTTP/1.0 are all
//! refused with 400 and the connection closed, never forwarded.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

const MAX_HEADERS: usize = 256;

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
pub struct RequestHead {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    /// Headers to forward: hop-by-hop and framing headers removed.
    pub headers: HeaderMap,
    pub framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    pub(crate) authority: String,
}

/// Why a head is refused; each maps to a status and closes the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("request header block is larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("ambiguous request framing: {0}")]
    Ambiguous(&'static str),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl HeadError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            HeadError::TooLarge(_) => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::Unsupported(_) => http::StatusCode::NOT_IMPLEMENTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Parses a head from the start of `buf`: `Ok(None)` when more bytes are
/// needed, else the head and its length in bytes.
pub fn parse(buf: &[u8], max_bytes: usize) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_bytes {
                Err(HeadError::TooLarge(max_bytes))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge(max_bytes)),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > max_bytes {
        return Err(HeadError::TooLarge(max_bytes));
    }
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method".into()))?;
    if method == Method::CONNECT {
        return Err(HeadError::Unsupported("CONNECT is not supported by sidelb"));
    }
    let uri: Uri = req
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| HeadError::Malformed("invalid request target".into()))?;

    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut lengths = 0;
    let mut length = None;
    let mut encodings = 0;
    let mut chunked = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Malformed(format!("invalid header name `{}`", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Malformed(format!("invalid value of header `{}`", h.name)))?;
        if name == header::CONTENT_LENGTH {
            lengths += 1;
            let text = std::str::from_utf8(h.value).unwrap_or("").trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::Malformed(format!(
                    "Content-Length `{text}` is not a number"
                )));
            }
            length = Some(text.parse::<u64>().map_err(|_| {
                HeadError::Malformed(format!("Content-Length `{text}` is too large"))
            })?);
        } else if name == header::TRANSFER_ENCODING {
            encodings += 1;
            chunked = std::str::from_utf8(h.value)
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name == header::HOST {
            hosts += 1;
        }
        headers.append(name, value);
    }
    let framing = match (lengths, encodings) {
        (0, 0) => Framing::Empty,
        (1, 0) => match length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        },
        (0, 1) if version == Version::HTTP_10 => {
            return Err(HeadError::Ambiguous("Transfer-Encoding on HTTP/1.0"));
        }
        (0, 1) if chunked => Framing::Chunked,
        (0, 1) => {
            return Err(HeadError::Ambiguous(
                "Transfer-Encoding other than `chunked`",
            ));
        }
        (0, _) => {
            return Err(HeadError::Ambiguous(
                "more than one Transfer-Encoding header",
            ));
        }
        (_, 0) => return Err(HeadError::Ambiguous("more than one Content-Length header")),
        _ => {
            return Err(HeadError::Ambiguous(
                "both Content-Length and Transfer-Encoding",
            ));
        }
    };
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header".into()));
    }
    let authority = match uri.authority() {
        Some(a) => a.as_str().to_owned(),
        None => match headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(host)) => host.to_owned(),
            Some(Err(_)) => return Err(HeadError::Malformed("invalid Host header".into())),
            None if version == Version::HTTP_11 => {
                return Err(HeadError::Malformed("HTTP/1.1 request without Host".into()));
            }
            None => String::new(),
        },
    };
    let tokens = connection_tokens(&headers);
    let keep_alive = if version == Version::HTTP_11 {
        !tokens.iter().any(|t| t == "close")
    } else {
        tokens.iter().any(|t| t == "keep-alive")
    };
    let expect_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    strip_hop_by_hop(&mut headers, &tokens);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    Ok(Some((
        RequestHead {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
            authority,
        },
        len,
    )))
}

/// The lower-cased tokens of every `Connection` header.
pub(crate) fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Removes headers that describe one connection, not the message.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, connection_tokens: &[String]) {
    for name in connection_tokens {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<RequestHead, HeadError> {
        parse(text.as_bytes(), 65536).map(|r| r.expect("complete").0)
    }

    #[test]
    fn plain_requests() {
        let h = head("GET /a?b=1 HTTP/1.1\r\nHost: greeter:80\r\nConnection: keep-alive, x-drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(h.authority, "greeter:80");
        assert!(h.keep_alive);
        assert!(h.headers.get("x-drop").is_none() && h.headers.get("connection").is_none());
        assert_eq!(h.headers["x-keep"], "2");
        let h =
            head("POST / HTTP/1.1\r\nHost: a:1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
                .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(!h.keep_alive);
        let h = head("POST / HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("GET http://b.ns:8080/x HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(h.authority, "b.ns:8080");
        assert!(!h.keep_alive);
    }

    #[test]
    fn partial_heads_wait_and_large_ones_fail() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a", 1024).unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert_eq!(
            parse(big.as_bytes(), 1024).unwrap_err(),
            HeadError::TooLarge(1024)
        );
    }

    #[test]
    fn smuggling_attempts_are_refused() {
        for text in [
            "POST / HTTP/1.1\r\nHost: a:1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a:1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a:1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a:1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a:1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        ] {
            let err = head(text).unwrap_err();
            assert_eq!(
                err.status(),
                http::StatusCode::BAD_REQUEST,
                "{text:?}: {err}"
            );
        }
    }
}
