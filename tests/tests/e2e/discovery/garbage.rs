//! Garbage in API objects: EndpointSlices whose addresses are no addresses
//! and whose ports are no ports (the fake API server stores what its schema
//! lets through, as a buggy controller or a hand-written slice could).
//! The proxy skips every such endpoint, keeps balancing over the sound ones
//! of the same Service, and keeps following later changes: nothing panics,
//! nothing is dialed that should not be.
//!
//! On the fake API server: the real one validates EndpointSlices and
//! refuses most of this garbage, so it cannot be stored there on demand;
//! the proxy must still not trust that every server or version does.

use super::cluster::*;
use serde_json::{Value, json};

const TARGET: &str = "echo.default:50051";

/// A slice of Service echo as raw JSON: `ports` and `endpoints` as given.
fn raw_slice(name: &str, address_type: &str, ports: Value, endpoints: Value) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": { "kubernetes.io/service-name": "echo" },
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    })
}

fn at(address: &str) -> Value {
    json!({ "addresses": [address], "conditions": conditions::ready() })
}

#[tokio::test]
async fn garbage_addresses_and_ports_are_skipped_and_the_rest_served() {
    let cluster = Cluster::start();
    let mut pods = Pods::new();
    let started = pods.start_all(&["a", "b"]).await;
    let (a, b) = (&started[0], &started[1]);
    let port = a.addr().port();
    cluster.apply(grpc_service("echo", port));
    let grpc_port = json!([{ "name": "grpc", "port": port, "protocol": "TCP" }]);
    cluster.apply_slice(&Slice::grpc("echo", "echo-good", &[a]));

    let long = "9".repeat(10_000);
    // Addresses that are no IPv4 address, under a sound port.
    cluster.apply(raw_slice(
        "echo-bad-addresses",
        "IPv4",
        grpc_port.clone(),
        json!([
            at("not-an-ip"),
            at("999.1.1.1"),
            at("127.0.0.1/32"),
            at("127.0.0.1:80"),
            at("fd00::1"),
            at(""),
            at("\u{0}\u{7f}é"),
            at(&long),
        ]),
    ));
    // A sound pod (b) under ports that are no ports.
    let b_ip = b.addr().ip().to_string();
    for (name, ports) in [
        (
            "echo-port-negative",
            json!([{ "name": "grpc", "port": -1 }]),
        ),
        ("echo-port-zero", json!([{ "name": "grpc", "port": 0 }])),
        ("echo-port-huge", json!([{ "name": "grpc", "port": 70000 }])),
        (
            "echo-port-max",
            json!([{ "name": "grpc", "port": i32::MAX }]),
        ),
        ("echo-port-none", json!([{ "name": "grpc" }])),
        (
            "echo-port-udp",
            json!([{ "name": "grpc", "port": port, "protocol": "UDP" }]),
        ),
        (
            "echo-port-other",
            json!([{ "name": "metrics", "port": port }]),
        ),
        ("echo-no-ports", json!([])),
        ("echo-ports-null", Value::Null),
    ] {
        cluster.apply(raw_slice(name, "IPv4", ports, json!([at(&b_ip)])));
    }
    // An address type sidelb does not dial, and one that does not exist.
    cluster.apply(raw_slice(
        "echo-fqdn",
        "FQDN",
        grpc_port.clone(),
        json!([at(&b_ip), at("b.example.com")]),
    ));

    let proxy = cluster.proxy(&[TARGET]).await;
    wait_for_pods(&proxy, TARGET, &["a"]).await;
    let known = known(&proxy, TARGET).await.expect("view").expect("echo");
    assert_eq!(known.addresses, [a.addr().to_string()], "{known:?}");
    let client = client(&proxy, TARGET).await;
    let tally = all_ok(&client, 30).await;
    assert_eq!(tally.served_by("a"), 30, "{tally}");
    assert_eq!(
        b.stats().await.expect("stats").calls,
        0,
        "b was never dialed"
    );

    // The watch goes on past the garbage: b joins the good slice, and the
    // garbage slices change again.
    cluster.apply_slice(&Slice::grpc("echo", "echo-good", &[a, b]));
    cluster.apply(raw_slice(
        "echo-port-negative",
        "IPv4",
        json!([{ "name": "grpc", "port": -7 }]),
        json!([at("still-not-an-ip")]),
    ));
    wait_for_pods(&proxy, TARGET, &["a", "b"]).await;
    let tally = all_ok(&client, 60).await;
    assert!(
        tally.served_by("a") > 0 && tally.served_by("b") > 0,
        "{tally}"
    );
    assert!(
        proxy
            .admin_get("/live")
            .await
            .expect("alive")
            .0
            .is_success(),
        "the proxy is still up"
    );
}
