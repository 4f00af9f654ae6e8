//! The HTTP surface: routing, methods, malformed and oversized bodies, and a
//! server that stays up whatever it is sent.

use crate::support::client::{Proto, full};
use crate::support::reviews::{bare, set};
use crate::support::{MUTATE, TestInjector};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;
use sidelb_injector::server::MAX_BODY;
use std::convert::Infallible;
use tokio::io::AsyncWriteExt;

/// Sends `body` and expects a `meta/v1` Status with `code` whose message
/// contains `reason`.
async fn expect_status(
    server: &TestInjector,
    proto: Proto,
    body: impl Into<Bytes>,
    code: u16,
    reason: &str,
) {
    let mut conn = server.connect(proto).await;
    let reply = conn.post(MUTATE, body).await;
    assert_eq!(reply.status, code, "{}", reply.text());
    let status = reply.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], code);
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(reason), "`{reason}` not in `{message}`");
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_reason() {
    let server = TestInjector::start().await;
    let mut no_uid = bare();
    set(&mut no_uid, "/request/uid", json!(""));
    let mut beta = bare();
    set(&mut beta, "/apiVersion", json!("admission.k8s.io/v1beta1"));
    let mut no_object = bare();
    set(&mut no_object, "/request/object", json!(null));
    let mut not_a_pod = bare();
    set(
        &mut not_a_pod,
        "/request/object/spec/containers",
        json!("web"),
    );
    let cases = [
        (String::new(), "the body is empty"),
        ("   \n".to_owned(), "the body is empty"),
        (
            "{\"kind\": ".to_owned(),
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            "[1, 2]".to_owned(),
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            bare()["request"]["object"].to_string(),
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            "no request",
        ),
        (no_uid.to_string(), "request.uid is empty"),
        (beta.to_string(), "admission.k8s.io/v1beta1"),
        (no_object.to_string(), "request.object is missing"),
        (not_a_pod.to_string(), "request.object is not a Pod"),
    ];
    for (body, reason) in cases {
        for proto in Proto::BOTH {
            expect_status(&server, proto, body.clone(), 400, reason).await;
        }
    }
    assert!(
        server
            .metrics()
            .await
            .contains(r#"result="error",reason="malformed"} 20"#)
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let server = TestInjector::start().await;
    let big = vec![b' '; MAX_BODY + 1];
    for proto in Proto::BOTH {
        expect_status(&server, proto, big.clone(), 413, "larger than").await;
    }
    // Without a length up front: read until the limit, then refused.
    let chunks =
        (0..4).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b' '; MAX_BODY / 3]))));
    let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)));
    let mut conn = server.connect(Proto::H2).await;
    let reply = conn.request(Method::POST, MUTATE, body).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // At the limit is fine (and then malformed).
    expect_status(&server, Proto::H2, vec![b' '; MAX_BODY], 400, "empty").await;
    server.stop().await;
}

#[tokio::test]
async fn routes_on_the_path_alone() {
    let server = TestInjector::start().await;
    for proto in Proto::BOTH {
        let mut conn = server.connect(proto).await;
        for path in ["/mutate", "/mutate?timeout=10s", "/mutate?timeout=30s&x=y"] {
            let reply = conn.post(path, bare().to_string()).await;
            assert_eq!(reply.status, 200, "{path}");
        }
        let health = conn.get("/healthz").await;
        assert_eq!(
            (health.status.as_u16(), health.text().as_str()),
            (200, "ok\n")
        );
        let metrics = conn.get("/metrics").await;
        assert_eq!(metrics.status, 200);
        assert_eq!(
            metrics.content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = metrics.text();
        assert!(text.contains("# TYPE sidelb_injector_admission_requests_total counter"));
        assert!(!text.contains("# EOF"));
        let openmetrics = conn
            .get_accepting(
                "/metrics",
                "application/openmetrics-text;version=1.0.0,*/*;q=0.1",
            )
            .await;
        assert!(
            openmetrics
                .content_type
                .starts_with("application/openmetrics-text")
        );
        let text = openmetrics.text();
        assert!(text.contains("sidelb_injector_admission_requests_total"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            conn.get("/mutate").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            conn.request(Method::POST, "/healthz", full("x"))
                .await
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(conn.get("/validate").await.status, StatusCode::NOT_FOUND);
        assert_eq!(
            conn.post("/mutate/extra", "{}").await.status,
            StatusCode::NOT_FOUND
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn garbage_and_dropped_connections_do_not_take_it_down() {
    let server = TestInjector::start().await;
    // Not TLS at all.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(raw);
    // TLS, then garbage instead of HTTP.
    let mut conn = server.connect(Proto::H1).await;
    let reply = conn
        .try_request(
            Method::POST,
            "/mutate",
            full(Bytes::from_static(b"\xff\xfe")),
        )
        .await
        .expect("a reply");
    assert_eq!(reply.status, 400);
    // A request whose body never ends, left hanging.
    let chunks =
        futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{")))])
            .chain(futures_util::stream::pending());
    let mut stuck = server.connect(Proto::H2).await;
    let hanging = tokio::spawn(async move {
        let _ = stuck
            .try_request(
                Method::POST,
                MUTATE,
                BodyExt::boxed(StreamBody::new(chunks)),
            )
            .await;
    });
    // Still serving, on a fresh connection.
    let answer = server.review(Proto::H2, &bare()).await;
    assert!(answer.allowed);
    hanging.abort();
    // Not stopped gracefully: the hanging request would hold the drain.
}
