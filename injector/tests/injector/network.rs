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

#[tokio::test]
async fn host_network_port_clashes_and_open_upstreams_are_not_injected() {
    let injector = Process::start(&[]).await;
    let mut conn = client::connect(injector.addr, &injector.ca.pem(), Proto::H2)
        .await
        .expect("connect");

    let mut host = bare();
    set(&mut host, "/request/object/spec/hostNetwork", json!(true));
    let answer = review(&mut conn, &host).await;
    answer.assert_unchanged(&host);
    assert_eq!(answer.warnings.len(), 1, "{answer:?}");
    assert!(
        answer.warnings[0].contains("hostNetwork") && answer.warnings[0].contains("not added"),
        "{answer:?}"
    );

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

    let plain = review(&mut conn, &bare()).await;
    assert!(plain.allowed && plain.patch.is_some(), "{plain:?}");
    assert!(plain.warnings.is_empty(), "{plain:?}");

    let metrics = conn.get("/metrics").await.text();
    for series in [
        r#"result="skipped",reason="host-network"} 1"#,
        r#"result="refused",reason="port-clash"} 3"#,
        r#"result="refused",reason="invalid-annotation"} 1"#,
        r#"result="injected",reason="native-sidecar"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}
