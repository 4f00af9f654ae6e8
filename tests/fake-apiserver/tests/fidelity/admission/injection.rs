//! Injection into pods of labelled namespaces (`namespaceSelector`): the
//! AdmissionReview a webhook receives, the JSONPatch applied, built-in ServiceAccount
//! admission running first, and reinvocation (`IfNeeded`) after a later change,
//! be it another webhook's patch or the built-in plugin mounting its token.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::{Value, json};
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_fake_apiserver::tls::TestCa;

use super::fixtures::{init_names, pod, pods, webhook_config};
use super::webhook::{H2, Webhook};

fn namespace(name: &str, labels: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": labels } })
}

#[tokio::test]
async fn injects_by_namespace_selector_and_reinvokes_after_later_changes() {
    let server = FakeApiServer::start().expect("server starts");
    let ca = TestCa::new("webhook CA").expect("ca");
    let webhook = Webhook::start(&ca, H2).await;
    server
        .create(namespace(
            "injected",
            json!({ "sidelb.io/inject": "enabled" }),
        ))
        .expect("ns");
    server.create(namespace("plain", json!({}))).expect("ns");
    let inject_config = json!({ "url": webhook.url("/inject"), "caBundle": webhook.ca_bundle });
    server
        .create(webhook_config(
            "a-sidelb",
            "inject.sidelb.io",
            inject_config,
            json!({ "namespaceSelector": { "matchLabels": { "sidelb.io/inject": "enabled" } }, "reinvocationPolicy": "IfNeeded" }),
        ))
        .expect("webhook registered");
    let label_config = json!({ "url": webhook.url("/label"), "caBundle": webhook.ca_bundle });
    server
        .create(webhook_config(
            "b-labeler",
            "label.test",
            label_config,
            json!({ "objectSelector": { "matchLabels": { "touch": "me" } } }),
        ))
        .expect("webhook registered");

    let plain = pods(&server, "plain")
        .await
        .create(&PostParams::default(), &pod("plain-", json!({})))
        .await
        .expect("created");
    assert!(
        init_names(&plain).is_empty(),
        "namespaceSelector kept the webhook away"
    );
    assert!(webhook.calls_for("/inject", "plain-").is_empty());

    let injected = pods(&server, "injected")
        .await
        .create(&PostParams::default(), &pod("app-", json!({})))
        .await
        .expect("created");
    assert_eq!(init_names(&injected), ["sidelb-proxy"]);
    assert!(
        injected.name_any().starts_with("app-") && injected.name_any().len() == "app-".len() + 5
    );
    let calls = webhook.calls_for("/inject", "app-");
    assert_eq!(
        calls.len(),
        2,
        "reinvoked once: the ServiceAccount plugin, run again, mounted its token into the added container"
    );
    assert!(
        calls[1].1["request"]["object"]["spec"]["initContainers"][0]["volumeMounts"]
            .to_string()
            .contains("/var/run/secrets/kubernetes.io/serviceaccount")
    );
    let (uri, review) = &calls[0];
    assert_eq!(uri, "/inject?timeout=10s");
    let request = &review["request"];
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert!(request["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(
        request["kind"],
        json!({ "group": "", "version": "v1", "kind": "Pod" })
    );
    assert_eq!(
        request["resource"],
        json!({ "group": "", "version": "v1", "resource": "pods" })
    );
    assert_eq!(request["requestResource"], request["resource"]);
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["namespace"], "injected");
    assert!(request.get("name").is_none(), "the pod has no name yet");
    assert_eq!(request["object"]["metadata"]["generateName"], "app-");
    assert_eq!(request["dryRun"], false);
    assert_eq!(request["options"]["kind"], "CreateOptions");
    assert!(request["userInfo"]["username"].is_string());
    let app_mounts = &request["object"]["spec"]["containers"][0]["volumeMounts"];
    assert!(
        app_mounts
            .to_string()
            .contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "built-in ServiceAccount admission ran first"
    );

    // Without the token, nothing changes the pod after the webhook: one call.
    let untouched: Pod = serde_json::from_value(json!({
        "metadata": { "generateName": "no-token-" },
        "spec": { "automountServiceAccountToken": false, "containers": [ { "name": "app", "image": "app:1" } ] }
    }))
    .expect("pod");
    let untouched = pods(&server, "injected")
        .await
        .create(&PostParams::default(), &untouched)
        .await
        .expect("created");
    assert_eq!(init_names(&untouched), ["sidelb-proxy"]);
    assert_eq!(
        webhook.calls_for("/inject", "no-token-").len(),
        1,
        "called once when nothing changed the pod after it"
    );

    let touched = pods(&server, "injected")
        .await
        .create(
            &PostParams::default(),
            &pod("touched-", json!({ "touch": "me" })),
        )
        .await
        .expect("created");
    assert_eq!(
        touched.labels().get("touched").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        init_names(&touched),
        ["sidelb-proxy"],
        "the reinvoked webhook added nothing twice"
    );
    let calls = webhook.calls_for("/inject", "touched-");
    assert_eq!(
        calls.len(),
        2,
        "reinvoked once after the labeler changed the pod"
    );
    assert_eq!(
        calls[1].1["request"]["object"]["metadata"]["labels"]["touched"],
        "yes"
    );
    let sidecar_mounts =
        serde_json::to_value(&touched.spec.as_ref().expect("spec").init_containers).expect("json");
    assert!(
        sidecar_mounts
            .to_string()
            .contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "built-in admission ran again and mounted the token into the injected container"
    );
}
