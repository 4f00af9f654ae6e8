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

/// A fake server with namespaces `injected` (labelled) and `plain`, the
/// injecting webhook (namespaceSelector, reinvocation `IfNeeded`) and a
/// second one that labels pods labelled `touch: me`.
async fn setup() -> (FakeApiServer, Webhook) {
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
    (server, webhook)
}

async fn create_in(server: &FakeApiServer, namespace: &str, pod: &Pod) -> Pod {
    pods(server, namespace)
        .await
        .create(&PostParams::default(), pod)
        .await
        .expect("created")
}

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[tokio::test]
async fn a_pod_outside_the_selected_namespaces_is_not_sent_to_the_webhook() {
    let (server, webhook) = setup().await;
    let plain = create_in(&server, "plain", &pod("plain-", json!({}))).await;
    assert!(
        init_names(&plain).is_empty(),
        "namespaceSelector kept the webhook away"
    );
    assert!(webhook.calls_for("/inject", "plain-").is_empty());
}

#[tokio::test]
async fn the_review_is_what_kube_apiserver_sends_after_its_own_admission() {
    let (server, webhook) = setup().await;
    let injected = create_in(&server, "injected", &pod("app-", json!({}))).await;
    assert_eq!(init_names(&injected), ["sidelb-proxy"]);
    assert!(
        injected.name_any().starts_with("app-") && injected.name_any().len() == "app-".len() + 5
    );
    let calls = webhook.calls_for("/inject", "app-");
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
        app_mounts.to_string().contains(TOKEN_PATH),
        "built-in ServiceAccount admission ran first"
    );
}

#[tokio::test]
async fn the_token_mounted_into_the_added_container_reinvokes_the_webhook_once() {
    let (server, webhook) = setup().await;
    create_in(&server, "injected", &pod("app-", json!({}))).await;
    let calls = webhook.calls_for("/inject", "app-");
    assert_eq!(
        calls.len(),
        2,
        "reinvoked once: the ServiceAccount plugin, run again, mounted its token into the added container"
    );
    assert!(
        calls[1].1["request"]["object"]["spec"]["initContainers"][0]["volumeMounts"]
            .to_string()
            .contains(TOKEN_PATH)
    );
}

#[tokio::test]
async fn without_a_token_nothing_changes_the_pod_after_the_webhook_so_it_is_called_once() {
    let (server, webhook) = setup().await;
    let untouched: Pod = serde_json::from_value(json!({
        "metadata": { "generateName": "no-token-" },
        "spec": { "automountServiceAccountToken": false, "containers": [ { "name": "app", "image": "app:1" } ] }
    }))
    .expect("pod");
    let untouched = create_in(&server, "injected", &untouched).await;
    assert_eq!(init_names(&untouched), ["sidelb-proxy"]);
    assert_eq!(
        webhook.calls_for("/inject", "no-token-").len(),
        1,
        "called once when nothing changed the pod after it"
    );
}

#[tokio::test]
async fn another_webhooks_patch_reinvokes_it_and_it_adds_nothing_twice() {
    let (server, webhook) = setup().await;
    let touched = create_in(
        &server,
        "injected",
        &pod("touched-", json!({ "touch": "me" })),
    )
    .await;
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
        sidecar_mounts.to_string().contains(TOKEN_PATH),
        "built-in admission ran again and mounted the token into the injected container"
    );
}
