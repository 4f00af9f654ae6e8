//! A backend that answers RESOURCE_EXHAUSTED to every call answers fast, so
//! by latency alone it would look the cheapest and take at least its even
//! share, refusing all of it. The proxy lowers its share for as long as it
//! keeps answering so — under half of an even share, with outlier ejection
//! off so that nothing else explains it — and passes the answers back
//! unretried. `/endpoints` shows its penalty and `/metrics` counts the
//! answers.

use sidelb_config::settings;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use tonic::Code;

const CALLS: u64 = 600;
const CONCURRENCY: usize = 6;

async fn a_rate_limited_backend_gets_under_half_its_share(balancer: &str) {
    let mut backends = Backend::spawn_all(&["a", "b"], BackendOptions::default())
        .await
        .expect("a and b start");
    let limited = BackendOptions {
        fail_every: 1,
        fail_code: Some(Code::ResourceExhausted),
        ..BackendOptions::default()
    };
    backends.push(Backend::spawn("c", limited).await.expect("c starts"));
    let env = [
        (settings::BALANCER, balancer),
        (settings::EJECTION_FAILURES, "0"),
    ];
    let setup = EchoSetup::with_backends(backends, &env)
        .await
        .expect("setup");
    let client = setup.client().await.expect("one connection");

    let tally =
        unary_calls_concurrently(&client, CALLS, CONCURRENCY, &EchoRequest::default()).await;
    let refused = tally.count(Code::ResourceExhausted);
    assert_eq!(tally.ok() + refused, CALLS, "{balancer}: {tally}");
    assert_eq!(
        refused,
        tally.served_by("c"),
        "{balancer}: every refusal is c's own answer, passed back unretried: {tally}"
    );
    let even = CALLS / 3;
    assert!(
        tally.served_by("c") < even / 2,
        "{balancer}: c answered every call RESOURCE_EXHAUSTED and still took {} of {CALLS} (an even share is {even}): {tally}",
        tally.served_by("c")
    );

    let c = setup.backends[2].addr().to_string();
    let endpoint = setup
        .proxy
        .endpoint_view(ECHO, setup.backends[2].addr())
        .await
        .expect("/endpoints")
        .expect("c is listed");
    assert!(
        endpoint["rate_limit_penalty"]
            .as_f64()
            .is_some_and(|p| p >= 1.0),
        "{balancer}: c's penalty is shown: {endpoint}"
    );
    let metrics = metrics::parse(&setup.proxy.metrics().await.expect("/metrics"));
    let counted = metrics::sum(
        &metrics,
        "sidelb_rate_limited_total",
        &[("service", ECHO), ("endpoint", c.as_str())],
    );
    assert_eq!(counted, Some(refused as f64), "{balancer}");
}

#[tokio::test]
async fn p2c_ewma_gives_a_rate_limited_backend_under_half_its_share() {
    a_rate_limited_backend_gets_under_half_its_share("p2c-ewma").await;
}

#[tokio::test]
async fn round_robin_gives_a_rate_limited_backend_under_half_its_share() {
    a_rate_limited_backend_gets_under_half_its_share("round-robin").await;
}
