//! `failurePolicy` when the webhook cannot be called: nothing listening, a certificate
//! the `caBundle` does not verify, no answer within `timeoutSeconds`. `Ignore` lets
//! the pod in unchanged; `Fail` refuses it with kube-apiserver's 500 message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::core::Status;
use serde_json::{Value, json};
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_fake_apiserver::tls::TestCa;

use super::fixtures::{init_names, pod, pods, webhook_config};
use super::webhook::{H2, Webhook};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A fake server with an injecting webhook running, and the pods API.
async fn setup() -> (FakeApiServer, Webhook, Api<Pod>) {
    let server = FakeApiServer::start().expect("server starts");
    let ca = TestCa::new("webhook CA").expect("ca");
    let webhook = Webhook::start(&ca, H2).await;
    let api = pods(&server, "default").await;
    (server, webhook, api)
}

/// The webhook entry `down.test` with `client` and `policy` (failurePolicy,
/// timeoutSeconds).
fn register(server: &FakeApiServer, client: Value, policy: Value) {
    server
        .apply(webhook_config("down", "down.test", client, policy))
        .expect("registered");
}

fn status(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("not a Status: {other:?}"),
    }
}

#[tokio::test]
async fn nothing_listening_lets_the_pod_in_unchanged_under_ignore() {
    let (server, webhook, api) = setup().await;
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/inject");
    register(
        &server,
        json!({ "url": url, "caBundle": webhook.ca_bundle }),
        json!({ "failurePolicy": "Ignore" }),
    );
    let created = api
        .create(&PostParams::default(), &pod("ignored-", json!({})))
        .await
        .expect("Ignore lets the pod in");
    assert!(init_names(&created).is_empty());
}

#[tokio::test]
async fn nothing_listening_refuses_the_pod_under_fail_with_the_api_servers_message() {
    let (server, webhook, api) = setup().await;
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/inject");
    register(
        &server,
        json!({ "url": url, "caBundle": webhook.ca_bundle }),
        json!({ "failurePolicy": "Fail" }),
    );
    let status = status(
        api.create(&PostParams::default(), &pod("failed-", json!({})))
            .await
            .expect_err("Fail refuses the pod"),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    assert_eq!(
        status.message,
        format!(
            "Internal error occurred: failed calling webhook \"down.test\": failed to call webhook: Post \"https://127.0.0.1:{port}/inject?timeout=10s\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
}

#[tokio::test]
async fn a_certificate_the_ca_bundle_does_not_verify_is_never_sent_the_pod() {
    let (server, webhook, api) = setup().await;
    let stranger = TestCa::new("some other CA").expect("ca");
    register(
        &server,
        json!({ "url": webhook.url("/inject"), "caBundle": STANDARD.encode(stranger.pem()) }),
        json!({ "failurePolicy": "Fail" }),
    );
    let status = status(
        api.create(&PostParams::default(), &pod("untrusted-", json!({})))
            .await
            .expect_err("unverified certificate"),
    );
    assert_eq!(status.code, 500);
    assert!(status.message.contains("certificate"), "{}", status.message);
    assert!(
        webhook.calls_for("/inject", "untrusted-").is_empty(),
        "nothing was sent to an unverified server"
    );
}

#[tokio::test]
async fn no_answer_within_timeout_seconds_fails_or_is_ignored_by_policy() {
    let (server, webhook, api) = setup().await;
    let slow = json!({ "url": webhook.url("/hang"), "caBundle": webhook.ca_bundle });
    register(
        &server,
        slow.clone(),
        json!({ "failurePolicy": "Fail", "timeoutSeconds": 1 }),
    );
    let status = status(
        api.create(&PostParams::default(), &pod("slow-", json!({})))
            .await
            .expect_err("timed out"),
    );
    assert!(
        status.message.ends_with("context deadline exceeded"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("/hang?timeout=1s"),
        "{}",
        status.message
    );
    register(
        &server,
        slow,
        json!({ "failurePolicy": "Ignore", "timeoutSeconds": 1 }),
    );
    api.create(&PostParams::default(), &pod("slow-ignored-", json!({})))
        .await
        .expect("Ignore lets the pod in");
}
