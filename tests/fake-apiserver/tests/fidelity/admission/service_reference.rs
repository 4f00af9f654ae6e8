//! A webhook reached by Service reference rather than URL, over HTTP/1.1 only, and
//! chosen by `objectSelector` (pod labels); and a webhook that denies: its message
//! reaches the client in a 403, even with `failurePolicy: Ignore`.

use kube::api::PostParams;
use serde_json::json;
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_fake_apiserver::tls::TestCa;

use super::fixtures::{init_names, pod, pods, webhook_config};
use super::webhook::{HTTP1_ONLY, Webhook};

#[tokio::test]
async fn object_selector_service_reference_and_denial() {
    let server = FakeApiServer::start().expect("server starts");
    let ca = TestCa::new("webhook CA").expect("ca");
    let webhook = Webhook::start(&ca, HTTP1_ONLY).await;
    server.route_service("sidelb", "injector", 443, webhook.addr);
    let by_service = json!({ "service": { "namespace": "sidelb", "name": "injector", "path": "/inject" }, "caBundle": webhook.ca_bundle });
    server
        .create(webhook_config(
            "sidelb",
            "inject.sidelb.io",
            by_service,
            json!({ "objectSelector": { "matchLabels": { "sidelb.io/inject": "enabled" } } }),
        ))
        .expect("webhook registered");
    let api = pods(&server, "default").await;
    let labelled = api
        .create(
            &PostParams::default(),
            &pod("labelled-", json!({ "sidelb.io/inject": "enabled" })),
        )
        .await
        .expect("created");
    assert_eq!(init_names(&labelled), ["sidelb-proxy"]);
    let unlabelled = api
        .create(&PostParams::default(), &pod("unlabelled-", json!({})))
        .await
        .expect("created");
    assert!(init_names(&unlabelled).is_empty());

    let deny = json!({ "url": webhook.url("/deny"), "caBundle": webhook.ca_bundle });
    server
        .create(webhook_config("z-deny", "deny.test", deny, json!({ "failurePolicy": "Ignore", "objectSelector": { "matchLabels": { "deny": "yes" } } })))
        .expect("webhook registered");
    let err = api
        .create(
            &PostParams::default(),
            &pod("denied-", json!({ "deny": "yes" })),
        )
        .await
        .expect_err("denied");
    let kube::Error::Api(status) = err else {
        panic!("not a Status: {err:?}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "admission webhook \"deny.test\" denied the request: pods in this namespace need an owner"
    );
}
