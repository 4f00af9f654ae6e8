//! IPv6: an app whose `localhost` is `::1` and a kubelet on an IPv6 or
//! dual-stack pod network.
//!
//! - the authority listener and an upstream listener, configured as
//!   `127.0.0.1:P`, also answer on `[::1]:P`, with calls balanced as on
//!   IPv4;
//! - the admin server on `0.0.0.0:4191` (as the injector sets it) answers on
//!   both of the pod's addresses, IPv4 and IPv6, with `/endpoints` still
//!   loopback only: 403 from either pod IP, 200 from `127.0.0.1` (which the
//!   dual-stack socket sees as `::ffff:127.0.0.1`) and from `::1`.
//!
//! Each test is skipped, saying why, where the host has no IPv6 loopback
//! (or, for the pod network, no network namespaces).

use sidelb_config::names::{ADMIN_PORT, ENDPOINTS_PATH, LIVE_PATH, READY_PATH};
use sidelb_config::settings;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::netns::{OUTSIDE_IP, OUTSIDE_IP6, Side};
use sidelb_tests::harness::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

const CALLS: u64 = 60;

fn has_ipv6_loopback() -> bool {
    match std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: this host has no IPv6 loopback: {e}");
            false
        }
    }
}

fn on_ipv6_loopback(addr: SocketAddr) -> SocketAddr {
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST, "configured as 127.0.0.1");
    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
}

fn assert_balanced(tally: &Tally, context: &str) {
    assert_eq!(tally.ok(), CALLS, "{context}: {tally}");
    for name in ["a", "b"] {
        assert!(
            tally.served_by(name) > 0,
            "{context}: {name} got nothing: {tally}"
        );
    }
}

#[tokio::test]
async fn an_app_on_ipv6_loopback_gets_balanced_calls() {
    if !has_ipv6_loopback() {
        return;
    }
    let setup = EchoSetup::start(&["a", "b"], BackendOptions::default(), &[])
        .await
        .expect("setup");
    let proxy = &setup.proxy;
    let request = EchoRequest::default();

    let outbound = on_ipv6_loopback(proxy.outbound_addr());
    let by_authority = client::connect_with_authority(outbound, ECHO)
        .await
        .expect("connects to [::1] on the authority listener's port");
    assert_balanced(
        &unary_calls(&by_authority, CALLS, &request).await,
        "authority listener on ::1",
    );

    let upstream = on_ipv6_loopback(proxy.upstream_addr(ECHO).expect("upstream"));
    let mapped = client::connect(upstream)
        .await
        .expect("connects to [::1] on the upstream's port");
    assert_balanced(
        &unary_calls(&mapped, CALLS, &request).await,
        "upstream listener on ::1",
    );

    // The admin server, 127.0.0.1 by default, is on ::1 too, and ::1 is loopback.
    let admin = on_ipv6_loopback(proxy.admin_addr());
    for path in [LIVE_PATH, READY_PATH, ENDPOINTS_PATH] {
        let (status, body) = http_get::get(admin, path).await.expect("answered");
        assert_eq!(status.as_u16(), 200, "{path} on {admin}: {body}");
    }
}

async fn get_from(pod: &PodNet, side: Side, addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = pod
        .connect(side, addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} from {side:?}: {e:#}"));
    let (status, _, body) = http_get::get_on(stream, "pod", addr, path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {addr} from {side:?}: {e:#}"));
    (status.as_u16(), body)
}

#[tokio::test]
async fn the_admin_port_answers_on_both_pod_ips_and_control_paths_stay_loopback_only() {
    if !has_ipv6_loopback() {
        return;
    }
    let pod = match PodNet::create() {
        Ok(pod) => Arc::new(pod),
        Err(e) => {
            eprintln!("SKIPPED: this test needs network namespaces: {e:#}");
            return;
        }
    };
    let file = EndpointsFile::create(&[ServiceEndpoints::new(
        "echo",
        "default",
        50051,
        &["127.0.0.1:1".parse().expect("an address")],
    )])
    .expect("endpoints file");
    let options = ProxyOptions::file_discovery(&file)
        .env(settings::ADMIN_ADDR, format!("0.0.0.0:{ADMIN_PORT}"))
        .in_pod(pod.clone());
    let proxy = Proxy::spawn(options).await.expect("proxy in the pod");

    // The kubelet, or another pod, on either family of the pod's address.
    for (addr, client_ip) in [
        (PodNet::pod_addr6(ADMIN_PORT), OUTSIDE_IP6.to_string()),
        (PodNet::pod_addr(ADMIN_PORT), OUTSIDE_IP.to_string()),
    ] {
        for path in [LIVE_PATH, READY_PATH] {
            let (status, body) = get_from(&pod, Side::Outside, addr, path).await;
            assert_eq!(status, 200, "{path} on {addr}: {body}");
        }
        let (status, body) = get_from(&pod, Side::Outside, addr, ENDPOINTS_PATH).await;
        assert_eq!(status, 403, "/endpoints on {addr}: {body}");
        assert!(
            body.contains(&format!("this one is {client_ip}.")),
            "the client named as itself: {body}"
        );
    }

    // Inside the pod, on either loopback.
    for ip in [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()] {
        let addr = SocketAddr::new(ip, ADMIN_PORT);
        let (status, body) = get_from(&pod, Side::Pod, addr, ENDPOINTS_PATH).await;
        assert_eq!(status, 200, "/endpoints on {addr} from the pod: {body}");
        assert!(body.contains("echo.default:50051"), "{body}");
    }
    drop(proxy);
}
