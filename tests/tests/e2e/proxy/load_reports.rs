//! Backends that report their own load with ORCA (`endpoint-load-metrics-bin`
//! on every answer): at the same request rate one says it is 90 % busy and
//! two say 10 %, so the busy one weighs a ninth of the others and gets well
//! under half of an even share, though its latency is the same. `/endpoints`
//! shows each weight and `/metrics` counts the reports. (A backend that
//! sends none is weighed by latency as before: `balancer::pick`'s tests.)

use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;

const CALLS: u64 = 600;
const CONCURRENCY: usize = 2;

fn reporting(utilization: f64) -> BackendOptions {
    BackendOptions {
        orca_utilization: Some(utilization),
        ..BackendOptions::default()
    }
}

#[tokio::test]
async fn a_backend_that_reports_itself_busy_gets_under_half_its_share() {
    let backends = vec![
        Backend::spawn("busy", reporting(0.9))
            .await
            .expect("starts"),
        Backend::spawn("idle-1", reporting(0.1))
            .await
            .expect("starts"),
        Backend::spawn("idle-2", reporting(0.1))
            .await
            .expect("starts"),
    ];
    let setup = EchoSetup::with_backends(backends, &[])
        .await
        .expect("setup");
    let client = setup.client().await.expect("one connection");
    let tally =
        unary_calls_concurrently(&client, CALLS, CONCURRENCY, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), CALLS, "{tally}");
    let even = CALLS / 3;
    assert!(
        tally.served_by("busy") < even / 2,
        "busy reported 90 % and took {} of {CALLS} (an even share is {even}): {tally}",
        tally.served_by("busy")
    );
    for idle in ["idle-1", "idle-2"] {
        assert!(
            tally.served_by(idle) > tally.served_by("busy"),
            "{idle} reported 10 %: {tally}"
        );
    }

    let weight = async |backend: &Backend| {
        let view = setup.proxy.endpoint_view(ECHO, backend.addr()).await;
        let view = view.expect("/endpoints").expect("listed");
        view["load_weight"].as_f64()
    };
    // 100 requests a second over 0.9 and over 0.1.
    assert_eq!(weight(&setup.backends[0]).await, Some(111.11));
    assert_eq!(weight(&setup.backends[1]).await, Some(1000.0));

    let metrics = metrics::parse(&setup.proxy.metrics().await.expect("/metrics"));
    let busy = setup.backends[0].addr().to_string();
    let reports = metrics::sum(
        &metrics,
        "sidelb_load_reports_total",
        &[("service", ECHO), ("endpoint", busy.as_str())],
    );
    assert_eq!(reports, Some(tally.served_by("busy") as f64));
}
