//! HTTP/2 abuse from the app side, frame by frame ([`raw_h2`]):
//!
//! - a rapid-reset flood (HEADERS then RST_STREAM, over and over, on one
//!   connection) is answered with GOAWAY ENHANCE_YOUR_CALM, none of its
//!   streams reaches the backend (h2 counts streams reset before they are
//!   accepted and gives up on the connection past its budget), and the
//!   proxy serves the next connection as before;
//! - one connection carries at most [`APP_MAX_CONCURRENT_STREAMS`] streams
//!   at once: the proxy advertises it in its SETTINGS, refuses a stream over
//!   it with REFUSED_STREAM before anything reaches a backend, takes a new
//!   one once one ends, and another connection is served meanwhile.
//!
//! The streams are `Bidi` calls, which the backend counts (`in_flight`,
//! `calls`) from their request head on, so a stream that reached it shows.

use sidelb_config::names::APP_MAX_CONCURRENT_STREAMS;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::raw_h2::*;
use sidelb_tests::harness::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const ENHANCE_YOUR_CALM: u32 = 0xb;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// HEADERS+RST_STREAM pairs sent at most: several times what h2 lets by.
const FLOOD: u32 = 5000;

/// HEADERS opening a `Bidi` call on `stream`, the request body left open.
fn open_bidi(stream: u32) -> Vec<u8> {
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/sidelb.test.Echo/Bidi"),
        (b":authority", ECHO.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    frame(HEADERS, END_HEADERS, stream, &header_block(&fields))
}

fn reset(stream: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes())
}

/// The proxy's SETTINGS, read (and acknowledged) first on a new connection.
async fn server_settings(h2: &mut RawH2) -> Vec<(u16, u32)> {
    let frames = h2
        .until(WAIT, |f| f.kind == SETTINGS && f.flags & ACK == 0)
        .await
        .expect("the proxy's SETTINGS");
    let payload = &frames.last().expect("a frame").payload;
    payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

async fn backend_counts(setup: &EchoSetup) -> (u64, u64) {
    let stats = setup.backend("a").stats().await.expect("stats");
    (stats.calls, stats.in_flight)
}

async fn still_served(setup: &EchoSetup) {
    let client = setup.client().await.expect("a new connection");
    let tally = unary_calls(&client, 10, &EchoRequest::default()).await;
    assert_eq!(tally.served_by("a"), 10, "{tally}");
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_enhance_your_calm_and_holds_nothing_at_the_backend() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let mut h2 = RawH2::connect(setup.proxy.outbound_addr())
        .await
        .expect("connects");
    server_settings(&mut h2).await;

    let mut sent = 0;
    'flood: for batch in 0..FLOOD / 100 {
        let mut bytes = Vec::new();
        for i in 0..100 {
            let stream = 2 * (batch * 100 + i) + 1;
            bytes.extend(open_bidi(stream));
            bytes.extend(reset(stream));
        }
        if h2.send(&bytes).await.is_err() {
            break 'flood;
        }
        sent += 100;
    }
    let frames = h2
        .until(WAIT, |f| f.kind == GOAWAY)
        .await
        .unwrap_or_else(|e| panic!("GOAWAY after {sent} pairs: {e:#}"));
    let goaway = frames.last().expect("GOAWAY");
    assert_eq!(
        goaway.error_code(),
        Some(ENHANCE_YOUR_CALM),
        "after {sent} pairs: {goaway:?}"
    );
    let last_stream = u32::from_be_bytes(goaway.payload[..4].try_into().expect("last stream id"));
    h2.until_closed(WAIT).await.expect("the proxy closes it");

    // Whatever reached the backend before the GOAWAY was cancelled with it.
    wait_until("no flood stream left at the backend", WAIT, || async {
        let (_, in_flight) = backend_counts(&setup).await;
        (in_flight == 0).then_some(())
    })
    .await
    .expect("the backend holds nothing");
    let (calls, _) = backend_counts(&setup).await;
    eprintln!(
        "rapid reset: GOAWAY after {} pairs (last stream {last_stream}); {calls} reached the backend",
        last_stream.div_ceil(2)
    );
    assert_eq!(calls, 0, "no flood stream reached the backend");
    still_served(&setup).await;
}

#[tokio::test]
async fn one_connection_carries_at_most_the_stream_limit_and_another_still_gets_through() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let outbound = setup.proxy.outbound_addr();
    let mut h2 = RawH2::connect(outbound).await.expect("connects");
    let settings = server_settings(&mut h2).await;
    assert!(
        settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, APP_MAX_CONCURRENT_STREAMS)),
        "advertised: {settings:?}"
    );

    let limit = APP_MAX_CONCURRENT_STREAMS;
    let mut bytes = Vec::new();
    for i in 0..limit {
        bytes.extend(open_bidi(2 * i + 1));
    }
    h2.send(&bytes).await.expect("streams up to the limit");
    let held = u64::from(limit);
    wait_until("the limit's streams at the backend", WAIT, || async {
        let (_, in_flight) = backend_counts(&setup).await;
        (in_flight == held).then_some(())
    })
    .await
    .expect("every stream reaches the backend");

    // One more on the same connection: refused, never sent on.
    let over = 2 * limit + 1;
    h2.send(&open_bidi(over)).await.expect("one more");
    let frames = h2
        .until(WAIT, |f| f.kind == RST_STREAM && f.stream == over)
        .await
        .expect("the stream over the limit is reset");
    assert_eq!(
        frames.last().and_then(Frame::error_code),
        Some(REFUSED_STREAM)
    );
    assert_eq!(backend_counts(&setup).await, (held, held));

    // Another connection is not held back by this one.
    still_served(&setup).await;

    // One ends; the connection takes a new stream again.
    h2.send(&reset(1)).await.expect("reset one");
    let next = over + 2;
    wait_until("a place on the connection again", WAIT, || async {
        let (calls, in_flight) = backend_counts(&setup).await;
        (in_flight == held - 1 && calls == held + 10).then_some(())
    })
    .await
    .expect("the reset stream ends at the backend");
    h2.send(&open_bidi(next)).await.expect("a new stream");
    wait_until("the new stream at the backend", WAIT, || async {
        let (calls, in_flight) = backend_counts(&setup).await;
        (in_flight == held && calls == held + 11).then_some(())
    })
    .await
    .expect("the new stream is served");
}
