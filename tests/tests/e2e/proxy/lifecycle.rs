//! Stopping the proxy the way Kubernetes stops a pod.
//!
//! - SIGTERM: new connections are refused and `/ready` says it is shutting
//!   down, while the call in flight goes on to a clean end; then the proxy
//!   exits with status 0;
//! - the drain is bounded (`SIDELB_DRAIN_TIMEOUT`): a call that never ends
//!   does not keep the proxy alive (it is ended with a reason, see
//!   `shutdown_grace`), and it still exits with 0;
//! - with `SIDELB_SHUTDOWN_GRACE`, new connections and calls are still
//!   served during the grace (a classic sidecar, whose app is stopped at the
//!   same time), then it drains as above: calls opened before SIGTERM and
//!   during the grace both end cleanly, and it exits with 0. (A native
//!   sidecar is stopped after the app and drains at once, the first case.)

use sidelb_tests::echo::pb::{EchoReply, EchoRequest};
use sidelb_tests::harness::client::request_channel;
use sidelb_tests::harness::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(10);

/// A bidi call held open by the test.
async fn hold(client: &Echo) -> (Sender<EchoRequest>, Streaming<EchoReply>) {
    let (send, requests) = request_channel(1);
    let mut replies = client
        .clone()
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    send.send(EchoRequest::default()).await.expect("sent");
    replies.message().await.expect("reply").expect("some");
    (send, replies)
}

async fn wait_refused(addr: SocketAddr) {
    wait_until(
        &format!("{addr} to refuse connections"),
        WAIT,
        || async move { tokio::net::TcpStream::connect(addr).await.err().map(drop) },
    )
    .await
    .expect("refused");
}

#[tokio::test]
async fn sigterm_refuses_new_connections_finishes_calls_and_exits_zero() {
    let mut setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let client = setup.client().await.expect("connects");
    let (send, mut replies) = hold(&client).await;

    setup.proxy.terminate().expect("SIGTERM");
    wait_refused(setup.proxy.upstream_addr(ECHO).expect("listener")).await;
    wait_refused(setup.proxy.outbound_addr()).await;
    let (status, body) = setup
        .proxy
        .admin_get("/ready")
        .await
        .expect("admin still up");
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    assert!(
        setup.proxy.process().try_wait().expect("status").is_none(),
        "still running while a call is in flight"
    );

    // The call in flight goes on, and ends cleanly.
    send.send(EchoRequest::default()).await.expect("sent");
    let reply = replies.message().await.expect("reply").expect("some");
    assert_eq!(reply.received, 2);
    drop(send);
    assert!(replies.message().await.expect("clean end").is_none());

    let status = setup.proxy.wait_exit().await.expect("exits");
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(setup.backends[0].stats().await.expect("stats").in_flight, 0);
}

#[tokio::test]
async fn the_drain_is_bounded() {
    let mut setup = EchoSetup::start(
        &["a"],
        BackendOptions::default(),
        &[("SIDELB_DRAIN_TIMEOUT", "1s")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("connects");
    let (_send, mut replies) = hold(&client).await;

    setup.proxy.terminate().expect("SIGTERM");
    let status = setup
        .proxy
        .wait_exit()
        .await
        .expect("exits despite the call");
    assert_eq!(status.code(), Some(0), "{status}");
    let end = tokio::time::timeout(WAIT, replies.message())
        .await
        .expect("the call ends with the proxy");
    assert!(end.is_err(), "the unfinished call is ended: {end:?}");
}

#[tokio::test]
async fn during_the_shutdown_grace_new_calls_are_served() {
    let setup = EchoSetup::start(
        &["a", "b"],
        BackendOptions::default(),
        &[("SIDELB_SHUTDOWN_GRACE", "60s")],
    )
    .await
    .expect("setup");
    terminate_into_grace(&setup).await;

    // A new connection, and calls on it, balanced as before.
    let client = setup.client().await.expect("new connections are accepted");
    let tally = unary_calls(&client, 50, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 50, "{tally}");
    assert_eq!(tally.backends().len(), 2, "{tally}");
    let by_authority = client::connect_with_authority(setup.proxy.outbound_addr(), ECHO)
        .await
        .expect("the authority listener too");
    assert_eq!(
        unary_calls(&by_authority, 5, &EchoRequest::default())
            .await
            .ok(),
        5
    );
}

/// A classic sidecar's shutdown from start to end: the proxy and the app get
/// SIGTERM together; through the grace the app's new connections and calls
/// are served (its own shutdown may still need the proxy), then the proxy
/// drains like a native sidecar does at once: new connections refused, every
/// call already in flight (opened before SIGTERM or during the grace) goes on
/// to a clean end, exit 0.
#[tokio::test]
async fn a_classic_sidecar_serves_through_its_grace_then_drains() {
    let mut setup = EchoSetup::start(
        &["a", "b"],
        BackendOptions::default(),
        &[("SIDELB_SHUTDOWN_GRACE", "2s")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("connects");
    let mut before = OpenCall::open(&client)
        .await
        .expect("a call before SIGTERM");

    terminate_into_grace(&setup).await;
    let late = setup
        .client()
        .await
        .expect("a new connection during the grace");
    let tally = unary_calls(&late, 20, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 20, "{tally}");
    let mut during = OpenCall::open(&late)
        .await
        .expect("a call during the grace");
    let (status, _) = setup.proxy.admin_get("/ready").await.expect("admin");
    assert_eq!(status.as_u16(), 200, "still ready during the grace");

    // The grace is over: draining.
    wait_until("the drain to start", WAIT, || async {
        let (status, _) = setup.proxy.admin_get("/ready").await.ok()?;
        (status.as_u16() == 503).then_some(())
    })
    .await
    .expect("draining");
    wait_refused(setup.proxy.upstream_addr(ECHO).expect("listener")).await;
    for call in [&mut before, &mut during] {
        let reply = call.exchange().await.expect("the call goes on");
        assert_eq!(reply.received, 2);
    }
    before.finish().await.expect("ends cleanly");
    during.finish().await.expect("ends cleanly");
    let status = setup.proxy.wait_exit().await.expect("exits");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Sends SIGTERM and waits until the proxy says it is in its shutdown grace.
async fn terminate_into_grace(setup: &EchoSetup) {
    setup.proxy.terminate().expect("SIGTERM");
    wait_until("the proxy to start its grace", WAIT, || async {
        setup
            .proxy
            .logs()
            .contains("SIDELB_SHUTDOWN_GRACE")
            .then_some(())
    })
    .await
    .expect("in its grace");
}
