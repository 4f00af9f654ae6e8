//! Who reaches the admin port, and what one client can hold there.
//!
//! The proxy runs in a pod network of the test's own ([`PodNet`]) with its
//! admin server on `0.0.0.0:4191`, as the injector configures it, so that a
//! client outside the pod (the kubelet, another pod) comes from the pod
//! IP's network and one inside comes from loopback:
//!
//! - `/live`, `/ready`, `/metrics` answer both; `/endpoints`, the live
//!   page `/` and any other path answer loopback only, 403 with the way in
//!   (port-forward) outside, and what loopback sees is unchanged;
//! - a few hundred connections held open from outside, silent or with half
//!   a request head, do not keep the probes out, and are all closed within
//!   a minute.

use sidelb_config::names::{
    ADMIN_PORT, ADMIN_PUBLIC_PATHS, ENDPOINTS_PATH, LIVE_PAGE_PATH, LIVE_PATH, METRICS_PATH,
    READY_PATH,
};
use sidelb_config::settings;
use sidelb_tests::harness::netns::Side;
use sidelb_tests::harness::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "echo.default:50051";
/// Connections a test holds open: several times the admin server's cap.
const HELD: usize = 300;
/// Bound on the held connections being closed.
const CLOSED_WITHIN: Duration = Duration::from_secs(60);

struct InPod {
    proxy: Proxy,
    // Dropped after the proxy: the namespaces outlive the process in them.
    pod: Arc<PodNet>,
    _file: EndpointsFile,
}

/// A proxy in a pod network, or `None` (with the reason printed) where
/// network namespaces cannot be made.
async fn proxy_in_pod() -> Option<InPod> {
    let pod = match PodNet::create() {
        Ok(pod) => Arc::new(pod),
        Err(e) => {
            eprintln!("SKIPPED: this test needs network namespaces: {e:#}");
            return None;
        }
    };
    let endpoints = ServiceEndpoints::new(
        "echo",
        "default",
        50051,
        &["127.0.0.1:1".parse().expect("an address")],
    );
    let file = EndpointsFile::create(&[endpoints]).expect("endpoints file");
    let options = ProxyOptions::file_discovery(&file)
        .env(settings::ADMIN_ADDR, format!("0.0.0.0:{ADMIN_PORT}"))
        .env(settings::POD_NAME, "app-7d9f")
        .env(settings::POD_NAMESPACE, "shop")
        .in_pod(pod.clone());
    let proxy = Proxy::spawn(options).await.expect("proxy in the pod");
    Some(InPod {
        proxy,
        pod,
        _file: file,
    })
}

async fn get_from_outside(pod: &PodNet, path: &str) -> (u16, String) {
    let addr = PodNet::pod_addr(ADMIN_PORT);
    let stream = pod
        .connect(Side::Outside, addr)
        .await
        .expect("connect to the pod IP");
    let (status, _, body) = http_get::get_on(stream, "pod-ip", addr, path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {path} from outside: {e:#}"));
    (status.as_u16(), body)
}

#[tokio::test]
async fn endpoints_answer_loopback_only() {
    let Some(setup) = proxy_in_pod().await else {
        return;
    };
    let (proxy, pod) = (&setup.proxy, &setup.pod);

    for path in ADMIN_PUBLIC_PATHS {
        let (status, body) = get_from_outside(pod, path).await;
        assert_eq!(status, 200, "{path} from outside: {body}");
    }
    let (_, metrics) = get_from_outside(pod, METRICS_PATH).await;
    assert!(metrics.contains("sidelb_"), "{metrics}");

    for path in [ENDPOINTS_PATH, "/", "/log-level", "/nope"] {
        let (status, body) = get_from_outside(pod, path).await;
        assert_eq!(status, 403, "{path} from outside: {body}");
        assert!(
            body.contains(&format!("{path} answers only clients on loopback"))
                && body.contains("10.250.0.1")
                && body.contains(&format!(
                    "kubectl port-forward -n shop pod/app-7d9f {ADMIN_PORT}"
                ))
                && body.contains(LIVE_PATH),
            "{body}"
        );
        assert!(!body.contains("127.0.0.1:1"), "no endpoint leaks: {body}");
    }

    // Loopback, inside the pod: everything as before.
    let view = proxy.endpoints().await.expect("/endpoints from loopback");
    let services: Vec<&str> = view["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(services, [SERVICE], "{view}");
    for path in [LIVE_PATH, READY_PATH, METRICS_PATH] {
        let (status, body) = proxy.admin_get(path).await.expect("answered");
        assert_eq!(status.as_u16(), 200, "{path} from loopback: {body}");
    }
    let (status, body) = proxy.admin_get(LIVE_PAGE_PATH).await.expect("answered");
    assert_eq!(status.as_u16(), 200, "the live page on loopback: {body}");
    assert!(body.contains("<title>sidelb live</title>"), "{body}");
    let (status, body) = proxy.admin_get("/nope").await.expect("answered");
    assert_eq!(status.as_u16(), 404, "unknown paths on loopback: {body}");
}

#[tokio::test]
async fn held_open_connections_neither_keep_probes_out_nor_stay_open() {
    let Some(mut setup) = proxy_in_pod().await else {
        return;
    };
    let pod = &setup.pod;
    let proxy = &mut setup.proxy;
    let fds_before = proxy.open_fds().expect("fds");
    let addr = PodNet::pod_addr(ADMIN_PORT);

    // Half of them silent, half with a request head that never ends.
    let mut held = pod
        .connect_many(Side::Outside, addr, HELD)
        .await
        .expect("connections from outside");
    for conn in held.iter_mut().skip(HELD / 2) {
        conn.write_all(b"GET /live HTTP/1.1\r\nHost: pod\r\nX-Slow: ")
            .await
            .expect("half a head");
    }

    // The kubelet's probes, from outside, each on a new connection.
    for round in 0..20 {
        for path in [LIVE_PATH, READY_PATH] {
            let (status, body) = get_from_outside(pod, path).await;
            assert_eq!(status, 200, "probe {round} of {path}: {body}");
        }
    }
    let (status, _) = proxy.admin_get(ENDPOINTS_PATH).await.expect("loopback");
    assert_eq!(status.as_u16(), 200);

    // Every held connection is closed by the proxy: EOF or reset.
    let mut closed = 0;
    let all = async {
        for conn in held.iter_mut() {
            let mut buf = [0u8; 512];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            closed += 1;
        }
    };
    let within = tokio::time::timeout(CLOSED_WITHIN, all).await;
    assert!(
        within.is_ok(),
        "{closed} of {HELD} held connections closed within {CLOSED_WITHIN:?}\n{}",
        proxy.process().diagnostics()
    );
    drop(held);
    wait_until(
        "the proxy's descriptors to return",
        Duration::from_secs(10),
        || async {
            let now = proxy.open_fds().ok()?;
            (now <= fds_before + 2).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {fds_before} before"));
}
