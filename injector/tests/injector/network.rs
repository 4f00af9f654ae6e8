//! Pods the sidecar cannot share a network with, through the binary: a
//! hostNetwork pod is left alone with a warning, a container on one of the
//! sidecar's ports and an upstream listening beyond loopback are refused
//! naming what clashes, and a plain pod is still injected.

use crate::support::client::{self, Conn, Proto};
use crate::support::process::Process;
use crate::support::reviews::{bare, set, with_annotations};
use crate::support::{Admission, MUTATE};
use serde_json::{Value, json};

async fn review(conn: &mut Conn, review: &Value) -> Admission {
    let reply = conn.post(MUTATE, review.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = Admission::parse(reply.json());
    assert_eq!(answer.uid, review["request"]["uid"].as_str().unwrap());
    answer
}

fn refusal(answer: &Admission) -> String {
    assert!(!answer.allowed, "{answer:?}");
    assert!(answer.patch.is_none(), "{answer:?}");
    let status = answer.status.as_ref().expect("a status");
    assert_eq!(status["code"], 400);
    status["message"].as_str().expect("a message").to_owned()
}

async fn injector() -> (Process, Conn) {
    let injector = Process::start(&[]).await;
    let conn = client::connect(injector.addr, &injector.ca.pem(), Proto::H2)
        .await
        .expect("connect");
    (injector, conn)
}

async fn assert_counted(conn: &mut Conn, series: &str) {
    let metrics = conn.get("/metrics").await.text();
    assert!(metrics.contains(series), "{series} in {metrics}");
}

#[tokio::test]
async fn a_host_network_pod_is_left_alone_with_a_warning() {
    let (_injector, mut conn) = injector().await;
    let mut host = bare();
    set(&mut host, "/request/object/spec/hostNetwork", json!(true));
    let answer = review(&mut conn, &host).await;
    answer.assert_unchanged(&host);
    assert_eq!(answer.warnings.len(), 1, "{answer:?}");
    assert!(
        answer.warnings[0].contains("hostNetwork") && answer.warnings[0].contains("not added"),
        "{answer:?}"
    );
    assert_counted(&mut conn, r#"result="skipped",reason="host-network"} 1"#).await;
}

#[tokio::test]
async fn a_container_on_a_sidecar_port_is_refused_naming_container_and_port() {
    let (_injector, mut conn) = injector().await;
    for port in [4140, 4191] {
        let mut clash = bare();
        set(
            &mut clash,
            "/request/object/spec/containers/0/ports/-",
            json!({"name": "other", "containerPort": port, "protocol": "TCP"}),
        );
        let message = refusal(&review(&mut conn, &clash).await);
        assert!(
            message.contains(&format!("container `web` uses port {port}")),
            "{message}"
        );
    }
    assert_counted(&mut conn, r#"result="refused",reason="port-clash"} 2"#).await;
}

#[tokio::test]
async fn an_init_container_on_an_upstreams_port_is_refused_naming_both() {
    let (_injector, mut conn) = injector().await;
    let mut clash = with_annotations(
        bare(),
        &[("sidelb.io/upstreams", "greeter.default:50051=15001")],
    );
    set(
        &mut clash,
        "/request/object/spec/initContainers",
        json!([{"name": "warm-up", "image": "app", "ports": [{"containerPort": 15001}]}]),
    );
    let message = refusal(&review(&mut conn, &clash).await);
    assert!(
        message.contains("container `warm-up` uses port 15001")
            && message.contains("upstream `greeter.default:50051`"),
        "{message}"
    );
    assert_counted(&mut conn, r#"result="refused",reason="port-clash"} 1"#).await;
}

#[tokio::test]
async fn an_upstream_listening_beyond_loopback_is_refused_naming_the_entry() {
    let (_injector, mut conn) = injector().await;
    let open = with_annotations(
        bare(),
        &[("sidelb.io/upstreams", "greeter.default:50051=0.0.0.0:15001")],
    );
    let message = refusal(&review(&mut conn, &open).await);
    assert!(
        message.contains("sidelb.io/upstreams")
            && message.contains("entry `greeter.default:50051=0.0.0.0:15001`")
            && message.contains("not loopback"),
        "{message}"
    );
    assert_counted(
        &mut conn,
        r#"result="refused",reason="invalid-annotation"} 1"#,
    )
    .await;
}

#[tokio::test]
async fn a_plain_pod_is_injected_without_warnings() {
    let (_injector, mut conn) = injector().await;
    let plain = review(&mut conn, &bare()).await;
    assert!(plain.allowed && plain.patch.is_some(), "{plain:?}");
    assert!(plain.warnings.is_empty(), "{plain:?}");
    assert_counted(&mut conn, r#"result="injected",reason="native-sidecar"} 1"#).await;
}
