//! Every kind of gRPC call passes through the proxy intact.
//!
//! - unary, server, client and bidi streaming: every message, in order, all
//!   replies of one call from one backend; a bidi call is interactive (each
//!   reply comes before the next message is sent, so nothing waits for the
//!   whole request stream);
//! - metadata both ways: request metadata reaches the backend, response
//!   headers and trailers come back; statuses, percent-encoded messages and
//!   trailers-only failures pass unchanged, mid-stream failures too;
//! - messages of 4 MiB and more in both directions, on every call kind;
//! - flow control end to end: a client that does not read a large server
//!   stream holds the backend back (its count of replies produced stops a
//!   few messages ahead) instead of the proxy buffering it, and the proxy's
//!   memory does not grow with the stream.

use futures_util::StreamExt;
use sidelb_tests::echo::BACKEND_HEADER;
use sidelb_tests::echo::pb::{EchoReply, EchoRequest};
use sidelb_tests::harness::client::request_channel;
use sidelb_tests::harness::*;
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request};

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(10);

fn values(metadata: &MetadataMap, key: &str) -> Vec<String> {
    metadata
        .get_all(key)
        .iter()
        .map(|v| v.to_str().expect("ascii metadata").to_string())
        .collect()
}

fn payload(bytes: &[u8]) -> EchoRequest {
    EchoRequest {
        payload: bytes.to_vec().into(),
        ..Default::default()
    }
}

/// The one backend that sent all of `replies`.
fn one_backend(replies: &[EchoReply]) -> String {
    let first = replies.first().expect("some replies").backend.clone();
    assert!(
        replies.iter().all(|r| r.backend == first),
        "one call, one backend"
    );
    first
}

async fn two_backends() -> (EchoSetup, Echo) {
    let setup = EchoSetup::start(&["a", "b"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let client = setup.client().await.expect("one connection");
    (setup, client)
}

#[tokio::test]
async fn every_call_kind_is_intact() {
    let (setup, mut client) = two_backends().await;

    let reply = client.unary(payload(b"hello")).await.expect("unary");
    let reply = reply.into_inner();
    assert_eq!((&reply.payload[..], reply.received), (&b"hello"[..], 1));

    let request = EchoRequest {
        reply_count: 50,
        ..payload(b"s")
    };
    let replies: Vec<EchoReply> = client
        .server_stream(request)
        .await
        .expect("server stream")
        .into_inner()
        .map(|r| r.expect("each reply"))
        .collect()
        .await;
    let sequences: Vec<u64> = replies.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, (0..50).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| &r.payload[..] == b"s"));
    one_backend(&replies);

    let requests = futures_util::stream::iter((0..20u8).map(|i| payload(&[i; 10])));
    let reply = client
        .client_stream(requests)
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!((reply.received, reply.received_bytes), (20, 200));
    assert_eq!(
        &reply.payload[..],
        &[19u8; 10],
        "the last message shapes it"
    );

    // Interactive: each reply is read before the next message is sent.
    let (send, requests) = request_channel(1);
    let mut replies = client
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    let mut seen = Vec::new();
    for n in 1..=5u64 {
        let text = format!("m{n}");
        let request = EchoRequest {
            reply_count: 2,
            ..payload(text.as_bytes())
        };
        send.send(request).await.expect("send");
        for _ in 0..2 {
            let reply = tokio::time::timeout(WAIT, replies.message())
                .await
                .expect("a reply before the next message is sent")
                .expect("reply")
                .expect("not ended");
            assert_eq!(
                (reply.payload.as_ref(), reply.received),
                (text.as_bytes(), n)
            );
            seen.push(reply);
        }
    }
    drop(send);
    assert!(replies.message().await.expect("clean end").is_none());
    assert_eq!(
        seen.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    one_backend(&seen);

    // Both backends served these calls: they really went through balancing.
    let served: u64 = {
        let mut total = 0;
        for backend in &setup.backends {
            total += backend.stats().await.expect("stats").calls;
        }
        total
    };
    assert_eq!(served, 4, "each call reached exactly one backend");
}

#[tokio::test]
async fn metadata_statuses_and_trailers_pass_both_ways() {
    let (_setup, mut client) = two_backends().await;
    let mut request = Request::new(EchoRequest {
        reply_count: 3,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-echo-trace", "t-1".parse().expect("value"));
    request.metadata_mut().insert_bin(
        "x-echo-raw-bin",
        tonic::metadata::MetadataValue::from_bytes(&[0, 159, 255]),
    );
    let response = client.server_stream(request).await.expect("stream starts");
    let headers = response.metadata().clone();
    assert_eq!(
        values(&headers, "x-echo-trace"),
        ["t-1"],
        "request metadata reached the backend and came back"
    );
    assert_eq!(
        headers
            .get_bin("x-echo-raw-bin")
            .map(|v| v.to_bytes().expect("base64")),
        Some(bytes::Bytes::from_static(&[0, 159, 255])),
        "binary metadata intact"
    );
    let mut replies = response.into_inner();
    let mut backend = String::new();
    while let Some(reply) = replies.message().await.expect("reply") {
        backend = reply.backend;
    }
    assert_eq!(values(&headers, BACKEND_HEADER), [backend]);
    let trailers = replies.trailers().await.expect("trailers").expect("some");
    assert_eq!(
        values(&trailers, "x-echo-trace"),
        ["t-1"],
        "trailers came through"
    );
    assert_eq!(
        values(&trailers, "grpc-status"),
        ["0"],
        "the status, in the trailers"
    );

    // A backend's failure (trailers-only): code, message and metadata as sent,
    // the message percent-encoded on the wire and decoded intact.
    let message = "asked to fail: 100 % ünïcode\nsecond line";
    let mut failing = Request::new(EchoRequest {
        fail_code: Code::FailedPrecondition as i32,
        fail_message: message.into(),
        ..Default::default()
    });
    failing
        .metadata_mut()
        .insert("x-echo-trace", "t-2".parse().expect("value"));
    let status = client.unary(failing).await.expect_err("asked to fail");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), message);
    assert_eq!(values(status.metadata(), "x-echo-trace"), ["t-2"]);
    assert_eq!(
        values(status.metadata(), BACKEND_HEADER).len(),
        1,
        "from a backend"
    );

    // Mid-stream: replies, then the failure in the trailers.
    let requests = futures_util::stream::iter([
        payload(b"fine"),
        payload(b"still fine"),
        EchoRequest {
            fail_code: Code::Aborted as i32,
            fail_message: "third one".into(),
            ..Default::default()
        },
    ]);
    let mut replies = client
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    for expected in [&b"fine"[..], b"still fine"] {
        let reply = replies.message().await.expect("a reply").expect("some");
        assert_eq!(&reply.payload[..], expected);
    }
    let status = replies.message().await.expect_err("then the failure");
    assert_eq!(
        (status.code(), status.message()),
        (Code::Aborted, "third one")
    );
}

#[tokio::test]
async fn messages_over_4_mib_pass_both_ways() {
    let (_setup, mut client) = two_backends().await;
    let big: bytes::Bytes = (0..6 * MIB)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();

    let reply = client
        .unary(EchoRequest {
            payload: big.clone(),
            ..Default::default()
        })
        .await
        .expect("6 MiB up and back")
        .into_inner();
    assert!(reply.payload == big, "6 MiB echoed byte for byte");

    let request = EchoRequest {
        reply_size: (5 * MIB) as u32,
        reply_count: 3,
        ..Default::default()
    };
    let sizes: Vec<usize> = client
        .server_stream(request)
        .await
        .expect("server stream")
        .into_inner()
        .map(|r| r.expect("5 MiB reply").payload.len())
        .collect()
        .await;
    assert_eq!(sizes, [5 * MIB; 3]);

    let up = big.clone();
    let requests = futures_util::stream::iter((0..3).map(move |_| EchoRequest {
        payload: up.clone(),
        ..Default::default()
    }));
    let reply = client
        .client_stream(requests)
        .await
        .expect("18 MiB up")
        .into_inner();
    assert_eq!(
        (reply.received, reply.received_bytes),
        (3, (18 * MIB) as u64)
    );
    assert!(reply.payload == big, "the last 6 MiB message echoed intact");

    let requests = futures_util::stream::iter((0..2).map(move |_| EchoRequest {
        payload: big.clone(),
        ..Default::default()
    }));
    let sizes: Vec<usize> = client
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner()
        .map(|r| r.expect("6 MiB back").payload.len())
        .collect()
        .await;
    assert_eq!(sizes, [6 * MIB; 2]);
}

/// Replies of the backpressure test, 1 MiB each: far more than every
/// flow-control window and socket buffer between the backend and the client.
const STREAMED: u32 = 96;
/// How far the backend may run ahead of the reader: the windows on both
/// sides of the proxy hold about 3 MiB, the backend's own buffers a couple
/// of messages.
const AHEAD: u64 = 16;
/// Growth of the proxy's memory allowed while the stream is held: a third
/// of the stream (it would hold most of it if it buffered).
const GROWTH: u64 = 32 * MIB as u64;

#[tokio::test]
async fn a_reader_that_stops_holds_back_the_backend_not_the_proxy_memory() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let backend = &setup.backends[0];
    let mut client = setup.client().await.expect("one connection");
    // Warm up the proxy's buffers with one large message each way first.
    client
        .unary(EchoRequest {
            payload: vec![1; 5 * MIB].into(),
            reply_size: (5 * MIB) as u32,
            ..Default::default()
        })
        .await
        .expect("warm-up");
    let baseline = setup.proxy.rss_bytes().expect("rss");
    let before = backend.stats().await.expect("stats").replies;

    let request = EchoRequest {
        reply_size: MIB as u32,
        reply_count: STREAMED,
        ..Default::default()
    };
    let mut replies = client
        .server_stream(request)
        .await
        .expect("stream starts")
        .into_inner();
    let first = replies.message().await.expect("first").expect("some");
    assert_eq!(first.sequence, 0);
    let produced = || async { backend.stats().await.ok().map(|s| s.replies - before) };

    // The client reads nothing more. Nothing may pile up meanwhile: the
    // backend stays a few replies ahead, the proxy's memory flat. (Without
    // flow control the whole stream would pass in well under a second; this
    // check waits its full bound, the only one here that does.)
    let piled_up = wait_until(
        "the stream to pile up",
        Duration::from_millis(1500),
        || async {
            let ahead = produced().await? > 1 + AHEAD;
            let grown = setup.proxy.rss_bytes().ok()? > baseline + GROWTH;
            (ahead || grown).then_some(())
        },
    )
    .await;
    assert!(
        piled_up.is_err(),
        "with the reader stopped, the backend produced {:?} replies and the proxy grew from {baseline} to {:?} bytes",
        produced().await,
        setup.proxy.rss_bytes()
    );
    assert!(
        produced().await.expect("stats") > 1,
        "the backend did go on until held back"
    );

    // Then the client reads it all, intact and in order; the backend never
    // runs far ahead.
    let mut read = 1u64;
    while let Some(reply) = replies.message().await.expect("reply") {
        assert_eq!((reply.sequence, reply.payload.len()), (read, MIB));
        read += 1;
        if read.is_multiple_of(8) {
            let ahead = produced().await.expect("stats");
            assert!(ahead <= read + AHEAD, "{ahead} produced, {read} read");
        }
    }
    assert_eq!(read, u64::from(STREAMED));
    let after = setup.proxy.rss_bytes().expect("rss");
    assert!(
        after <= baseline + GROWTH,
        "the proxy grew from {baseline} to {after} bytes"
    );
}
