//! The test backend, called directly: every method, metadata echo, large
//! messages, failures and delays behave as `proto/echo.proto` says, so that
//! proxy scenarios can rely on them.

use futures_util::StreamExt;
use sidelb_tests::echo::BACKEND_HEADER;
use sidelb_tests::echo::pb::{EchoReply, EchoRequest};
use sidelb_tests::harness::client::{self, Echo, request_channel};
use sidelb_tests::harness::{Backend, BackendOptions, RawGrpc, wait_until};
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request};

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(10);

async fn backend(name: &str) -> (Backend, Echo) {
    let backend = Backend::spawn(name, BackendOptions::default())
        .await
        .expect("backend starts");
    let client = client::connect(backend.addr()).await.expect("connects");
    (backend, client)
}

fn payload(bytes: &'static [u8]) -> EchoRequest {
    EchoRequest {
        payload: bytes.into(),
        ..Default::default()
    }
}

fn values(metadata: &MetadataMap, key: &str) -> Vec<String> {
    metadata
        .get_all(key)
        .iter()
        .map(|v| v.to_str().expect("ascii metadata").to_string())
        .collect()
}

#[tokio::test]
async fn unary_echoes_the_payload_and_names_the_backend() {
    let (_backend, mut client) = backend("alpha").await;
    let response = client.unary(payload(b"hello")).await.expect("unary call");
    assert_eq!(values(response.metadata(), BACKEND_HEADER), ["alpha"]);
    let reply = response.into_inner();
    assert_eq!(reply.backend, "alpha");
    assert_eq!(&reply.payload[..], b"hello");
    assert_eq!(
        (reply.sequence, reply.received, reply.received_bytes),
        (0, 1, 5)
    );
}

#[tokio::test]
async fn server_stream_sends_the_replies_asked_for() {
    let (_backend, mut client) = backend("alpha").await;
    let request = EchoRequest {
        reply_count: 7,
        ..payload(b"s")
    };
    let replies: Vec<EchoReply> = client
        .server_stream(request)
        .await
        .expect("stream starts")
        .into_inner()
        .map(|reply| reply.expect("each reply"))
        .collect()
        .await;
    let sequences: Vec<u64> = replies.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, (0..7).collect::<Vec<_>>());
    assert!(
        replies
            .iter()
            .all(|r| r.backend == "alpha" && &r.payload[..] == b"s")
    );
}

#[tokio::test]
async fn client_stream_counts_what_it_received() {
    let (_backend, mut client) = backend("alpha").await;
    let requests = futures_util::stream::iter((0..5).map(|_| payload(b"0123456789")));
    let reply = client
        .client_stream(requests)
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!((reply.received, reply.received_bytes), (5, 50));
    assert_eq!(
        &reply.payload[..],
        b"0123456789",
        "the last request shapes the reply"
    );
}

#[tokio::test]
async fn bidi_answers_each_message_as_it_arrives() {
    let (_backend, mut client) = backend("alpha").await;
    let (send, requests) = request_channel(1);
    let mut replies = client
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    // Each reply is read before the next message is sent: the backend answers
    // as messages arrive, not when the client is done.
    for (n, text) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
        let request = EchoRequest {
            payload: text.to_vec().into(),
            reply_count: 2,
            ..Default::default()
        };
        send.send(request).await.expect("send");
        for _ in 0..2 {
            let reply = replies.message().await.expect("reply").expect("not ended");
            assert_eq!(&reply.payload[..], text);
            assert_eq!(reply.received, n as u64 + 1);
        }
    }
    drop(send);
    assert!(replies.message().await.expect("clean end").is_none());
}

#[tokio::test]
async fn echo_metadata_comes_back_as_headers_and_trailers() {
    let (_backend, mut client) = backend("alpha").await;
    let mut request = Request::new(EchoRequest {
        reply_count: 2,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-echo-trace", "t-1".parse().expect("value"));
    request
        .metadata_mut()
        .insert("x-not-echoed", "no".parse().expect("value"));
    let response = client.server_stream(request).await.expect("stream starts");
    assert_eq!(values(response.metadata(), "x-echo-trace"), ["t-1"]);
    assert!(values(response.metadata(), "x-not-echoed").is_empty());
    let mut replies = response.into_inner();
    while replies.message().await.expect("reply").is_some() {}
    let trailers = replies.trailers().await.expect("trailers").expect("some");
    assert_eq!(values(&trailers, "x-echo-trace"), ["t-1"]);

    // A failure is a trailers-only response: its one header block has them.
    let mut failing = Request::new(EchoRequest {
        fail_code: Code::NotFound as i32,
        ..Default::default()
    });
    failing
        .metadata_mut()
        .insert("x-echo-trace", "t-2".parse().expect("value"));
    let status = client.unary(failing).await.expect_err("asked to fail");
    assert_eq!(values(status.metadata(), "x-echo-trace"), ["t-2"]);
    assert_eq!(values(status.metadata(), BACKEND_HEADER), ["alpha"]);
}

#[tokio::test]
async fn messages_over_4_mib_pass_both_ways() {
    let (_backend, mut client) = backend("alpha").await;
    let big = vec![7u8; 6 * MIB];
    let reply = client
        .unary(EchoRequest {
            payload: big.clone().into(),
            ..Default::default()
        })
        .await
        .expect("6 MiB echo")
        .into_inner();
    assert_eq!(reply.payload.len(), 6 * MIB);
    assert!(reply.payload.iter().all(|b| *b == 7));

    let request = EchoRequest {
        reply_size: (5 * MIB) as u32,
        reply_count: 2,
        ..Default::default()
    };
    let sizes: Vec<usize> = client
        .server_stream(request)
        .await
        .expect("stream starts")
        .into_inner()
        .map(|r| r.expect("5 MiB reply").payload.len())
        .collect()
        .await;
    assert_eq!(sizes, [5 * MIB, 5 * MIB]);

    let requests = futures_util::stream::iter((0..2).map(move |_| EchoRequest {
        payload: big.clone().into(),
        ..Default::default()
    }));
    let reply = client
        .client_stream(requests)
        .await
        .expect("12 MiB up")
        .into_inner();
    assert_eq!(reply.received_bytes, (12 * MIB) as u64);
}

#[tokio::test]
async fn requested_status_codes_come_back_and_are_counted() {
    let (backend, mut client) = backend("alpha").await;
    let codes = [
        Code::Unavailable,
        Code::Internal,
        Code::ResourceExhausted,
        Code::NotFound,
    ];
    for code in codes {
        let request = EchoRequest {
            fail_code: code as i32,
            fail_message: format!("asked for {code:?}"),
            ..Default::default()
        };
        let status = client.unary(request).await.expect_err("asked to fail");
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), format!("asked for {code:?}"));
    }

    // Mid-stream: the second message fails the bidi call after one reply.
    let requests = futures_util::stream::iter([
        payload(b"fine"),
        EchoRequest {
            fail_code: Code::Aborted as i32,
            ..Default::default()
        },
    ]);
    let mut replies = client
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    let first = replies.message().await.expect("first reply").expect("some");
    assert_eq!(&first.payload[..], b"fine");
    let status = replies.message().await.expect_err("then the failure");
    assert_eq!(status.code(), Code::Aborted);

    let stats = backend.stats().await.expect("stats");
    assert_eq!((stats.failed, stats.unary, stats.bidi), (5, 4, 1));
}

#[tokio::test]
async fn raw_calls_show_the_status_where_grpc_puts_it() {
    let (backend, _) = backend("alpha").await;
    let raw = RawGrpc::connect(backend.addr(), "echo.test:50051")
        .await
        .expect("connects");
    let ok = raw
        .call("Unary", &[], &[payload(b"raw")])
        .await
        .expect("answered");
    assert!(!ok.is_trailers_only());
    assert_eq!(ok.grpc_status(), Some(0), "{ok:?}");
    let replies: Vec<EchoReply> = ok.decode().expect("decodes");
    assert_eq!(&replies[0].payload[..], b"raw");

    let failing = EchoRequest {
        fail_code: Code::Unavailable as i32,
        fail_message: "down".into(),
        ..Default::default()
    };
    let failed = raw.call("Unary", &[], &[failing]).await.expect("answered");
    assert!(failed.is_trailers_only(), "{failed:?}");
    assert_eq!(failed.grpc_status(), Some(Code::Unavailable as i32));
    assert_eq!(failed.grpc_message(), Some("down"));
    assert_eq!(failed.status_field(BACKEND_HEADER), Some("alpha"));
}

#[tokio::test]
async fn a_delay_past_the_deadline_is_deadline_exceeded() {
    let (backend, _) = backend("alpha").await;
    let raw = RawGrpc::connect(backend.addr(), "echo.test:50051")
        .await
        .expect("connects");
    let slow = EchoRequest {
        delay_ms: 60_000,
        ..Default::default()
    };
    let response = raw
        .call("Unary", &[("grpc-timeout", "200m")], &[slow])
        .await
        .expect("answered at the deadline");
    assert_eq!(
        response.grpc_status(),
        Some(Code::DeadlineExceeded as i32),
        "{response:?}"
    );
    assert_eq!(response.status_field(BACKEND_HEADER), Some("alpha"));

    // A stream is cut at its deadline too, after the replies sent so far.
    let endless = EchoRequest {
        delay_ms: 20,
        reply_count: 100_000,
        ..Default::default()
    };
    let response = raw
        .call("ServerStream", &[("grpc-timeout", "300m")], &[endless])
        .await
        .expect("answered at the deadline");
    assert!(response.trailers.is_some() && response.messages.len() < 100_000);
    assert_eq!(
        response.grpc_status(),
        Some(Code::DeadlineExceeded as i32),
        "{response:?}"
    );

    // The abandoned calls do not stay in flight at the backend.
    wait_until("the expired calls to end", WAIT, || async {
        let stats = backend.stats().await.ok()?;
        (stats.in_flight == 0).then_some(())
    })
    .await
    .expect("calls ended");
}

#[tokio::test]
async fn a_slow_backend_delays_every_call() {
    let options = BackendOptions {
        delay: Duration::from_secs(60),
        ..Default::default()
    };
    let slow = Backend::spawn("slow", options).await.expect("starts");
    let raw = RawGrpc::connect(slow.addr(), "echo.test:50051")
        .await
        .expect("connects");
    for method in ["Unary", "ServerStream"] {
        let response = raw
            .call(
                method,
                &[("grpc-timeout", "200m")],
                &[EchoRequest::default()],
            )
            .await
            .expect("answered at the deadline");
        let status = response.grpc_status();
        assert_eq!(
            status,
            Some(Code::DeadlineExceeded as i32),
            "{method}: {response:?}"
        );
    }
}
