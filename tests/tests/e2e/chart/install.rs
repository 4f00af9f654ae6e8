//! The Helm chart end to end, through the fake Kubernetes API server: the chart
//! is rendered by Helm's own engine (`charts/tests/render_chart.py`, with
//! `lookup` reading this server), its objects are stored, the real
//! `sidelb-injector` runs with the rendered Deployment's environment and the
//! rendered certificate Secret, the API server calls it for the rendered
//! MutatingWebhookConfiguration (verifying it against the rendered caBundle,
//! under the Service's DNS name), and pods created with the `kube` client come
//! out injected, or not, as the webhook's selectors say.
//!
//! Needs the project's Python environment (`make deps-python`, with the
//! packages of `charts/tests/requirements.txt`) and `sidelb-injector` built
//! (`cargo build --workspace --bins`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use sidelb_config::names;
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_tests::harness::Injector;
use sidelb_tests::harness::chart::{self, NAMESPACE};
use std::path::Path;

const INJECTOR: &str = "sidelb-injector";
const TLS_SECRET: &str = "sidelb-injector-tls";
const WEBHOOK_CONFIG: &str = "sidelb";

/// The chart's objects as Helm renders them; with `kubeconfig`, `lookup` sees
/// that cluster, as in `helm upgrade`.
fn render(kubeconfig: Option<&Path>, values: Value) -> Vec<Value> {
    chart::render(kubeconfig, &values).unwrap_or_else(|e| panic!("{e:#}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    chart::find(docs, kind, name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Stores every rendered object, as `helm install` / `helm upgrade` would.
fn apply(server: &FakeApiServer, docs: &[Value]) {
    for doc in docs {
        server.apply(doc.clone()).unwrap_or_else(|e| {
            panic!("storing {} {}: {e:?}", doc["kind"], doc["metadata"]["name"])
        });
    }
}

fn stored(
    server: &FakeApiServer,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Value {
    server
        .get(api_version, kind, ns, name)
        .unwrap_or_else(|| panic!("{kind} {name} is not in the API server"))
}

/// The real injector, configured exactly as the rendered Deployment's
/// container, serving the certificate from the Secret the API server stores.
/// Only where it listens and where the mounted Secret's files are differ from
/// the pod.
async fn start_injector(server: &FakeApiServer) -> Injector {
    let deployment = stored(server, "apps/v1", "Deployment", Some(NAMESPACE), INJECTOR);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let secret = stored(server, "v1", "Secret", Some(NAMESPACE), TLS_SECRET);
    let pem = |file: &str| {
        let der = STANDARD
            .decode(secret["data"][file].as_str().expect("Secret data"))
            .expect("base64");
        String::from_utf8(der).expect("PEM text")
    };
    // The grant the injector makes through the real API server is tested
    // there (rbac.rs); the fake one has no RBAC.
    let env = container["env"].as_array().expect("env").iter();
    let env = env
        .map(|var| {
            let name = var["name"].as_str().expect("name");
            (name, var["value"].as_str().expect("literal env values"))
        })
        .filter(|(name, _)| *name != names::injector_env::PROXY_ROLE_BINDING);
    Injector::spawn(&pem("tls.crt"), &pem("tls.key"), env)
        .await
        .expect("sidelb-injector starts")
}

/// Sends the webhook's calls for the rendered Service to the injector, as the
/// cluster's Service would; the API server still dials it by the Service's name.
fn route(server: &FakeApiServer, injector: &Injector) {
    let service = stored(server, "v1", "Service", Some(NAMESPACE), INJECTOR);
    let port = service["spec"]["ports"][0]["port"].as_u64().expect("port") as u16;
    server.route_service(NAMESPACE, INJECTOR, port, injector.addr());
}

fn namespace(server: &FakeApiServer, name: &str, inject: Option<&str>) {
    let labels = inject.map_or(json!({}), |v| json!({ "sidelb.io/inject": v }));
    server
        .create(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": labels } }))
        .expect("namespace");
}

async fn client(server: &FakeApiServer) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn pod(labels: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "app-",
            "labels": labels,
            "annotations": { "sidelb.io/upstreams": "greeter.shop:50051=15001" }
        },
        "spec": { "containers": [ { "name": "app", "image": "example/app:1" } ] }
    }))
    .expect("pod")
}

async fn create(client: &Client, ns: &str, labels: Value) -> kube::Result<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod(labels))
        .await
}

fn injected(pod: &Pod) -> bool {
    let init: Vec<_> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("sidelb.io/injected"));
    assert_eq!(
        init.first() == Some(&"sidelb-proxy"),
        annotated,
        "a proxy without the annotation or the other way round: {pod:?}"
    );
    annotated
}

fn secret_data(docs: &[Value]) -> Value {
    find(docs, "Secret", TLS_SECRET)["data"].clone()
}

fn ca_bundles(config: &Value) -> Vec<String> {
    config["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_injects_the_pods_its_webhook_selects() {
    let server = FakeApiServer::start().expect("fake API server");
    // The release namespace is labelled enabled too: it must be excluded anyway.
    namespace(&server, NAMESPACE, Some("enabled"));
    namespace(&server, "shop", Some("enabled"));
    namespace(&server, "plain", None);
    namespace(&server, "optout", Some("disabled"));

    let installed = render(Some(server.kubeconfig_path()), json!({}));
    apply(&server, &installed);
    let injector = start_injector(&server).await;
    route(&server, &injector);
    let client = client(&server).await;

    let cases = [
        ("shop", json!({}), true),
        ("shop", json!({ "sidelb.io/inject": "enabled" }), true),
        ("shop", json!({ "sidelb.io/inject": "disabled" }), false),
        ("plain", json!({}), false),
        ("plain", json!({ "sidelb.io/inject": "enabled" }), true),
        ("optout", json!({ "sidelb.io/inject": "enabled" }), false),
        (NAMESPACE, json!({ "sidelb.io/inject": "enabled" }), false),
    ];
    for (ns, labels, expected) in cases {
        let pod = create(&client, ns, labels.clone())
            .await
            .unwrap_or_else(|e| panic!("create a pod in {ns} {labels}: {e}\n{}", injector.log()));
        assert_eq!(
            injected(&pod),
            expected,
            "namespace {ns}, labels {labels}\n{}",
            injector.log()
        );
        if expected {
            let proxy = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
            assert_eq!(proxy.image.as_deref(), Some("sidelb/proxy:0.1.0"));
            assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        }
    }

    // `helm upgrade`: lookup finds the Secret, so the certificate and the
    // caBundle stay, and the running injector is still trusted.
    let upgraded = render(
        Some(server.kubeconfig_path()),
        json!({ "proxy": { "balancer": "round-robin" } }),
    );
    assert_eq!(secret_data(&upgraded), secret_data(&installed));
    let config = find(&upgraded, "MutatingWebhookConfiguration", WEBHOOK_CONFIG);
    assert_eq!(
        ca_bundles(config),
        ca_bundles(find(
            &installed,
            "MutatingWebhookConfiguration",
            WEBHOOK_CONFIG
        ))
    );
    apply(&server, &upgraded);
    let pod = create(&client, "shop", json!({}))
        .await
        .expect("create after upgrade");
    assert!(injected(&pod), "{}", injector.log());
    // Rendered without the cluster (`helm template`), a new CA would be made.
    let offline = render(None, json!({}));
    assert_ne!(
        secret_data(&offline)["ca.crt"],
        secret_data(&installed)["ca.crt"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_decides_what_happens_while_the_injector_is_down() {
    let server = FakeApiServer::start().expect("fake API server");
    namespace(&server, NAMESPACE, None);
    namespace(&server, "shop", Some("enabled"));
    let client = client(&server).await;

    // Ignore (the default): with no injector reachable, the pod starts without the proxy.
    apply(&server, &render(Some(server.kubeconfig_path()), json!({})));
    let pod = create(&client, "shop", json!({}))
        .await
        .expect("created without the injector");
    assert!(!injected(&pod));

    // Fail: the pod is refused, naming the webhook.
    apply(
        &server,
        &render(
            Some(server.kubeconfig_path()),
            json!({ "webhook": { "failurePolicy": "Fail" } }),
        ),
    );
    let err = create(&client, "shop", json!({}))
        .await
        .expect_err("refused");
    let kube::Error::Api(status) = err else {
        panic!("not a Status: {err:?}")
    };
    assert_eq!(status.code, 500, "{status:?}");
    assert!(
        status
            .message
            .contains("failed calling webhook \"namespace.inject.sidelb.io\""),
        "{}",
        status.message
    );

    // Once the injector is back, pods are created again, with the proxy.
    let injector = start_injector(&server).await;
    route(&server, &injector);
    let pod = create(&client, "shop", json!({})).await.expect("created");
    assert!(injected(&pod), "{}", injector.log());
}
