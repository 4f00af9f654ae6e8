//! The test backend as a process: flaky and stream-limited instances, a
//! graceful stop on SIGTERM, a crash on SIGKILL, and the harness's counting
//! of calls over several backends.

use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::client::{self, request_channel};
use sidelb_tests::harness::{
    Backend, BackendOptions, Load, LoadLimits, Tally, unary_calls, unary_calls_concurrently,
    wait_until,
};
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn fail_every_fails_exactly_every_nth_call() {
    let options = BackendOptions {
        fail_every: 3,
        fail_code: Some(Code::Internal),
        ..Default::default()
    };
    let flaky = Backend::spawn("flaky", options).await.expect("starts");
    let client = client::connect(flaky.addr()).await.expect("connects");
    let tally = unary_calls(&client, 9, &EchoRequest::default()).await;
    assert_eq!((tally.ok(), tally.count(Code::Internal)), (6, 3), "{tally}");
    assert_eq!(
        tally.served_by("flaky"),
        9,
        "failures are attributed: {tally}"
    );
    assert_eq!(tally.unattributed(), 0);
}

#[tokio::test]
async fn max_concurrent_streams_limits_calls_in_flight() {
    let options = BackendOptions {
        max_concurrent_streams: Some(1),
        ..Default::default()
    };
    let limited = Backend::spawn("limited", options).await.expect("starts");
    let client = client::connect(limited.addr()).await.expect("connects");
    let request = EchoRequest {
        delay_ms: 50,
        ..Default::default()
    };
    // The first call makes sure the server's SETTINGS have arrived: before
    // them a client may open more streams, which the server then refuses
    // (REFUSED_STREAM), as a real peer would.
    let warmup = unary_calls(&client, 1, &EchoRequest::default()).await;
    assert_eq!(warmup.ok(), 1, "{warmup}");
    let tally = unary_calls_concurrently(&client, 6, 3, &request).await;
    assert_eq!(tally.ok(), 6, "{tally}");
    let stats = limited.stats().await.expect("stats");
    assert_eq!(stats.peak_in_flight, 1, "the client was held to one stream");
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_exits_zero() {
    let mut backend = Backend::spawn("draining", BackendOptions::default())
        .await
        .expect("starts");
    let mut client = client::connect(backend.addr()).await.expect("connects");
    let (send, requests) = request_channel(1);
    let mut replies = client
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    send.send(EchoRequest::default()).await.expect("send");
    replies.message().await.expect("reply").expect("some");

    backend.terminate().expect("SIGTERM");
    backend.wait_draining().await.expect("draining");
    // New connections are refused once draining...
    let addr = backend.addr();
    wait_until("the listener to close", WAIT, || async move {
        tokio::net::TcpStream::connect(addr).await.err().map(drop)
    })
    .await
    .expect("listener closed");
    // ...while the call in flight goes on to its end.
    send.send(EchoRequest::default())
        .await
        .expect("send while draining");
    let reply = replies
        .message()
        .await
        .expect("reply while draining")
        .expect("some");
    assert_eq!(reply.received, 2);
    drop(send);
    assert!(replies.message().await.expect("clean end").is_none());

    let status = backend.wait_exit().await.expect("exits");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(backend.process().lines().contains(&"stopped".to_string()));
}

#[tokio::test]
async fn sigkill_breaks_calls_in_flight() {
    let backend = Backend::spawn("crashing", BackendOptions::default())
        .await
        .expect("starts");
    let mut client = client::connect(backend.addr()).await.expect("connects");
    let (send, requests) = request_channel(1);
    let mut replies = client
        .bidi(requests)
        .await
        .expect("bidi starts")
        .into_inner();
    send.send(EchoRequest::default()).await.expect("send");
    replies.message().await.expect("reply").expect("some");

    let status = backend.kill().expect("SIGKILL");
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    let _ = send.send(EchoRequest::default()).await;
    let broken = replies.message().await;
    assert!(broken.is_err(), "the stream broke: {broken:?}");
}

#[tokio::test]
async fn tallies_count_each_backend_separately() {
    let mut total = Tally::default();
    let mut backends = Vec::new();
    for (name, calls) in [("one", 3), ("two", 5), ("three", 7)] {
        let backend = Backend::spawn(name, BackendOptions::default())
            .await
            .expect("starts");
        let client = client::connect(backend.addr()).await.expect("connects");
        total.merge(&unary_calls(&client, calls, &EchoRequest::default()).await);
        backends.push(backend);
    }
    assert_eq!(total.total(), 15);
    assert_eq!(
        [
            total.served_by("one"),
            total.served_by("two"),
            total.served_by("three")
        ],
        [3, 5, 7]
    );
    for backend in &backends {
        let stats = backend.stats().await.expect("stats");
        assert_eq!(stats.unary, total.served_by(backend.name()));
    }
}

#[tokio::test]
async fn load_stops_at_its_call_limit() {
    let backend = Backend::spawn("loaded", BackendOptions::default())
        .await
        .expect("starts");
    let client = client::connect(backend.addr()).await.expect("connects");
    let limits = LoadLimits {
        concurrency: 4,
        max_calls: 50,
        max_duration: Duration::from_secs(60),
    };
    let load = Load::start(&client, EchoRequest::default(), limits);
    wait_until("the load to finish", WAIT, || async {
        load.is_finished().then_some(())
    })
    .await
    .expect("finished");
    let tally = load.stop().await;
    assert_eq!(
        (tally.total(), tally.served_by("loaded")),
        (50, 50),
        "{tally}"
    );
}
