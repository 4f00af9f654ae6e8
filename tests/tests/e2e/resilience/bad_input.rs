//! Malformed input from the app, over HTTP/2: each gets a clear error, the
//! proxy stays up, and nothing is left open.
//!
//! - Connection errors (RFC 9113 §5.4.1): garbage after the preface, a first
//!   frame that is not SETTINGS, DATA on stream 0, a frame over the maximum
//!   size, a bad HPACK index, a bad SETTINGS value or length, a zero window
//!   increment, a stream id the client may not use, a CONTINUATION out of
//!   place, and two malformed requests the h2 crate treats as connection
//!   errors (an uppercase header name, an unknown pseudo-header). Each is
//!   answered with `GOAWAY` and its error code (pinned as the proxy sends
//!   them; where the h2 crate's code differs from the RFC's, the case says
//!   so), the connection is closed, and `sidelb_protocol_errors_total`
//!   counts it.
//! - Stream errors (§8.2.1): a request without `:path`, a
//!   connection-specific header, `te` other than `trailers`, a pseudo-header
//!   after a regular one. Each is answered with `RST_STREAM(PROTOCOL_ERROR)`
//!   on its stream only: a valid call on the same connection afterwards is
//!   answered, and only it reaches the backend.
//! - Malformed gRPC framing (a message shorter than its length prefix, a
//!   compressed flag without an encoding, bytes that are no protobuf) is not
//!   the proxy's to judge: it passes untouched, and the backend's answer is
//!   the same through the proxy as straight to the backend.
//!
//! Afterwards a normal call succeeds, nothing is in flight, and the proxy's
//! open file descriptors are back where they started.

use super::support::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::raw_h2::*;
use sidelb_tests::harness::*;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(10);

/// A header block with `fields` as given.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let bytes: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    header_block(&bytes)
}

/// The fields of a valid call, with `edit` applied.
fn request(edit: impl FnOnce(&mut Vec<(String, String)>)) -> Vec<u8> {
    let mut fields: Vec<(String, String)> = grpc_request_fields(ECHO)
        .into_iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    edit(&mut fields);
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    block(&borrowed)
}

/// What must be answered with GOAWAY and which code, after the preface and
/// (unless the case replaces it) the client's SETTINGS.
fn connection_errors() -> Vec<(&'static str, Vec<u8>, u32)> {
    let mut garbage = PREFACE.to_vec();
    garbage.extend(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut headers_first = PREFACE.to_vec();
    headers_first.extend(frame(HEADERS, END_HEADERS, 1, &request(|_| {})));
    let with_settings = |frames: Vec<u8>| {
        let mut out = PREFACE.to_vec();
        out.extend(settings(&[]));
        out.extend(frames);
        out
    };
    vec![
        ("garbage after the preface", garbage, PROTOCOL_ERROR),
        ("HEADERS before SETTINGS", headers_first, PROTOCOL_ERROR),
        (
            "DATA on stream 0",
            with_settings(frame(DATA, 0, 0, b"hello")),
            PROTOCOL_ERROR,
        ),
        (
            "a frame over the maximum frame size",
            with_settings(frame(DATA, 0, 1, &[0; 20_000])),
            FRAME_SIZE_ERROR,
        ),
        (
            "an HPACK index that does not exist",
            with_settings(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0x7f])),
            // RFC 9113 says COMPRESSION_ERROR; the h2 crate says PROTOCOL_ERROR.
            PROTOCOL_ERROR,
        ),
        (
            "SETTINGS_ENABLE_PUSH 2",
            with_settings(settings(&[(2, 2)])),
            PROTOCOL_ERROR,
        ),
        // The RFC's codes for the next three are FLOW_CONTROL_ERROR and
        // FRAME_SIZE_ERROR; the h2 crate says PROTOCOL_ERROR.
        (
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
            with_settings(settings(&[(4, 1 << 31)])),
            PROTOCOL_ERROR,
        ),
        (
            "a SETTINGS frame of 5 bytes",
            with_settings(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 1])),
            PROTOCOL_ERROR,
        ),
        (
            "a PING of 7 bytes",
            with_settings(frame(PING, 0, 0, &[0; 7])),
            PROTOCOL_ERROR,
        ),
        (
            "a zero WINDOW_UPDATE on the connection",
            with_settings(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])),
            PROTOCOL_ERROR,
        ),
        (
            "HEADERS on an even (server) stream id",
            with_settings(frame(HEADERS, END_HEADERS, 2, &request(|_| {}))),
            PROTOCOL_ERROR,
        ),
        // Malformed requests (RFC 9113 §8.2.1: a stream error) that the h2
        // crate makes connection errors.
        (
            "an uppercase header name",
            with_settings(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &request(|f| f.push(("X-Upper".into(), "1".into()))),
            )),
            PROTOCOL_ERROR,
        ),
        (
            "an unknown pseudo-header",
            with_settings(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &request(|f| f.insert(0, (":protocol-x".into(), "1".into()))),
            )),
            PROTOCOL_ERROR,
        ),
        (
            "CONTINUATION without HEADERS",
            with_settings(frame(CONTINUATION, END_HEADERS, 1, &request(|_| {}))),
            PROTOCOL_ERROR,
        ),
    ]
}

/// Requests that must be refused on their stream only.
fn stream_errors() -> Vec<(&'static str, Vec<u8>)> {
    let set = |name: &'static str, value: &'static str| {
        move |f: &mut Vec<(String, String)>| f.push((name.into(), value.into()))
    };
    vec![
        ("no :path", request(|f| f.retain(|(n, _)| n != ":path"))),
        (
            "a connection-specific header",
            request(set("connection", "keep-alive")),
        ),
        (
            "te other than trailers",
            request(|f| {
                for (name, value) in f.iter_mut() {
                    if name == "te" {
                        *value = "gzip".into();
                    }
                }
            }),
        ),
        (
            "a pseudo-header after a regular one",
            request(|f| {
                let authority = f.remove(3);
                f.push(authority);
            }),
        ),
    ]
}

/// Every grpc-status and grpc-message of a raw call's answer.
fn status(response: &PlainResponse) -> (Option<String>, Option<String>) {
    let field = |name: &str| {
        response
            .trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| response.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (field("grpc-status"), field("grpc-message"))
}

#[tokio::test]
async fn malformed_http2_gets_a_clear_error_and_nothing_leaks() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let listener = setup.proxy.upstream_addr(ECHO).expect("listener");
    let fds = setup.proxy.open_fds().expect("fds");
    let errors_before = metric(&setup.proxy, "sidelb_protocol_errors_total", &[]).await;

    let cases = connection_errors();
    for (what, bytes, code) in &cases {
        let mut conn = RawH2::connect_bare(listener).await.expect("connects");
        conn.send(bytes).await.expect("sent");
        let frames = conn
            .until_closed(STEP)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let goaway = frames
            .iter()
            .find(|f| f.kind == GOAWAY)
            .unwrap_or_else(|| panic!("{what}: no GOAWAY in {frames:?}"));
        assert_eq!(goaway.error_code(), Some(*code), "{what}: {goaway:?}");
    }
    let counted = wait_until("the protocol errors counted", WAIT, || async {
        let now = metric(&setup.proxy, "sidelb_protocol_errors_total", &[]).await;
        (now - errors_before >= cases.len() as f64).then_some(now)
    })
    .await
    .expect("counted");
    assert_eq!(counted - errors_before, cases.len() as f64);

    // Stream errors: that stream is reset, the connection goes on.
    for (what, block) in stream_errors() {
        let mut conn = RawH2::connect(listener).await.expect("connects");
        conn.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
            .expect("sent");
        let frames = conn
            .until(STEP, |f| {
                (f.stream == 1 && (f.kind == RST_STREAM || f.kind == HEADERS)) || f.kind == GOAWAY
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let last = frames.last().expect("a frame");
        assert_eq!(
            (last.kind, last.error_code()),
            (RST_STREAM, Some(PROTOCOL_ERROR)),
            "{what}: {frames:?}"
        );
        let calls_before = setup.backends[0].stats().await.expect("stats").calls;
        conn.send(&grpc_call(3, ECHO)).await.expect("sent");
        let frames = conn
            .until(STEP, |f| f.stream == 3 && f.flags & END_STREAM != 0)
            .await
            .expect("the valid call is answered");
        assert!(
            frames
                .iter()
                .all(|f| f.kind != RST_STREAM && f.kind != GOAWAY),
            "{frames:?}"
        );
        assert_eq!(
            setup.backends[0].stats().await.expect("stats").calls,
            calls_before + 1,
            "only the valid call reached the backend"
        );
    }

    // Still serving, nothing in flight, no descriptor left behind.
    let mut client = setup.client().await.expect("client");
    client
        .unary(EchoRequest::default())
        .await
        .expect("a normal call succeeds");
    drop(client);
    let view = setup
        .proxy
        .service_view(ECHO)
        .await
        .expect("view")
        .expect("echo");
    assert_eq!(view["in_flight"], 0, "{view}");
    wait_until(
        "the proxy's descriptors back to where they were",
        WAIT,
        || async { (setup.proxy.open_fds().ok()? <= fds).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {:?} open, {fds} before", setup.proxy.open_fds()));
}

#[tokio::test]
async fn malformed_grpc_framing_passes_untouched() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let backend = setup.backends[0].addr();
    let direct = RawGrpc::connect(backend, &backend.to_string())
        .await
        .expect("to the backend");
    let proxied = RawGrpc::connect(setup.proxy.upstream_addr(ECHO).expect("listener"), ECHO)
        .await
        .expect("through the proxy");
    let headers = [("content-type", "application/grpc"), ("te", "trailers")];
    for (what, body) in [
        (
            "a message shorter than its prefix",
            &[0u8, 0, 0, 0, 100, 1, 2, 3][..],
        ),
        (
            "a compressed flag without grpc-encoding",
            &[1, 0, 0, 0, 2, 8, 1],
        ),
        (
            "bytes that are no protobuf",
            &[0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        ),
        ("a prefix cut short", &[0, 0, 0]),
    ] {
        let body = bytes::Bytes::copy_from_slice(body);
        let path = "/sidelb.test.Echo/Unary";
        let straight = direct
            .request("POST", path, &headers, body.clone())
            .await
            .expect("answered directly");
        let through = proxied
            .request("POST", path, &headers, body)
            .await
            .expect("answered through the proxy");
        let (code, message) = status(&straight);
        assert!(
            code.as_deref().is_some_and(|c| c != "0"),
            "{what}: {straight:?}"
        );
        assert_eq!(status(&through), (code, message), "{what}: {through:?}");
        assert_eq!(
            through
                .headers
                .get("x-sidelb-backend")
                .map(|v| v.as_bytes()),
            Some(&b"a"[..]),
            "{what}: answered by the backend, not the proxy: {through:?}"
        );
    }
}
