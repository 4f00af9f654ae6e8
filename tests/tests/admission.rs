//! Mutating admission as kube-apiserver does it: a real HTTPS webhook (rustls, a
//! certificate from a test CA in `caBundle`) registered with a
//! MutatingWebhookConfiguration, pods created through the `kube` client, and checks of
//! the AdmissionReview sent, selectors, patch application, failurePolicy, denials,
//! Service references and reinvocation.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use sidelb_tests::kube_api::FakeApiServer;
use sidelb_tests::kube_api::tls::TestCa;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const HTTP1_ONLY: &[&[u8]] = &[b"http/1.1"];

/// Every review a webhook received: (request URI, AdmissionReview).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook server on 127.0.0.1 that records its calls and answers per path:
/// `/inject` adds a `sidelb-proxy` init container unless present, `/label` adds the
/// label `touched=yes`, `/deny` refuses, `/hang` never answers.
struct Webhook {
    addr: SocketAddr,
    calls: Calls,
    ca_bundle: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn review_response(review: &Value, patch: Option<Value>, allowed: bool) -> Value {
    let uid = review
        .pointer("/request/uid")
        .cloned()
        .unwrap_or(Value::Null);
    let mut response = json!({ "uid": uid, "allowed": allowed });
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(STANDARD.encode(serde_json::to_vec(&patch).expect("patch encodes")));
    }
    if !allowed {
        response["status"] =
            json!({ "code": 403, "message": "pods in this namespace need an owner" });
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response })
}

fn inject(review: &Value) -> Value {
    let pod = &review["request"]["object"];
    let present = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == "sidelb-proxy"));
    if present {
        return review_response(review, None, true);
    }
    let container =
        json!({ "name": "sidelb-proxy", "image": "sidelb/proxy:test", "restartPolicy": "Always" });
    let op = match pod.pointer("/spec/initContainers") {
        Some(Value::Array(_)) => {
            json!({ "op": "add", "path": "/spec/initContainers/0", "value": container })
        }
        _ => json!({ "op": "add", "path": "/spec/initContainers", "value": [container] }),
    };
    review_response(review, Some(json!([op])), true)
}

async fn answer(
    calls: Calls,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let uri = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let body = request.into_body().collect().await?.to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    calls
        .lock()
        .expect("calls lock")
        .push((uri, review.clone()));
    let reply = match path.as_str() {
        "/inject" => inject(&review),
        "/label" => review_response(
            &review,
            Some(json!([{ "op": "add", "path": "/metadata/labels/touched", "value": "yes" }])),
            true,
        ),
        "/deny" => review_response(&review, None, false),
        _ => std::future::pending().await,
    };
    Ok(Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&reply).expect("reply encodes"),
    ))))
}

impl Webhook {
    /// Starts the webhook; `alpn` is what its TLS offers (kube-apiserver speaks both).
    async fn start(ca: &TestCa, alpn: &[&[u8]]) -> Webhook {
        let config = ca
            .server_config(&["127.0.0.1", "injector.sidelb.svc"])
            .expect("webhook certificate");
        let mut config = (*config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook");
        let addr = listener.local_addr().expect("webhook address");
        let calls: Calls = Arc::default();
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let calls = recorded.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request| answer(calls.clone(), request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Webhook {
            addr,
            calls,
            ca_bundle: STANDARD.encode(ca.pem()),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Calls whose pod has `generateName` (or name) starting with `prefix`.
    fn calls_for(&self, path: &str, prefix: &str) -> Vec<(String, Value)> {
        self.calls
            .lock()
            .expect("calls lock")
            .iter()
            .filter(|(uri, review)| {
                let meta = &review["request"]["object"]["metadata"];
                let name = meta["generateName"]
                    .as_str()
                    .or(meta["name"].as_str())
                    .unwrap_or("");
                uri.starts_with(path) && name.starts_with(prefix)
            })
            .cloned()
            .collect()
    }
}

fn webhook_config(name: &str, hook_name: &str, client_config: Value, extra: Value) -> Value {
    let mut hook = json!({
        "name": hook_name,
        "clientConfig": client_config,
        "rules": [ { "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"] } ],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(hook), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        hook.extend(extra.clone());
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": name },
        "webhooks": [hook]
    })
}

fn pod(prefix: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "generateName": prefix, "labels": labels },
        "spec": { "containers": [ { "name": "app", "image": "app:1" } ] }
    }))
    .expect("pod")
}

async fn pods(server: &FakeApiServer, namespace: &str) -> Api<Pod> {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Api::namespaced(Client::try_from(config).expect("client"), namespace)
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": labels } })
}

fn init_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
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
