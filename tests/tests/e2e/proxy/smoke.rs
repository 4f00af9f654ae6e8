//! First end-to-end checks through `sidelb-proxy`, written with the harness
//! to prove it against the real proxy: one connection spread over every
//! backend, a backend added to the endpoints file taking calls, both
//! listeners, and a Python grpcio app on one channel (on either listener:
//! every backend gets a share, every call kind and check passes).
//!
//! The binaries come from `cargo build --workspace --bins` (`make test` does
//! it first), or from `SIDELB_BIN_DIR`.

use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::*;
use std::time::Duration;

const TARGET: &str = "echo.default:50051";
const WAIT: Duration = Duration::from_secs(10);

async fn backends(names: &[&str]) -> Vec<Backend> {
    let mut started = Vec::new();
    for name in names {
        let backend = Backend::spawn(name, BackendOptions::default())
            .await
            .expect("backend starts");
        started.push(backend);
    }
    started
}

fn service(backends: &[Backend]) -> ServiceEndpoints {
    let addrs: Vec<_> = backends.iter().map(Backend::addr).collect();
    ServiceEndpoints::new("echo", "default", 50051, &addrs)
}

#[tokio::test]
async fn one_connection_reaches_every_backend_and_new_ones() {
    let mut pods = backends(&["a", "b", "c"]).await;
    let mut echo = service(&pods);
    let file = EndpointsFile::create(std::slice::from_ref(&echo)).expect("file");
    let proxy = Proxy::spawn(ProxyOptions::file_discovery(&file).upstream(TARGET))
        .await
        .expect("proxy ready");
    let client = proxy.connect(TARGET).await.expect("connects");

    let tally = unary_calls_concurrently(&client, 300, 4, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 300, "{tally}");
    for pod in ["a", "b", "c"] {
        assert!(tally.served_by(pod) > 0, "{pod} got nothing: {tally}");
    }

    let load = Load::start(&client, EchoRequest::default(), LoadLimits::default());
    pods.extend(backends(&["d"]).await);
    echo = service(&pods);
    file.write(&[echo]).expect("rewritten");
    wait_until("d to serve calls", WAIT, || async {
        (load.total().served_by("d") > 0).then_some(())
    })
    .await
    .expect("d serves");
    let tally = load.stop().await;
    assert_eq!(tally.ok(), tally.total(), "no call failed: {tally}");
}

#[tokio::test]
async fn the_authority_listener_routes_by_authority() {
    let pods = backends(&["a", "b"]).await;
    let file = EndpointsFile::create(&[service(&pods)]).expect("file");
    let proxy = Proxy::spawn(ProxyOptions::file_discovery(&file))
        .await
        .expect("proxy ready");
    let client = client::connect_with_authority(proxy.outbound_addr(), TARGET)
        .await
        .expect("connects");
    let tally = unary_calls(&client, 50, &EchoRequest::default()).await;
    assert_eq!(tally.ok(), 50, "{tally}");
    assert_eq!(tally.backends().len(), 2, "{tally}");
}

#[tokio::test]
async fn a_python_app_on_one_channel_is_balanced() {
    let pods = backends(&["a", "b", "c"]).await;
    let file = EndpointsFile::create(&[service(&pods)]).expect("file");
    // Round-robin takes the backends strictly in turn, so the share of each
    // is exact; the latency-aware default is shown in proxy::balance.
    let options = ProxyOptions::file_discovery(&file)
        .upstream(TARGET)
        .env("SIDELB_BALANCER", "round-robin");
    let proxy = Proxy::spawn(options).await.expect("proxy ready");
    proxy
        .wait_ready(TARGET, &pods.iter().map(Backend::addr).collect::<Vec<_>>())
        .await
        .expect("all connected");
    // On the authority listener with the Service's name as the channel's
    // authority, and on the upstream listener.
    let on_listener = AppClient {
        calls: 150,
        ..AppClient::new(
            Language::Python,
            proxy.upstream_addr(TARGET).expect("listener"),
        )
    };
    let by_authority = AppClient {
        calls: 60,
        authority: Some(TARGET.to_string()),
        large_bytes: 0,
        ..AppClient::new(Language::Python, proxy.outbound_addr())
    };
    for python in [by_authority, on_listener] {
        let summary = python.run().await.expect("Python client runs");
        let kinds = python.checks();
        let failed = summary.failed_checks(&kinds);
        assert!(failed.is_empty(), "{failed:?}");
        for kind in kinds {
            let check = summary
                .checks
                .get(kind)
                .unwrap_or_else(|| panic!("{kind} checked"));
            assert!(
                !check.backends.is_empty()
                    && check
                        .backends
                        .iter()
                        .all(|b| ["a", "b", "c"].contains(&b.as_str())),
                "{kind} served by our backends: {check:?}"
            );
        }
        let calls = u64::from(python.calls);
        assert_eq!(
            summary.unary.statuses.get("OK"),
            Some(&calls),
            "{:?}",
            summary.unary
        );
        // The one channel's calls are spread over every backend.
        for pod in ["a", "b", "c"] {
            let got = summary.unary.by_backend.get(pod).copied().unwrap_or(0);
            assert_eq!(got, calls / 3, "{pod}: {:?}", summary.unary);
        }
    }
}
