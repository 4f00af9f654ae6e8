//! Invalid annotations are refused as a whole, with a message that names the
//! annotation, the value and what is accepted.

use crate::support::TestInjector;
use crate::support::client::Proto;
use crate::support::reviews::{bare, job, with_annotations};

#[tokio::test]
async fn each_invalid_annotation_is_refused_with_a_reason() {
    let server = TestInjector::start().await;
    let cases = [
        ("sidelb.io/balancer", "random", "least-request"),
        (
            "sidelb.io/upstreams",
            "greeter=15001",
            "service[.namespace]:port=localport",
        ),
        ("sidelb.io/proxy-memory-limit", "64MB", "64Mi"),
        ("sidelb.io/proxy-cpu-request", "-1", "zero or more"),
        ("sidelb.io/shutdown-grace", "soon", "duration"),
        ("sidelb.io/header-read-timeout", "1ns", "from 1ms to 24h"),
        ("sidelb.io/native-sidecar", "yes", "`true` or `false`"),
        ("sidelb.io/log-level", "loud", "trace, debug, info"),
        (
            "sidelb.io/backend-tls",
            "a.b.c",
            "service[.namespace][:port][=server-name]",
        ),
        (
            "sidelb.io/backend-tls-ca",
            "vault:ca",
            "`secret:NAME` or `configmap:NAME`",
        ),
        (
            "sidelb.io/backend-tls-ca",
            "secret:Not_A_Name",
            "`secret:NAME` or `configmap:NAME`",
        ),
    ];
    for (key, value, accepted) in cases {
        for proto in Proto::BOTH {
            let review = with_annotations(job(), &[(key, value)]);
            let answer = server.review(proto, &review).await;
            assert_eq!(answer.uid, review["request"]["uid"].as_str().unwrap());
            assert!(!answer.allowed, "{key}={value}");
            assert!(answer.patch.is_none(), "never a half-applied patch");
            let status = answer.status.expect("a status");
            assert_eq!(status["code"], 400);
            assert_eq!(status["reason"], "BadRequest");
            let message = status["message"].as_str().unwrap();
            assert!(message.contains(key), "{message}");
            assert!(message.contains(&format!("`{value}`")), "{message}");
            assert!(message.contains(accepted), "{message}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn tls_backends_without_their_ca_are_refused() {
    let server = TestInjector::start().await;
    let review = with_annotations(job(), &[("sidelb.io/backend-tls", "greeter")]);
    let answer = server.review(Proto::H1, &review).await;
    assert!(!answer.allowed, "{answer:?}");
    let status = answer.status.expect("a status");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("sidelb.io/backend-tls lists services")
            && message.contains("sidelb.io/backend-tls-ca is not set"),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_upstream_on_the_sidecars_own_port_is_refused() {
    let server = TestInjector::start().await;
    for port in [4140, 4191] {
        let value = format!("greeter:50051=15001,orders.shop:grpc={port}");
        let review = with_annotations(job(), &[("sidelb.io/upstreams", value.as_str())]);
        let answer = server.review(Proto::H2, &review).await;
        assert!(!answer.allowed, "{value}");
        assert!(answer.patch.is_none());
        let message = answer.status.unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("sidelb.io/upstreams")
                && message.contains(&format!("local port {port} of `orders.shop:grpc`"))
                && message.contains("pick another port"),
            "{message}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn every_invalid_annotation_is_named_at_once() {
    let server = TestInjector::start().await;
    let review = with_annotations(
        bare(),
        &[
            ("sidelb.io/balancer", "random"),
            ("sidelb.io/proxy-cpu-limit", "lots"),
            ("sidelb.io/upstreams", "a:1=15001"),
        ],
    );
    let answer = server.review(Proto::H2, &review).await;
    assert!(!answer.allowed);
    let message = answer.status.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("sidelb.io/balancer") && message.contains("sidelb.io/proxy-cpu-limit"),
        "{message}"
    );
    assert!(
        !message.contains("sidelb.io/upstreams"),
        "a valid annotation is not blamed: {message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_above_its_limit_is_refused() {
    let server = TestInjector::start().await;
    let review = with_annotations(bare(), &[("sidelb.io/proxy-memory-request", "128Mi")]);
    let answer = server.review(Proto::H2, &review).await;
    assert!(!answer.allowed);
    let message = answer.status.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("sidelb.io/proxy-memory-request: `128Mi` is above the limit `64Mi`"),
        "{message}"
    );
    assert!(
        message.contains("sidelb.io/proxy-memory-limit"),
        "{message}"
    );
    let raised = with_annotations(review, &[("sidelb.io/proxy-memory-limit", "256Mi")]);
    assert!(server.review(Proto::H2, &raised).await.allowed);
    server.stop().await;
}
