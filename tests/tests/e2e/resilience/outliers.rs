//! Outlier ejection: an endpoint that keeps failing is taken out of
//! rotation for a growing time, brought back, and never more than the
//! configured share of a service is out at once.
//!
//! Failing backends answer every call with UNAVAILABLE (`--fail-every 1`).
//! Calls are made one at a time, so the count of calls a backend answered is
//! exactly the count of failures the proxy saw from it.
//!
//! - After 5 consecutive failures (`SIDELB_EJECTION_FAILURES` default) the
//!   endpoint is ejected: `/endpoints` says `ejected` with the ejection's
//!   length (the base time, shortened here by `SIDELB_EJECTION_BASE_TIME`),
//!   `/metrics` has `sidelb_ejected` 1 and `sidelb_ejections_total` 1. It
//!   answers no call while ejected (checked over batches of calls that began
//!   and ended with it still ejected), comes back after its time, fails 5
//!   more times and is ejected again for twice as long.
//! - Three of four backends failing with `SIDELB_EJECTION_MAX_PERCENT` 50:
//!   two are ejected, the third stays in rotation although it has failed
//!   past the threshold, so a bad deploy cannot empty the pool.

use super::support::*;
use serde_json::Value;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::net::SocketAddr;

const EJECTED: &str = "sidelb_ejected";
const EJECTIONS: &str = "sidelb_ejections_total";

fn failing() -> BackendOptions {
    BackendOptions {
        fail_every: 1,
        ..BackendOptions::default()
    }
}

/// Calls one at a time until backend `name` has answered `n` of them in
/// all (bounded), counting them into `tally`.
async fn calls_until_answered(client: &Echo, name: &str, n: u64, tally: &mut Tally) {
    for _ in 0..2000 {
        if tally.served_by(name) >= n {
            return;
        }
        tally.merge(&unary_calls(client, 1, &EchoRequest::default()).await);
    }
    panic!("{name} did not answer {n} calls: {tally}");
}

/// Waits until `/endpoints` shows the endpoint at `addr` ejected for the
/// `nth` time; returns its entry.
async fn wait_ejected(proxy: &Proxy, addr: SocketAddr, nth: u64) -> Value {
    let what = format!("{addr} ejected for the {nth}th time");
    let found = wait_until(&what, WAIT, || async {
        let view = endpoint_view(proxy, addr).await?;
        (view["state"] == "ejected" && view["ejections"] == nth).then_some(view)
    })
    .await;
    match found {
        Ok(view) => view,
        Err(e) => panic!("{e:#}: {:?}", endpoint_view(proxy, addr).await),
    }
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_returns_and_is_ejected_longer() {
    let mut backends = Backend::spawn_all(&["a", "b"], BackendOptions::default())
        .await
        .expect("a and b");
    backends.push(Backend::spawn("f", failing()).await.expect("f"));
    let f = backends[2].addr();
    let setup = EchoSetup::with_backends(
        backends,
        &[
            ("SIDELB_EJECTION_BASE_TIME", "3s"),
            ("SIDELB_EJECTION_MAX_TIME", "1m"),
        ],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("client");

    // Five failures in a row: ejected for the base time.
    let mut tally = Tally::default();
    calls_until_answered(&client, "f", 5, &mut tally).await;
    let view = wait_ejected(&setup.proxy, f, 1).await;
    assert_eq!(view["ejection_ms"], 3000, "{view}");
    assert_eq!(view["failures"], 5, "{view}");
    assert_eq!(endpoint_metric(&setup.proxy, EJECTED, f).await, 1.0);
    assert_eq!(endpoint_metric(&setup.proxy, EJECTIONS, f).await, 1.0);
    assert_eq!(tally.served_by("f"), 5, "{tally}");

    // While ejected, f gets nothing: count only batches of calls that began
    // and ended with f still in its first ejection.
    let mut while_ejected = Tally::default();
    for _ in 0..20 {
        let batch = unary_calls(&client, 10, &EchoRequest::default()).await;
        let still = endpoint_view(&setup.proxy, f).await.expect("listed");
        if still["state"] != "ejected" {
            break;
        }
        while_ejected.merge(&batch);
    }
    assert!(
        while_ejected.total() >= 50,
        "too few calls while f was ejected: {while_ejected}"
    );
    assert_eq!(while_ejected.served_by("f"), 0, "{while_ejected}");
    assert_eq!(while_ejected.ok(), while_ejected.total(), "{while_ejected}");

    // Its time is up: back in rotation, it answers calls again...
    wait_until("f back in rotation", WAIT, || async {
        let view = endpoint_view(&setup.proxy, f).await?;
        (view["state"] == "ready").then_some(())
    })
    .await
    .expect("f returns");
    assert_eq!(endpoint_metric(&setup.proxy, EJECTED, f).await, 0.0);
    let before = tally.served_by("f");
    calls_until_answered(&client, "f", before + 5, &mut tally).await;

    // ...fails five more times, and is ejected for twice as long.
    let view = wait_ejected(&setup.proxy, f, 2).await;
    assert_eq!(view["ejection_ms"], 6000, "{view}");
    assert_eq!(endpoint_metric(&setup.proxy, EJECTIONS, f).await, 2.0);
    assert_eq!(endpoint_metric(&setup.proxy, EJECTED, f).await, 1.0);
}

#[tokio::test]
async fn at_most_the_configured_share_is_ejected_at_once() {
    let mut backends = vec![
        Backend::spawn("a", BackendOptions::default())
            .await
            .expect("a"),
    ];
    backends.extend(
        Backend::spawn_all(&["f1", "f2", "f3"], failing())
            .await
            .expect("failing backends"),
    );
    let failing_addrs: Vec<SocketAddr> = backends[1..].iter().map(Backend::addr).collect();
    let setup = EchoSetup::with_backends(
        backends,
        &[
            // Long enough that nobody returns during the test.
            ("SIDELB_EJECTION_BASE_TIME", "10m"),
            ("SIDELB_EJECTION_MAX_TIME", "10m"),
            ("SIDELB_EJECTION_MAX_PERCENT", "50"),
        ],
    )
    .await
    .expect("setup");
    let client = setup.client().await.expect("client");

    // Until two are out and the third has failed past the threshold.
    let mut tally = Tally::default();
    let mut views = Vec::new();
    for _ in 0..400 {
        tally.merge(&unary_calls(&client, 5, &EchoRequest::default()).await);
        views.clear();
        for addr in &failing_addrs {
            views.push(endpoint_view(&setup.proxy, *addr).await.expect("listed"));
        }
        let ejected = views.iter().filter(|v| v["state"] == "ejected").count();
        let past = views
            .iter()
            .filter(|v| v["state"] != "ejected")
            .all(|v| v["consecutive_failures"].as_u64() >= Some(5));
        if ejected >= 2 && past {
            break;
        }
    }
    let ejected = views.iter().filter(|v| v["state"] == "ejected").count();
    assert_eq!(ejected, 2, "{views:?}: {tally}");
    let kept: Vec<&Value> = views.iter().filter(|v| v["state"] == "ready").collect();
    assert_eq!(kept.len(), 1, "{views:?}");
    assert!(
        kept[0]["consecutive_failures"].as_u64() >= Some(5),
        "{views:?}"
    );
    let kept_addr: SocketAddr = kept[0]["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("an address");
    let kept_name = setup
        .backends
        .iter()
        .find(|b| b.addr() == kept_addr)
        .map(|b| b.name().to_owned())
        .expect("a failing backend");
    assert_eq!(
        metric(&setup.proxy, EJECTED, &[("service", ECHO)]).await,
        2.0
    );
    assert_eq!(
        metric(&setup.proxy, EJECTIONS, &[("service", ECHO)]).await,
        2.0
    );

    // The pool is not emptied: the third failing one still gets calls, and
    // still nobody else is ejected.
    let more = unary_calls(&client, 100, &EchoRequest::default()).await;
    assert!(more.served_by(&kept_name) > 0, "{kept_name}: {more}");
    let after = endpoint_view(&setup.proxy, kept_addr)
        .await
        .expect("listed");
    assert_eq!(after["state"], "ready", "{after}");
    assert_eq!(
        metric(&setup.proxy, EJECTED, &[("service", ECHO)]).await,
        2.0
    );
    let service = setup
        .proxy
        .service_view(ECHO)
        .await
        .expect("view")
        .expect("echo");
    assert_eq!(service["ejected"], 2, "{service}");
}
