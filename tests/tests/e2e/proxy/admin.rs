//! The admin server, checked against traffic whose every call is known.
//!
//! - `/live` answers 200, `/ready` 200 once discovery has answered (the
//!   endpoints file is read before the proxy listens, so it is ready as soon
//!   as it serves; the 503 while shutting down is in `proxy::lifecycle`),
//!   other paths 404;
//! - `/metrics`: requests by service, endpoint and `grpc-status` equal to
//!   what the backends answered (and the proxy's own errors, with no
//!   endpoint), the latency histogram counts every answered request,
//!   endpoints by state follow a backend's death, discovery updates count
//!   the file's changes;
//! - `/endpoints`: every service with its resolution (and why not, for a
//!   service that is not in the file), every endpoint with its state,
//!   in-flight calls, latency estimate and request count — the same count
//!   the backend itself reports.

use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::client::request_channel;
use sidelb_tests::harness::metrics::{parse, sum};
use sidelb_tests::harness::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const MISSING: &str = "missing.default:50051";

#[tokio::test]
async fn live_ready_and_unknown_paths() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let (status, body) = setup.proxy.admin_get("/live").await.expect("answered");
    assert_eq!((status.as_u16(), body.trim()), (200, "live"));
    let (status, body) = setup.proxy.admin_get("/ready").await.expect("answered");
    assert_eq!((status.as_u16(), body.trim()), (200, "ready"));
    let (status, body) = setup.proxy.admin_get("/nope").await.expect("answered");
    assert_eq!(status.as_u16(), 404);
    assert!(
        body.contains("/metrics") && body.contains("/endpoints"),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_unless_openmetrics_is_asked_for() {
    let setup = EchoSetup::start(&["a"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let admin = setup.proxy.admin_addr();
    let content_type = |headers: &http::HeaderMap| {
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, headers, text) = http_get::get_with(admin, "/metrics", &[])
        .await
        .expect("answered");
    assert_eq!(status.as_u16(), 200);
    assert_eq!(
        content_type(&headers),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        text.contains("# TYPE sidelb_discovery_updates_total counter") && !text.contains("# EOF"),
        "{text}"
    );
    let prometheus =
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, headers, text) = http_get::get_with(admin, "/metrics", &[("accept", prometheus)])
        .await
        .expect("answered");
    assert_eq!(status.as_u16(), 200);
    assert!(content_type(&headers).starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(
        text.contains("# TYPE sidelb_discovery_updates counter") && text.ends_with("# EOF\n"),
        "{text}"
    );
}

/// Known traffic: OK calls, calls the backends fail with FAILED_PRECONDITION,
/// and calls to a service that is not in the file (the proxy fails those).
async fn traffic(setup: &EchoSetup) -> (Tally, Tally) {
    let client = setup.client().await.expect("one connection");
    let ok = unary_calls(&client, 40, &EchoRequest::default()).await;
    let failing = EchoRequest {
        fail_code: tonic::Code::FailedPrecondition as i32,
        ..Default::default()
    };
    let failed = unary_calls(&client, 6, &failing).await;
    assert_eq!(
        (ok.ok(), failed.count(tonic::Code::FailedPrecondition)),
        (40, 6)
    );
    let raw = RawGrpc::connect(setup.proxy.outbound_addr(), MISSING)
        .await
        .expect("connects");
    for _ in 0..3 {
        let response = raw
            .call("Unary", &[], &[EchoRequest::default()])
            .await
            .expect("answered");
        assert_eq!(response.grpc_status(), Some(14));
    }
    (ok, failed)
}

/// Metrics once all 46 answered calls of [`traffic`] are counted (a call is
/// counted once its response is through).
async fn counted(setup: &EchoSetup) -> Vec<metrics::Sample> {
    wait_until("46 requests counted for echo", WAIT, || async {
        let samples = parse(&setup.proxy.metrics().await.ok()?);
        let counted = sum(&samples, "sidelb_requests_total", &[("service", ECHO)])?;
        (counted == 46.0).then_some(samples)
    })
    .await
    .expect("counted")
}

async fn two_backends() -> EchoSetup {
    EchoSetup::start(&["a", "b"], BackendOptions::default(), &[])
        .await
        .expect("setup")
}

fn endpoints_in_state(samples: &[metrics::Sample], state: &str) -> Option<f64> {
    sum(
        samples,
        "sidelb_endpoints",
        &[("service", ECHO), ("state", state)],
    )
}

fn discovery_updates(samples: &[metrics::Sample]) -> Option<f64> {
    sum(
        samples,
        "sidelb_discovery_updates_total",
        &[("service", ECHO)],
    )
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_status_as_the_backends_answered() {
    let setup = two_backends().await;
    let (ok, failed) = traffic(&setup).await;
    let samples = counted(&setup).await;
    for backend in &setup.backends {
        let endpoint = backend.addr().to_string();
        let count = |status: &str| {
            sum(
                &samples,
                "sidelb_requests_total",
                &[
                    ("service", ECHO),
                    ("endpoint", &endpoint),
                    ("grpc_status", status),
                ],
            )
            .unwrap_or(0.0) as u64
        };
        let name = backend.name();
        assert_eq!(count("0"), ok.served_by(name), "{name}: OK");
        assert_eq!(
            count("9"),
            failed.served_by(name),
            "{name}: FAILED_PRECONDITION"
        );
    }
    let made_by_proxy = sum(
        &samples,
        "sidelb_requests_total",
        &[
            ("service", MISSING),
            ("endpoint", ""),
            ("grpc_status", "14"),
        ],
    );
    assert_eq!(made_by_proxy, Some(3.0));
}

#[tokio::test]
async fn the_latency_histogram_counts_every_answered_request() {
    let setup = two_backends().await;
    traffic(&setup).await;
    let samples = counted(&setup).await;
    let histogram = |suffix: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("service", ECHO)];
        labels.extend_from_slice(extra);
        sum(
            &samples,
            &format!("sidelb_request_duration_seconds_{suffix}"),
            &labels,
        )
    };
    assert_eq!(histogram("count", &[]), Some(46.0));
    assert_eq!(histogram("bucket", &[("le", "+Inf")]), Some(46.0));
    assert!(histogram("sum", &[]).is_some_and(|s| s > 0.0));
}

#[tokio::test]
async fn endpoints_by_state_follow_a_backend_death() {
    let mut setup = two_backends().await;
    traffic(&setup).await;
    let samples = counted(&setup).await;
    assert_eq!(endpoints_in_state(&samples, "ready"), Some(2.0));
    assert_eq!(endpoints_in_state(&samples, "down"), Some(0.0));

    // b dies: one endpoint down (or ejected) and one ready.
    let b = setup.backends.pop().expect("b");
    b.kill().expect("SIGKILL");
    wait_until("b counted as not ready", WAIT, || async {
        let samples = parse(&setup.proxy.metrics().await.ok()?);
        let gone = endpoints_in_state(&samples, "down")? + endpoints_in_state(&samples, "ejected")?;
        (endpoints_in_state(&samples, "ready")? == 1.0 && gone == 1.0).then_some(())
    })
    .await
    .expect("b down");
}

#[tokio::test]
async fn discovery_updates_count_the_files_changes() {
    let mut setup = two_backends().await;
    let samples = parse(&setup.proxy.metrics().await.expect("metrics"));
    assert_eq!(discovery_updates(&samples), Some(1.0), "the first read");

    // The file changes: one more discovery update, a third endpoint.
    setup.backends.extend(
        Backend::spawn_all(&["c"], BackendOptions::default())
            .await
            .expect("c starts"),
    );
    setup.publish().expect("rewritten");
    wait_until("the update counted and c ready", WAIT, || async {
        let samples = parse(&setup.proxy.metrics().await.ok()?);
        (discovery_updates(&samples)? >= 2.0 && endpoints_in_state(&samples, "ready")? == 3.0)
            .then_some(())
    })
    .await
    .expect("applied");
}

#[tokio::test]
async fn endpoints_shows_services_endpoints_and_their_load() {
    let setup = EchoSetup::start(&["a", "b"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    traffic(&setup).await;
    // One call held open, to be seen in flight.
    let client = setup.client().await.expect("one connection");
    let (send, requests) = request_channel(1);
    let mut held = client
        .clone()
        .bidi(requests)
        .await
        .expect("bidi")
        .into_inner();
    send.send(EchoRequest::default()).await.expect("sent");
    let holder = held.message().await.expect("reply").expect("some").backend;

    let view = setup.proxy.endpoints().await.expect("JSON");
    assert_eq!(view["balancer"], "p2c-ewma");
    let echo = setup
        .proxy
        .service_view(ECHO)
        .await
        .expect("JSON")
        .expect("listed");
    assert_eq!(
        (
            &echo["name"],
            &echo["namespace"],
            &echo["port"],
            &echo["resolution"]
        ),
        (
            &"echo".into(),
            &"default".into(),
            &"50051".into(),
            &"resolved".into()
        )
    );
    assert_eq!(echo["in_flight"], 1);
    let endpoints = echo["endpoints"].as_array().expect("a list");
    assert_eq!(endpoints.len(), 2);
    for backend in &setup.backends {
        let view = endpoints
            .iter()
            .find(|e| e["address"] == backend.addr().to_string())
            .unwrap_or_else(|| panic!("{} listed: {echo}", backend.name()));
        assert_eq!(view["state"], "ready", "{view}");
        assert_eq!(view["connections"], 1, "{view}");
        assert!(
            view["ewma_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{view}"
        );
        let stats = backend.stats().await.expect("stats");
        assert_eq!(view["requests"], stats.calls, "{}: {view}", backend.name());
        let in_flight = u64::from(backend.name() == holder);
        assert_eq!(view["in_flight"], in_flight, "{view}");
        assert_eq!(stats.in_flight, in_flight);
    }

    let missing = setup
        .proxy
        .service_view(MISSING)
        .await
        .expect("JSON")
        .expect("listed");
    assert_eq!(missing["resolution"], "no-service");
    let message = missing["message"].as_str().expect("why");
    assert!(message.contains("not in the endpoints file"), "{message}");
    assert_eq!(missing["endpoints"].as_array().map(Vec::len), Some(0));

    drop(send);
    assert!(held.message().await.expect("clean end").is_none());
    wait_until("nothing in flight", WAIT, || async {
        let echo = setup.proxy.service_view(ECHO).await.ok()??;
        (echo["in_flight"] == 0).then_some(())
    })
    .await
    .expect("ended");
}

#[tokio::test]
async fn endpoints_lists_every_service_of_the_file_before_any_request() {
    let backends = Backend::spawn_all(&["a", "b"], BackendOptions::default())
        .await
        .expect("backends");
    let echo = ServiceEndpoints::of("echo", "default", 50051, &backends[..1]);
    let orders = ServiceEndpoints::of("orders", "shop", 9000, &backends[1..]);
    let file = EndpointsFile::create(&[echo.clone(), orders.clone()]).expect("file");
    let proxy = Proxy::spawn(ProxyOptions::file_discovery(&file))
        .await
        .expect("proxy");
    let ready_at = |name: &'static str, addr: std::net::SocketAddr| {
        let proxy = &proxy;
        async move {
            let view = proxy.service_view(name).await.ok()??;
            let endpoints = view["endpoints"].as_array()?;
            (view["resolution"] == "resolved"
                && endpoints.len() == 1
                && endpoints[0]["address"] == addr.to_string()
                && endpoints[0]["state"] == "ready")
                .then_some(view)
        }
    };
    wait_until("echo listed and connected", WAIT, || {
        ready_at(ECHO, backends[0].addr())
    })
    .await
    .expect("listed");
    wait_until("orders listed and connected", WAIT, || {
        ready_at("orders.shop:9000", backends[1].addr())
    })
    .await
    .expect("listed");
    for backend in &backends {
        assert_eq!(backend.stats().await.expect("stats").calls, 0);
    }

    // A Service added to the file is listed; one taken out says so.
    let billing = ServiceEndpoints::of("billing", "shop", 9001, &backends[..1]);
    file.write(&[echo, billing]).expect("rewrite");
    wait_until("billing listed", WAIT, || {
        ready_at("billing.shop:9001", backends[0].addr())
    })
    .await
    .expect("listed");
    let gone = wait_until("orders no longer in the file", WAIT, || async {
        let view = proxy.service_view("orders.shop:9000").await.ok()??;
        (view["resolution"] == "no-service").then_some(view)
    })
    .await
    .expect("told");
    assert!(
        gone["message"]
            .as_str()
            .is_some_and(|m| m.contains("not in the endpoints file")),
        "{gone}"
    );
}
