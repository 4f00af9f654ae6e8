//! `failurePolicy` when the webhook cannot be called: nothing listening, a certificate
//! the `caBundle` does not verify, no answer within `timeoutSeconds`. `Ignore` lets
//! the pod in unchanged; `Fail` refuses it with kube-apiserver's 500 message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::api::PostParams;
use serde_json::json;
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_fake_apiserver::tls::TestCa;

use super::fixtures::{init_names, pod, pods, webhook_config};
use super::webhook::{H2, Webhook};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn failure_policy_when_the_webhook_is_down_untrusted_or_slow() {
    let server = FakeApiServer::start().expect("server starts");
    let ca = TestCa::new("webhook CA").expect("ca");
    let webhook = Webhook::start(&ca, H2).await;
    let api = pods(&server, "default").await;
    let port = free_port();
    let down = |policy: &str| {
        webhook_config(
            "down",
            "down.test",
            json!({ "url": format!("https://127.0.0.1:{port}/inject"), "caBundle": webhook.ca_bundle }),
            json!({ "failurePolicy": policy }),
        )
    };

    server.apply(down("Ignore")).expect("registered");
    let created = api
        .create(&PostParams::default(), &pod("ignored-", json!({})))
        .await
        .expect("Ignore lets the pod in");
    assert!(init_names(&created).is_empty());

    server.apply(down("Fail")).expect("updated");
    let err = api
        .create(&PostParams::default(), &pod("failed-", json!({})))
        .await
        .expect_err("Fail refuses the pod");
    let kube::Error::Api(status) = err else {
        panic!("not a Status: {err:?}")
    };
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

    let stranger = TestCa::new("some other CA").expect("ca");
    let untrusted =
        json!({ "url": webhook.url("/inject"), "caBundle": STANDARD.encode(stranger.pem()) });
    server
        .apply(webhook_config(
            "down",
            "down.test",
            untrusted,
            json!({ "failurePolicy": "Fail" }),
        ))
        .expect("updated");
    let err = api
        .create(&PostParams::default(), &pod("untrusted-", json!({})))
        .await
        .expect_err("unverified certificate");
    let kube::Error::Api(status) = err else {
        panic!("not a Status: {err:?}")
    };
    assert_eq!(status.code, 500);
    assert!(status.message.contains("certificate"), "{}", status.message);
    assert!(
        webhook.calls_for("/inject", "untrusted-").is_empty(),
        "nothing was sent to an unverified server"
    );

    let slow = json!({ "url": webhook.url("/hang"), "caBundle": webhook.ca_bundle });
    server
        .apply(webhook_config(
            "down",
            "down.test",
            slow.clone(),
            json!({ "failurePolicy": "Fail", "timeoutSeconds": 1 }),
        ))
        .expect("updated");
    let err = api
        .create(&PostParams::default(), &pod("slow-", json!({})))
        .await
        .expect_err("timed out");
    let kube::Error::Api(status) = err else {
        panic!("not a Status: {err:?}")
    };
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
    server
        .apply(webhook_config(
            "down",
            "down.test",
            slow,
            json!({ "failurePolicy": "Ignore", "timeoutSeconds": 1 }),
        ))
        .expect("updated");
    api.create(&PostParams::default(), &pod("slow-ignored-", json!({})))
        .await
        .expect("Ignore lets the pod in");
}
