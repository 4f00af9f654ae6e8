//! Deadlines and cancellation across the proxy.
//!
//! - a call whose backend takes longer than its `grpc-timeout` ends with
//!   DEADLINE_EXCEEDED, unary and mid-stream alike, and nothing is left in
//!   flight;
//! - the proxy honours the deadline itself: when the backend cannot answer
//!   (stopped with SIGSTOP), the proxy answers at the deadline, before any
//!   response a trailers-only response (`grpc-status` 4, a message naming
//!   the service, no backend's name), mid-stream trailers after the replies
//!   so far; the backend is used again once it runs;
//! - a client that cancels a call (unary, or a stream half read) has the
//!   cancellation passed on: the backend's call ends at once, where its
//!   minute-long delay would have kept it in flight.

use futures_util::FutureExt;
use sidelb_tests::echo::BACKEND_HEADER;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);
const MINUTE_MS: u32 = 60_000;

/// Waits until `backend` has exactly `n` calls in flight.
async fn wait_in_flight(backend: &Backend, n: u64) {
    wait_until(
        &format!("{} to have {n} calls in flight", backend.name()),
        WAIT,
        || async { (backend.stats().await.ok()?.in_flight == n).then_some(()) },
    )
    .await
    .expect("in flight");
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded_and_cancelled() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let backend = &setup.backends[0];
    let addr = setup.proxy.upstream_addr(ECHO).expect("listener");
    // At the HTTP/2 level: a gRPC library would also time the call out on
    // its own side, and then nothing would be learnt about the proxy.
    let raw = RawGrpc::connect(addr, ECHO).await.expect("connects");

    let slow = EchoRequest {
        delay_ms: MINUTE_MS,
        ..Default::default()
    };
    let response = raw
        .call("Unary", &[("grpc-timeout", "300m")], &[slow])
        .await
        .expect("answered at the deadline");
    assert_eq!(
        response.grpc_status(),
        Some(Code::DeadlineExceeded as i32),
        "{response:?}"
    );
    wait_in_flight(backend, 0).await;

    // Mid-stream: the replies so far, then DEADLINE_EXCEEDED in the trailers.
    let endless = EchoRequest {
        reply_count: 1000,
        delay_ms: 50,
        ..Default::default()
    };
    let response = raw
        .call("ServerStream", &[("grpc-timeout", "500m")], &[endless])
        .await
        .expect("answered at the deadline");
    assert!(response.trailers.is_some(), "{response:?}");
    assert!(
        (1..1000).contains(&response.messages.len()),
        "{} replies before the deadline",
        response.messages.len()
    );
    assert_eq!(
        response.grpc_status(),
        Some(Code::DeadlineExceeded as i32),
        "{response:?}"
    );
    wait_in_flight(backend, 0).await;
    assert_eq!(backend.stats().await.expect("stats").calls, 2);
}

#[tokio::test]
async fn the_proxy_answers_a_deadline_itself_when_the_backend_cannot() {
    let mut setup = EchoSetup::start(&["stuck"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let addr = setup.proxy.upstream_addr(ECHO).expect("listener");
    let raw = RawGrpc::connect(addr, ECHO).await.expect("connects");
    let stuck = &mut setup.backends[0];
    stuck.process().signal(libc::SIGSTOP).expect("SIGSTOP");

    let response = raw
        .call(
            "Unary",
            &[("grpc-timeout", "300m")],
            &[EchoRequest::default()],
        )
        .await
        .expect("answered at the deadline");
    assert!(response.is_trailers_only(), "{response:?}");
    assert_eq!(response.status, 200);
    assert_eq!(response.grpc_status(), Some(Code::DeadlineExceeded as i32));
    assert_eq!(
        response.status_field(BACKEND_HEADER),
        None,
        "made by the proxy"
    );
    let message = response.grpc_message().expect("a message");
    assert!(
        message.contains(ECHO) && message.contains("deadline"),
        "{message}"
    );

    // Mid-stream: the backend stops after its first replies.
    stuck.process().signal(libc::SIGCONT).expect("SIGCONT");
    let backend = &setup.backends[0];
    wait_in_flight(backend, 0).await;
    let before = backend.stats().await.expect("stats").replies;
    let stream = tokio::spawn(async move {
        let endless = EchoRequest {
            reply_count: 1000,
            delay_ms: 50,
            ..Default::default()
        };
        let response = raw
            .call("ServerStream", &[("grpc-timeout", "2S")], &[endless])
            .await;
        (raw, response)
    });
    wait_until("two replies", WAIT, || async {
        (backend.stats().await.ok()?.replies >= before + 2).then_some(())
    })
    .await
    .expect("the stream runs");
    let stuck = &mut setup.backends[0];
    stuck.process().signal(libc::SIGSTOP).expect("SIGSTOP");
    let (raw, response) = stream.await.expect("joined");
    stuck.process().signal(libc::SIGCONT).expect("SIGCONT");
    let response = response.expect("answered at the deadline");
    assert!(response.messages.len() >= 2, "{response:?}");
    let trailers = response
        .trailers
        .as_ref()
        .expect("trailers after the replies");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"4"[..])
    );
    let message = response.grpc_message().expect("a message");
    assert!(
        message.contains(ECHO) && message.contains("deadline"),
        "{message}"
    );

    // Running again, the backend serves on the same connection as before.
    let again = raw
        .call("Unary", &[], &[EchoRequest::default()])
        .await
        .expect("answered");
    assert_eq!(again.grpc_status(), Some(0), "{again:?}");
    assert_eq!(
        again.headers.get(BACKEND_HEADER).map(|v| v.as_bytes()),
        Some(&b"stuck"[..])
    );
}

#[tokio::test]
async fn a_client_cancellation_reaches_the_backend() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let backend = &setup.backends[0];
    let client = setup.client().await.expect("connects");

    // A unary call, dropped while the backend works on it.
    let mut caller = client.clone();
    let call = tokio::spawn(async move {
        caller
            .unary(EchoRequest {
                delay_ms: MINUTE_MS,
                ..Default::default()
            })
            .await
    });
    wait_in_flight(backend, 1).await;
    call.abort();
    wait_in_flight(backend, 0).await;

    // A server stream, dropped half read.
    let mut caller = client.clone();
    let mut replies = caller
        .server_stream(EchoRequest {
            reply_count: 3,
            delay_ms: MINUTE_MS / 3,
            ..Default::default()
        })
        .await
        .expect("the stream starts")
        .into_inner();
    wait_in_flight(backend, 1).await;
    assert!(
        replies.message().now_or_never().is_none(),
        "nothing to read yet"
    );
    drop(replies);
    wait_in_flight(backend, 0).await;

    // The connection is still good for more calls.
    let mut caller = client.clone();
    let reply = caller.unary(EchoRequest::default()).await.expect("unary");
    assert_eq!(reply.into_inner().backend, "a");
    let stats = backend.stats().await.expect("stats");
    assert_eq!((stats.unary, stats.server_stream), (2, 1));
}
