//! The HTTP/1.1 body reader (`http1/body.rs`): chunked decoding and
//! exact lengths, fed the way a socket feeds it (in pieces of any size).
//!
//! - any bytes, cut into any pieces: no panic, and the data it passes on is
//!   never more than it was given;
//! - chunks encoded any valid way (upper or lower case hex, leading zeros,
//!   extensions, trailers) decode to exactly their data and trailers, and
//!   the bytes after the body are left for the next request, however the
//!   input was cut;
//! - a length-framed body passes exactly that many bytes.

use bytes::BytesMut;
use http::HeaderMap;
use proptest::prelude::*;
use sidelb_fuzz::{config, corpus, mutated};
use sidelb_proxy::http1::body::{FrameResult, read};
use sidelb_proxy::http1::head::Framing;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

const TARGET: &str = "h1_chunked";
const MAX_TRAILERS: usize = 1024;

/// A reader that hands out its bytes in the given piece sizes.
struct Pieces {
    bytes: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = if self.sizes.is_empty() {
            usize::MAX
        } else {
            self.sizes[self.next % self.sizes.len()].max(1)
        };
        self.next += 1;
        let n = size.min(self.bytes.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.bytes[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

struct Decoded {
    result: Result<(), String>,
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    rest: Vec<u8>,
}

fn decode(framing: Framing, wire: &[u8], sizes: Vec<usize>) -> Decoded {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Roomy enough that the reader never waits for the receiver.
        let (tx, mut rx) = mpsc::channel::<FrameResult>(wire.len() + 4);
        let mut reader = Pieces {
            bytes: wire.to_vec(),
            at: 0,
            sizes,
            next: 0,
        };
        let mut buf = BytesMut::new();
        let result = read(&mut reader, &mut buf, framing, tx, MAX_TRAILERS)
            .await
            .map_err(|e| e.to_string());
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Ok(Ok(frame)) = rx.try_recv() {
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        let mut rest = buf.to_vec();
        rest.extend_from_slice(&reader.bytes[reader.at..]);
        Decoded {
            result,
            data,
            trailers,
            rest,
        }
    })
}

fn check_any(wire: &[u8], sizes: Vec<usize>) {
    let decoded = decode(Framing::Chunked, wire, sizes);
    assert!(decoded.data.len() <= wire.len());
    match decoded.result {
        Ok(()) => assert!(decoded.rest.len() < wire.len()),
        Err(e) => assert!(!e.is_empty()),
    }
}

#[test]
fn corpus_replays() {
    for (name, wire) in corpus(TARGET) {
        let decoded = decode(Framing::Chunked, &wire, Vec::new());
        // Files named `refuse-*` must fail, `accept-*` decode.
        if name.starts_with("refuse-") {
            assert!(decoded.result.is_err(), "{name}");
        } else if name.starts_with("accept-") {
            assert!(decoded.result.is_ok(), "{name}: {:?}", decoded.result);
        }
        for sizes in [vec![1], vec![2, 3], vec![7]] {
            let again = decode(Framing::Chunked, &wire, sizes);
            assert_eq!(again.result, decoded.result, "{name}: the same in pieces");
            assert_eq!(again.data, decoded.data, "{name}");
        }
    }
}

/// A chunk size line for `len`: hex in either case, maybe zero-padded, maybe
/// with extensions.
fn size_line(len: usize, upper: bool, zeros: usize, ext: Option<&str>) -> String {
    let hex = if upper {
        format!("{len:X}")
    } else {
        format!("{len:x}")
    };
    let pad = "0".repeat(zeros);
    match ext {
        Some(ext) => format!("{pad}{hex};{ext}\r\n"),
        None => format!("{pad}{hex}\r\n"),
    }
}

fn trailer_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("x-[a-z]{1,8}", "[a-zA-Z0-9 ]{0,16}"), 0..3)
}

proptest! {
    #![proptest_config(config(TARGET, 1000))]

    #[test]
    fn any_bytes(
        wire in proptest::collection::vec(any::<u8>(), 0..300),
        sizes in proptest::collection::vec(1usize..40, 0..4),
    ) {
        check_any(&wire, sizes);
    }

    #[test]
    fn mutated_corpus(
        wire in mutated(TARGET, 6),
        sizes in proptest::collection::vec(1usize..40, 0..4),
    ) {
        check_any(&wire, sizes);
    }

    #[test]
    fn valid_encodings_decode_exactly(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..6),
        upper in any::<bool>(),
        zeros in 0usize..3,
        ext in proptest::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"),
        trailers in trailer_strategy(),
        sizes in proptest::collection::vec(1usize..50, 0..4),
    ) {
        let mut wire = Vec::new();
        for chunk in &chunks {
            wire.extend(size_line(chunk.len(), upper, zeros, ext.as_deref()).into_bytes());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend(size_line(0, upper, zeros, ext.as_deref()).into_bytes());
        for (name, value) in &trailers {
            wire.extend(format!("{name}: {value}\r\n").into_bytes());
        }
        wire.extend_from_slice(b"\r\nGET /next HTTP/1.1\r\n");
        let decoded = decode(Framing::Chunked, &wire, sizes);
        prop_assert!(decoded.result.is_ok(), "{:?}", decoded.result);
        prop_assert_eq!(decoded.data, chunks.concat());
        prop_assert_eq!(decoded.rest, b"GET /next HTTP/1.1\r\n".to_vec());
        let got = decoded.trailers.unwrap_or_default();
        prop_assert_eq!(got.len(), trailers.len());
        for (name, value) in &trailers {
            prop_assert_eq!(got.get_all(name.as_str()).iter().any(|v| v == value.trim()), true);
        }
    }

    #[test]
    fn lengths_pass_exactly_their_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        after in proptest::collection::vec(any::<u8>(), 0..50),
        sizes in proptest::collection::vec(1usize..40, 0..4),
    ) {
        let mut wire = body.clone();
        wire.extend_from_slice(&after);
        let framing = if body.is_empty() { Framing::Empty } else { Framing::Length(body.len() as u64) };
        let decoded = decode(framing, &wire, sizes);
        prop_assert!(decoded.result.is_ok());
        prop_assert_eq!(decoded.data, body);
        prop_assert_eq!(decoded.rest, after);
    }
}

#[test]
fn a_length_longer_than_the_input_is_an_early_end() {
    let decoded = decode(Framing::Length(10), b"short", Vec::new());
    assert!(decoded.result.is_err());
    assert_eq!(decoded.data, b"short");
}
