//! The HTTP/1.1 request head parser (`http1/head.rs`), which decides
//! how a request's body is framed, so every smuggling attempt hinges on it.
//!
//! - any bytes: no panic; a head is never longer than the input or the limit;
//! - a parsed head parses the same from exactly its own bytes, and every
//!   shorter prefix of it asks for more bytes (the parser never decides on
//!   half a head);
//! - a head that is accepted has at most one framing header (one
//!   Content-Length or one Transfer-Encoding, never both), and its framing
//!   says what that header said;
//! - heads built from random framing headers (any case, spacing, count and
//!   value) are refused whenever there is more than one, and are chunked
//!   exactly when the one there is says `chunked` on HTTP/1.1.

use proptest::prelude::*;
use sidelb_fuzz::{config, corpus, mutated};
use sidelb_proxy::http1::head::{Framing, HeadError, parse};

const TARGET: &str = "h1_head";
const MAX: usize = 8192;

/// The framing headers of a head's text, by their lower-cased names.
fn framing_headers(head: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut lines = text.split('\n').skip(1);
    let (mut cl, mut te) = (0, 0);
    for line in lines.by_ref() {
        if line.starts_with("content-length:") {
            cl += 1;
        } else if line.starts_with("transfer-encoding:") {
            te += 1;
        }
    }
    (cl, te)
}

fn check(input: &[u8]) {
    match parse(input, MAX) {
        Ok(Some((head, len))) => {
            assert!(len <= input.len() && len <= MAX, "{len}");
            // The same from its own bytes; every prefix asks for more.
            let again = parse(&input[..len], MAX)
                .expect("parses again")
                .expect("whole");
            assert_eq!((again.1, again.0.framing), (len, head.framing));
            for cut in [0, len / 2, len.saturating_sub(1)] {
                if cut < len {
                    assert!(
                        matches!(parse(&input[..cut], MAX), Ok(None)),
                        "a prefix of {cut} bytes decided: {:?}",
                        String::from_utf8_lossy(&input[..cut])
                    );
                }
            }
            let (cl, te) = framing_headers(&input[..len]);
            assert!(
                cl + te <= 1,
                "accepted with {cl} lengths and {te} encodings"
            );
            match head.framing {
                Framing::Chunked => assert_eq!(te, 1),
                Framing::Length(_) => assert_eq!(cl, 1),
                Framing::Empty => assert_eq!(te, 0),
            }
            assert!(!head.headers.contains_key("transfer-encoding"));
            assert!(!head.headers.contains_key("content-length"));
        }
        Ok(None) => assert!(input.len() < MAX),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _ = e.status();
        }
    }
}

#[test]
fn corpus_replays() {
    for (name, input) in corpus(TARGET) {
        let outcome = parse(&input, MAX);
        // Files named `refuse-*` must be refused, `accept-*` accepted.
        if name.starts_with("refuse-") {
            assert!(outcome.is_err(), "{name}: {outcome:?}");
        } else if name.starts_with("accept-") {
            assert!(matches!(outcome, Ok(Some(_))), "{name}: {outcome:?}");
        }
        check(&input);
    }
}

/// One framing header as an attacker might write it.
fn framing_header() -> impl Strategy<Value = (bool, String)> {
    let name = prop_oneof![
        Just("Content-Length"),
        Just("content-length"),
        Just("CONTENT-LENGTH"),
        Just("Transfer-Encoding"),
        Just("transfer-encoding"),
        Just("TRANSFER-ENCODING"),
    ];
    let value = prop_oneof![
        Just("chunked".to_owned()),
        Just("Chunked".to_owned()),
        Just(" chunked ".to_owned()),
        Just("chunked, identity".to_owned()),
        Just("gzip, chunked".to_owned()),
        Just("identity".to_owned()),
        Just("xchunked".to_owned()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        Just("+5".to_owned()),
        Just("5, 5".to_owned()),
        Just("".to_owned()),
        Just("99999999999999999999999".to_owned()),
    ];
    (name, value).prop_map(|(n, v)| {
        (
            n.to_ascii_lowercase().starts_with("content"),
            format!("{n}:{v}"),
        )
    })
}

proptest! {
    #![proptest_config(config(TARGET, 2000))]

    #[test]
    fn any_bytes(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&input);
    }

    #[test]
    fn mutated_corpus(input in mutated(TARGET, 6)) {
        check(&input);
    }

    #[test]
    fn framing_is_refused_exactly_when_ambiguous(
        headers in proptest::collection::vec(framing_header(), 0..4),
        http10 in any::<bool>(),
    ) {
        let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut text = format!("POST /x {version}\r\nHost: a.b:1\r\n");
        for (_, h) in &headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        let lengths = headers.iter().filter(|(cl, _)| *cl).count();
        let encodings = headers.len() - lengths;
        let outcome = parse(text.as_bytes(), MAX);
        check(text.as_bytes());
        if lengths + encodings > 1 {
            // Refused: as ambiguous, or for a malformed value seen first.
            prop_assert!(
                matches!(outcome, Err(HeadError::Ambiguous(_) | HeadError::Malformed(_))),
                "{text:?}: {outcome:?}"
            );
        }
        if encodings == 1 && lengths == 0 {
            let value = headers[0].1.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
            let chunked = value.eq_ignore_ascii_case("chunked") && !http10;
            prop_assert_eq!(
                matches!(outcome, Ok(Some((ref h, _))) if h.framing == Framing::Chunked),
                chunked,
                "{:?}: {:?}", text, outcome
            );
        }
    }
}
