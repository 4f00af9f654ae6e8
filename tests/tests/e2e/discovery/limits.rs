//! What an app can make the proxy hold: at most `SIDELB_MAX_SERVICES`
//! services, the one past it refused with UNAVAILABLE (HTTP/1.1: 503)
//! naming the limit and opening no watch; a service dropped when idle
//! (`SIDELB_SERVICE_IDLE_TIMEOUT`) takes its watches and metric series with
//! it and frees its place; a removed endpoint takes its series too. On the
//! fake API server, for its request counts: the refused service is never
//! listed.

use super::cluster::*;
use sidelb_config::settings;
use sidelb_tests::harness::*;
use std::time::Duration;

const SERVICES: [&str; 3] = ["alpha", "beta", "gamma"];

fn authority(name: &str) -> String {
    format!("{name}.default:50051")
}

/// Every line of `/metrics` that mentions `needle`.
async fn series_with(proxy: &Proxy, needle: &str) -> Vec<String> {
    let text = proxy.metrics().await.expect("/metrics");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_service_past_the_limit_is_refused_without_a_watch_until_one_goes_idle() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let pod = pods.start("a").await;
    for name in SERVICES {
        cluster.apply(grpc_service(name, pod.addr().port()));
        cluster.apply_slice(&Slice::grpc(name, &format!("{name}-1"), &[&pod]));
    }
    let idle = Duration::from_secs(8);
    let proxy = Proxy::spawn(
        cluster
            .proxy_options()
            .env(settings::MAX_SERVICES, "2")
            .env(settings::SERVICE_IDLE_TIMEOUT, "8s"),
    )
    .await
    .expect("proxy ready");
    let outbound = proxy.outbound_addr();
    let mut clients = Vec::new();
    for name in SERVICES {
        clients.push(
            client::connect_with_authority(outbound, &authority(name))
                .await
                .expect("connects"),
        );
    }
    all_ok(&clients[0], 5).await;
    all_ok(&clients[1], 5).await;
    cluster.wait_for_watches("services", 2).await;
    cluster.wait_for_watches("endpointslices", 2).await;
    let lists = cluster.api.requests("services", "list");
    let slice_lists = cluster.api.requests("endpointslices", "list");

    // gRPC: UNAVAILABLE from the proxy, naming the limit and the setting.
    let message = unavailable_message(&clients[2]).await.expect("UNAVAILABLE");
    for needle in [
        "already serves 2 services",
        "SIDELB_MAX_SERVICES (sidelb.io/max-services)",
        "gamma.default:50051",
    ] {
        assert!(message.contains(needle), "{needle} in: {message}");
    }
    // HTTP/1.1: 503 with the same text.
    let mut h1 = Http1Conn::connect(outbound).await.expect("connects");
    let response = h1
        .request(b"GET / HTTP/1.1\r\nHost: gamma.default:50051\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        response.text().contains("SIDELB_MAX_SERVICES"),
        "{}",
        response.text()
    );
    let view = proxy.endpoints().await.expect("/endpoints");
    assert_eq!(view["services"].as_array().map(Vec::len), Some(2), "{view}");
    assert!(
        series_with(&proxy, "gamma").await.is_empty(),
        "no series for a refused service"
    );
    let metrics = proxy.metrics().await.expect("/metrics");
    assert!(
        metrics.contains("sidelb_services_refused_total 2"),
        "{metrics}"
    );
    assert!(!series_with(&proxy, "alpha.default:50051").await.is_empty());

    // Idle: both pools go, with their watches and every series they had.
    cluster.wait_for_watches("services", 0).await;
    cluster.wait_for_watches("endpointslices", 0).await;
    assert_eq!(
        cluster.api.requests("services", "list"),
        lists,
        "the refused service was never listed"
    );
    assert_eq!(cluster.api.requests("endpointslices", "list"), slice_lists);
    wait_until("the idle pools to go", WAIT + idle, || async {
        let view = proxy.endpoints().await.ok()?;
        (view["services"].as_array()?.is_empty()).then_some(())
    })
    .await
    .expect("the pools go");
    for name in ["alpha", "beta"] {
        let left = series_with(&proxy, &authority(name)).await;
        assert!(left.is_empty(), "series of {name} left: {left:#?}");
    }
    let endpoint = pod.addr().to_string();
    let left = series_with(&proxy, &endpoint).await;
    assert!(left.is_empty(), "series of {endpoint} left: {left:#?}");

    // Their places are free: the third service is served now.
    let tally = all_ok(&clients[2], 5).await;
    assert_eq!(tally.served_by("a"), 5, "{tally}");
    cluster.wait_for_watches("services", 1).await;
}

#[tokio::test]
async fn a_removed_endpoint_takes_its_series_with_it() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let started = pods.start_all(&["a", "b"]).await;
    let (a, b) = (&started[0], &started[1]);
    cluster.apply(grpc_service("echo", a.addr().port()));
    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[a, b]));
    let proxy = cluster.proxy(&["echo.default:50051"]).await;
    wait_for_pods(&proxy, "echo.default:50051", &["a", "b"]).await;
    let tally = all_ok(&client(&proxy, "echo.default:50051").await, 40).await;
    assert!(tally.served_by("b") > 0, "{tally}");
    let gone = b.addr().to_string();
    assert!(!series_with(&proxy, &gone).await.is_empty());

    cluster.apply_slice(&Slice::grpc("echo", "echo-1", &[a]));
    wait_for_pods(&proxy, "echo.default:50051", &["a"]).await;
    wait_until("the removed endpoint's series to go", WAIT, || async {
        series_with(&proxy, &gone).await.is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        !series_with(&proxy, &a.addr().to_string()).await.is_empty(),
        "the kept endpoint keeps its series"
    );
}
