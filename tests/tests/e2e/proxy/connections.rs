//! Endpoint connections: when a pod's `MAX_CONCURRENT_STREAMS` is reached,
//! the proxy opens a further connection to it instead of queueing every
//! call behind the limit, and no call fails for it.

use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_stream_limit_opens_another_connection() {
    let limit = 2;
    let backend = BackendOptions {
        max_concurrent_streams: Some(limit),
        ..BackendOptions::default()
    };
    let setup = EchoSetup::start(&["a"], backend, &[]).await.expect("setup");
    let client = setup.client().await.expect("one connection");
    let a = setup.backend("a");

    // More calls at once than one connection may carry; each waits in the
    // backend long enough for them to overlap.
    let slow = EchoRequest {
        delay_ms: 300,
        ..EchoRequest::default()
    };
    let calls = 8;
    let running = {
        let client = client.clone();
        tokio::spawn(async move {
            unary_calls_concurrently(&client, calls, calls as usize, &slow).await
        })
    };
    wait_until("a second connection to the backend", WAIT, || async {
        let view = setup.proxy.service_view(ECHO).await.ok()??;
        let connections = view["endpoints"][0]["connections"].as_u64()?;
        (connections > 1).then_some(())
    })
    .await
    .expect("the proxy opened another connection");
    let tally = running.await.expect("calls finish");
    assert_eq!(tally.ok(), calls, "every call succeeds: {tally}");
    assert_eq!(tally.served_by("a"), calls, "{tally}");
    let stats = a.stats().await.expect("stats");
    assert!(
        stats.peak_in_flight > u64::from(limit),
        "calls ran side by side on several connections, not {limit} at a time: peak {}",
        stats.peak_in_flight
    );
}
