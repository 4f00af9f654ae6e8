//! Endpoints coming and going while one client connection keeps calling.
//!
//! - scale-up: backends added to the endpoints file take their share of a
//!   running load, and no call fails;
//! - scale-down: a backend removed from the file gets no new call (its own
//!   `Stats` say so), the call in flight on it goes on to a clean end, the
//!   proxy lets it go once drained, and no call fails;
//! - crash: a backend killed with SIGKILL under load costs at most the calls
//!   in flight (every failure names it), later calls all succeed on the
//!   others, and a backend restarted on the same port is used again.

use sidelb_config::settings;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Waits until `load` has counted `more` calls beyond what it had.
async fn wait_for_calls(load: &Load, more: u64) {
    let target = load.total().total() + more;
    wait_until(&format!("{more} more calls"), WAIT, || async {
        (load.total().total() >= target).then_some(())
    })
    .await
    .expect("the load goes on");
}

/// The state `/endpoints` shows for `addr` of [`ECHO`], if it is listed.
async fn state_of(proxy: &Proxy, addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    let view = proxy.service_view(ECHO).await.ok()??;
    view["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
}

#[tokio::test]
async fn backends_added_under_load_take_their_share() {
    // Round-robin, so that a share shows membership of the pool, not the
    // latencies of backends on a busy machine (p2c-ewma follows those).
    let mut setup = EchoSetup::start(
        &["a", "b"],
        BackendOptions::default(),
        &[(settings::BALANCER, "round-robin")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("one connection");
    let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());
    wait_for_calls(&load, 50).await;

    setup.backends.extend(
        Backend::spawn_all(&["c", "d"], BackendOptions::default())
            .await
            .expect("c and d start"),
    );
    setup.publish().expect("file rewritten");
    wait_until("c and d to serve calls", WAIT, || async {
        let total = load.total();
        (total.served_by("c") > 0 && total.served_by("d") > 0).then_some(())
    })
    .await
    .expect("the new backends are used");

    // From now on, all four share the load.
    load.take_window();
    wait_for_calls(&load, 400).await;
    let window = load.take_window();
    for name in ["a", "b", "c", "d"] {
        assert!(
            window.served_by(name) * 10 >= window.total(),
            "{name} has less than a tenth of the calls since: {window}"
        );
    }
    let tally = load.stop().await;
    assert_eq!(tally.ok(), tally.total(), "no call failed: {tally}");
}

#[tokio::test]
async fn a_removed_backend_finishes_its_calls_and_gets_no_new_ones() {
    // Round-robin puts one of three consecutive calls on each backend, so the
    // test knows there is a call in flight on the one it removes.
    let mut setup = EchoSetup::start(
        &["a", "b", "c"],
        BackendOptions::default(),
        &[("SIDELB_BALANCER", "round-robin")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("one connection");
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(OpenCall::open(&client).await.expect("call open"));
    }
    let mut on: Vec<&str> = calls.iter().map(OpenCall::backend).collect();
    on.sort();
    assert_eq!(on, ["a", "b", "c"], "one open call on each backend");
    let at = calls.iter().position(|c| c.backend() == "c").expect("on c");
    let mut on_c = calls.swap_remove(at);

    let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());
    wait_for_calls(&load, 30).await;
    let c = setup.backends.pop().expect("c is last");
    setup.publish().expect("c removed from the file");

    // The proxy has applied the removal, and only the open call is left on c.
    wait_until("c to be draining with only the open call", WAIT, || async {
        let c = state_of(&setup.proxy, c.addr()).await?;
        (c["state"] == "draining" && c["in_flight"] == 1).then_some(())
    })
    .await
    .expect("c draining");
    let served_by_c = c.stats().await.expect("stats").calls;
    wait_for_calls(&load, 300).await;
    assert_eq!(
        c.stats().await.expect("stats").calls,
        served_by_c,
        "no new call reached c after its removal"
    );

    // The call in flight on c goes on, and ends cleanly.
    let reply = on_c.exchange().await.expect("a reply from c");
    assert_eq!((reply.backend.as_str(), reply.received), ("c", 2));
    on_c.finish().await.expect("the call on c ends cleanly");
    wait_until("the proxy to let c go", WAIT, || async {
        state_of(&setup.proxy, c.addr())
            .await
            .is_none()
            .then_some(())
    })
    .await
    .expect("c no longer listed");
    assert_eq!(c.stats().await.expect("stats").in_flight, 0);

    let tally = load.stop().await;
    assert_eq!(tally.ok(), tally.total(), "no call failed: {tally}");
    assert!(
        tally.served_by("a") > 0 && tally.served_by("b") > 0,
        "{tally}"
    );
    for call in calls {
        call.finish().await.expect("ends cleanly");
    }
}

#[tokio::test]
async fn a_killed_backend_costs_only_its_calls_in_flight_and_comes_back() {
    // The dead backend's refused reconnects eject it (DESIGN: 5 connection
    // errors); a short ejection keeps the wait for its return short.
    let mut setup = EchoSetup::start(
        &["a", "b", "c"],
        BackendOptions::default(),
        &[("SIDELB_EJECTION_BASE_TIME", "1s")],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("one connection");
    // Calls that take a while, so that some are in flight on c when it dies.
    let limits = LoadLimits {
        concurrency: 6,
        ..LoadLimits::default()
    };
    let slowish = EchoRequest {
        delay_ms: 20,
        ..EchoRequest::default()
    };
    let load = Load::start(&client, slowish, limits);
    wait_until("c to serve calls", WAIT, || async {
        (load.total().served_by("c") >= 10).then_some(())
    })
    .await
    .expect("c serves");

    let c = setup.backends.pop().expect("c is last");
    let c_addr = c.addr();
    c.kill().expect("SIGKILL");
    wait_until("the proxy to see c down", WAIT, || async {
        let c = state_of(&setup.proxy, c_addr).await?;
        (c["state"] != "ready").then_some(())
    })
    .await
    .expect("c seen down");
    // Calls that were on c when it died may still be on their way back to
    // the client; let more calls than can be in flight finish first.
    load.take_window();
    wait_for_calls(&load, 12).await;
    load.take_window();
    wait_for_calls(&load, 100).await;
    let after = load.take_window();
    assert_eq!(
        after.ok(),
        after.total(),
        "later calls all succeed: {after}"
    );
    assert_eq!(after.served_by("c"), 0, "{after}");

    // c comes back on the same port: the proxy reconnects and uses it again.
    let c = Backend::spawn(
        "c",
        BackendOptions {
            addr: Some(c_addr),
            ..BackendOptions::default()
        },
    )
    .await
    .expect("c restarts on its port");
    load.take_window();
    wait_until("the restarted c to serve calls", WAIT * 2, || async {
        (load.take_window().served_by("c") > 0).then_some(())
    })
    .await
    .expect("c used again");
    assert!(c.stats().await.expect("stats").calls > 0);

    let tally = load.stop().await;
    let failed = tally.total() - tally.ok();
    assert!(
        failed <= limits.concurrency as u64,
        "more calls failed than could be in flight on c: {tally}"
    );
    for failure in tally.proxy_failures().keys() {
        assert!(
            failure.starts_with("Unavailable: ") && failure.contains(&c_addr.to_string()),
            "a failure that was not a call on c: {failure}"
        );
    }
    assert_eq!(failed, tally.unattributed(), "{tally}");
}
