//! Slow start: an endpoint added while the service is in use gets a share
//! that ramps up over `SIDELB_SLOW_START`, so a cold pod is not flooded.
//!
//! Backends a and b serve a steady load; c is added. The proxy's
//! `/endpoints` says how much of c's slow start is left, and the test counts
//! calls in windows chosen by that state, not by time: early windows that
//! begin and end within the first 30 % of the ramp (c's weight is at most 0.3
//! of a full share), and a late one after the ramp is over.
//! c's share of the early window must be well below its share of the late
//! one (less than half), and the late share close to a fair third. Without
//! slow start c would take its full share at once (the scale-up tests in
//! `proxy::endpoints` show it).

use super::support::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;

const RAMP_MS: u64 = 10_000;
/// The early window: while at least this much of the ramp is left, c's
/// weight is at most 0.3 of a full share.
const EARLY_LEFT_MS: u64 = RAMP_MS * 7 / 10;

/// Time left in c's slow start, if it is still ramping.
async fn ramp_left(proxy: &Proxy, c: std::net::SocketAddr) -> Option<u64> {
    endpoint_view(proxy, c).await?["slow_start_ms"].as_u64()
}

/// Waits until the load has counted `calls` more calls; returns them.
async fn window(load: &Load, calls: u64) -> Tally {
    load.take_window();
    let target = load.total().total() + calls;
    wait_until(&format!("{calls} calls"), WAIT, || async {
        (load.total().total() >= target).then_some(())
    })
    .await
    .expect("the load goes on");
    load.take_window()
}

fn share(tally: &Tally, name: &str) -> f64 {
    tally.served_by(name) as f64 / tally.total().max(1) as f64
}

#[tokio::test]
async fn a_new_endpoint_ramps_up_over_the_slow_start_window() {
    let mut setup = EchoSetup::start(
        &["a", "b"],
        BackendOptions::default(),
        &[("SIDELB_SLOW_START", "10s")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("client");
    let request = EchoRequest {
        delay_ms: 1,
        ..EchoRequest::default()
    };
    let load = Load::start(&client, request, LoadLimits::default());

    // The endpoints that were there at the start take full shares at once.
    let first = window(&load, 200).await;
    assert!(
        share(&first, "a") > 0.25 && share(&first, "b") > 0.25,
        "{first}"
    );

    let c = Backend::spawn("c", BackendOptions::default())
        .await
        .expect("c");
    let c_addr = c.addr();
    setup.backends.push(c);
    setup.publish().expect("c added");
    setup.wait_ready().await.expect("c connected");

    // Early: small windows, each counted only if it began and ended in the
    // first 30 % of the ramp, until 200 calls are counted.
    let mut early = Tally::default();
    while early.total() < 200 {
        let before = ramp_left(&setup.proxy, c_addr).await;
        let calls = window(&load, 25).await;
        let after = ramp_left(&setup.proxy, c_addr).await;
        let early_on = |left: Option<u64>| left.is_some_and(|l| l >= EARLY_LEFT_MS);
        assert!(
            early_on(before),
            "the ramp is past its first 30 % ({before:?} ms left) with only {} early calls counted: the machine is too slow for this test",
            early.total()
        );
        if early_on(after) {
            early.merge(&calls);
        }
    }

    // Late: once the ramp is over.
    wait_until("c's slow start to end", WAIT, || async {
        ramp_left(&setup.proxy, c_addr)
            .await
            .is_none()
            .then_some(())
    })
    .await
    .expect("the ramp ends");
    let late = window(&load, 300).await;
    let tally = load.stop().await;
    assert_eq!(tally.ok(), tally.total(), "no call failed: {tally}");

    let (early_share, late_share) = (share(&early, "c"), share(&late, "c"));
    assert!(
        early_share * 2.0 < late_share,
        "c's share early in its ramp ({early_share:.2}: {early}) is not well below its share after ({late_share:.2}: {late})"
    );
    assert!(
        late_share > 0.2,
        "c takes about a third after its ramp: {late}"
    );
}
