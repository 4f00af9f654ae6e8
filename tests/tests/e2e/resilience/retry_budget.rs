//! Retries of refused requests are bounded by the retry budget, so a pod
//! that refuses everything cannot multiply the load on the others.
//!
//! Service echo has a healthy backend `g` and a [`RefusingBackend`] `r` that
//! answers every stream with `REFUSED_STREAM` (never processed: safe to send
//! elsewhere). Ejection is off, so `r` stays in rotation and keeps refusing.
//!
//! - A trickle of calls: every refused call is retried on `g` (the budget's
//!   floor covers it), so every call succeeds and the proxy's retry count is
//!   exactly the number of streams `r` refused.
//! - A storm of calls, most of them picked for `r` at first: the retries stay
//!   within the budget (20 % of requests plus 10 per second of the run, the
//!   defaults), the rest are counted as over budget, and exactly those calls
//!   fail, with UNAVAILABLE and a message naming the service, the endpoint
//!   and the spent retry budget. Every refused stream is either retried or
//!   counted over budget, and `g` served every call that succeeded.

use super::support::*;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use tokio::time::Instant;
use tonic::Code;

const RETRIES: &str = "sidelb_retries_total";
const OVER_BUDGET: &str = "sidelb_retries_over_budget_total";

#[tokio::test]
async fn retries_of_refused_calls_stay_within_the_budget() {
    let started = Instant::now();
    let g = Backend::spawn("g", BackendOptions::default())
        .await
        .expect("g starts");
    let r = RefusingBackend::start().await.expect("r starts");
    let file = EndpointsFile::create(&[ServiceEndpoints::new(
        "echo",
        "default",
        50051,
        &[g.addr(), r.addr()],
    )])
    .expect("endpoints file");
    let proxy = Proxy::spawn(
        ProxyOptions::file_discovery(&file)
            .upstream(ECHO)
            .env("SIDELB_EJECTION_FAILURES", "0"),
    )
    .await
    .expect("proxy");
    proxy
        .wait_ready(ECHO, &[g.addr(), r.addr()])
        .await
        .expect("both connected");
    let client = proxy.connect(ECHO).await.expect("client");
    let counts = || async {
        let service = [("service", ECHO)];
        (
            metric(&proxy, RETRIES, &service).await as u64,
            metric(&proxy, OVER_BUDGET, &service).await as u64,
        )
    };

    // A trickle: within the floor, every refusal is retried.
    let trickle = unary_calls(&client, 40, &EchoRequest::default()).await;
    assert_eq!(trickle.served_by("g"), 40, "{trickle}");
    let (retries, over) = counts().await;
    assert!(r.refused() > 0, "r was picked");
    assert_eq!((retries, over), (r.refused(), 0), "every refusal retried");

    // A storm: far more refusals than the budget allows.
    let calls = 3000;
    let storm = unary_calls_concurrently(&client, calls, 16, &EchoRequest::default()).await;
    let elapsed = started.elapsed();
    let (retries, over) = counts().await;
    let refused = r.refused();
    assert_eq!(
        retries + over,
        refused,
        "every refused stream was retried or counted over budget"
    );
    let requests = 40 + calls;
    let budget = requests / 5 + 10 * (elapsed.as_secs() + 10);
    assert!(
        retries <= budget,
        "{retries} retries for {requests} requests in {elapsed:?}: more than 20 % + 10/s ({budget})"
    );
    assert!(
        over > 0,
        "the storm exceeded the budget: {refused} refusals, {retries} retries"
    );

    // Exactly the calls over budget failed, each saying why.
    assert_eq!(storm.count(Code::Unavailable), over, "{storm}");
    assert_eq!(storm.unattributed(), over, "{storm}");
    assert_eq!(storm.ok() + over, calls, "{storm}");
    assert_eq!(storm.served_by("g"), storm.ok(), "{storm}");
    let r_addr = r.addr().to_string();
    for message in storm.proxy_failures().keys() {
        for needle in [ECHO, r_addr.as_str(), "retry budget", "REFUSED_STREAM"] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
    }
}
