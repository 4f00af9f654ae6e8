//! The chart's RBAC on the real API server: by default the proxies' read
//! access reaches only namespaces where the injector injected a pod.
//!
//! The rendered RBAC objects are applied to a private control plane (server-side
//! apply, as Helm 4 does), the real injector runs with the rendered
//! Deployment's environment and its own service account's token, and
//! kube-apiserver calls it for the rendered webhooks (over TLS to 127.0.0.1,
//! where it listens here). Then tokens the API server issues (TokenRequest) are
//! judged by its RBAC: the default service account of the namespace where a
//! pod was injected lists EndpointSlices and Services (in any namespace) and
//! gets Nodes; that of a namespace without one gets 403; a dry-run pod grants
//! nothing; re-applying the chart (an upgrade) keeps the grant; a grant that
//! fails still injects, with a warning kubectl shows; and
//! `rbac.clusterWide=true` grants every service account.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use kube::{Client, Config};
use serde_json::{Value, json};
use sidelb_config::names;
use sidelb_fake_apiserver::tls::TestCa;
use sidelb_tests::harness::chart::{self, NAMESPACE};
use sidelb_tests::harness::scratch::ScratchDir;
use sidelb_tests::harness::{ControlPlane, Injector, Kubectl, wait_until};
use std::time::Duration;

/// Bound on each condition the controllers or the authorizer's cache bring about.
const WAIT: Duration = Duration::from_secs(60);

const PROXY_BINDING: &str = "sidelb-proxy";

async fn client_for(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client")
}

/// The admin kubeconfig with `token` as its only user.
fn token_kubeconfig(cluster: &ControlPlane, token: &str) -> Kubeconfig {
    let mut kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("admin kubeconfig");
    let user = json!({"name": "bearer", "user": {"token": token}});
    kubeconfig.auth_infos = vec![serde_json::from_value(user).expect("auth info")];
    for context in &mut kubeconfig.contexts {
        if let Some(context) = context.context.as_mut() {
            context.user = Some("bearer".into());
        }
    }
    kubeconfig
}

/// A token of service account `account` in `ns`, from the TokenRequest API.
async fn token(cluster: &ControlPlane, admin: &Client, ns: &str, account: &str) -> String {
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
    wait_until(&format!("ServiceAccount {ns}/{account}"), WAIT, || async {
        accounts.get_opt(account).await.ok().flatten()
    })
    .await
    .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![cluster.get("SIDELB_CLUSTER_API_AUDIENCES").unwrap().into()],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token status")
        .token
}

/// What `account` of `ns` may do that the proxy needs: list EndpointSlices
/// and Services in `other` and get `node`, each as an HTTP status (200 allowed).
async fn proxy_access(
    cluster: &ControlPlane,
    admin: &Client,
    ns: &str,
    other: &str,
    node: &str,
) -> [u16; 3] {
    let token = token(cluster, admin, ns, "default").await;
    let client = client_for(token_kubeconfig(cluster, &token)).await;
    let code = |result: Result<(), kube::Error>| match result {
        Ok(()) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("expected an API status, got {other:#}"),
    };
    let params = ListParams::default();
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), other);
    let services = Api::<Service>::namespaced(client.clone(), other);
    let nodes = Api::<Node>::all(client);
    [
        code(slices.list(&params).await.map(drop)),
        code(services.list(&params).await.map(drop)),
        code(nodes.get(node).await.map(drop)),
    ]
}

/// Applies `doc` by server-side apply under Helm's field manager.
async fn apply(admin: &Client, doc: &Value) {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", doc["apiVersion"].as_str().unwrap()),
    };
    let kind = doc["kind"].as_str().unwrap();
    let resource = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: doc["apiVersion"].as_str().unwrap().into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_ascii_lowercase()),
    };
    let name = doc["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
        None => Api::all_with(admin.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply("helm").force(),
        &Patch::Apply(doc),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {kind} {name}: {e:#}"));
}

/// The rendered RBAC objects and the injector's ServiceAccount, applied.
async fn apply_rbac(admin: &Client, docs: &[Value]) {
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap();
        if matches!(
            kind,
            "ClusterRole" | "ClusterRoleBinding" | "ServiceAccount"
        ) {
            apply(admin, doc).await;
        }
    }
}

async fn namespace(admin: &Client, name: &str, labels: Value) {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels}
    }))
    .unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

fn subjects(binding: &ClusterRoleBinding) -> Vec<String> {
    let subjects = binding.subjects.iter().flatten();
    subjects.map(|s| format!("{}:{}", s.kind, s.name)).collect()
}

/// The injector as the rendered Deployment runs it, with its own service
/// account's token; kube-apiserver calls it at `https://127.0.0.1:PORT`
/// for the rendered webhooks.
async fn start_injector(
    cluster: &ControlPlane,
    admin: &Client,
    docs: &[Value],
    scratch: &ScratchDir,
) -> Injector {
    let deployment = chart::find(docs, "Deployment", "sidelb-injector").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut env: Vec<(String, String)> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|var| {
            let name = var["name"].as_str().expect("name").to_owned();
            (name, var["value"].as_str().expect("literal").to_owned())
        })
        .collect();
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let token = token(cluster, admin, NAMESPACE, account).await;
    let kubeconfig = scratch.path().join("injector.kubeconfig");
    let text = serde_json::to_string(&token_kubeconfig(cluster, &token)).unwrap();
    std::fs::write(&kubeconfig, text).unwrap();
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));

    let ca = TestCa::new("sidelb rbac test").unwrap();
    let injector = Injector::spawn_with_ca(&ca, env)
        .await
        .expect("sidelb-injector starts");
    let mut webhooks = chart::find(docs, "MutatingWebhookConfiguration", "sidelb")
        .unwrap()
        .clone();
    for hook in webhooks["webhooks"].as_array_mut().unwrap() {
        hook["clientConfig"] = json!({
            "url": injector.url("/mutate"),
            "caBundle": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                ca.pem(),
            ),
        });
    }
    apply(admin, &webhooks).await;
    injector
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap()
}

fn injected(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref().unwrap();
    let init = spec.init_containers.iter().flatten();
    init.chain(&spec.containers)
        .any(|c| c.name == "sidelb-proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxies_read_access_reaches_only_namespaces_with_an_injected_pod() {
    let cluster = tokio::task::spawn_blocking(ControlPlane::private)
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("make cluster: {e:#}"));
    let admin = client_for(Kubeconfig::read_from(cluster.kubeconfig()).unwrap()).await;
    let scratch = ScratchDir::new("rbac").unwrap();
    let node = "node-a";
    let node_object: Node = serde_json::from_value(json!({"metadata": {"name": node}})).unwrap();
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &node_object)
        .await
        .expect("Node");

    // Default values: nothing is bound to any service account group.
    let docs = chart::render(None, &json!({})).unwrap();
    namespace(&admin, NAMESPACE, json!({})).await;
    apply_rbac(&admin, &docs).await;
    let bindings = Api::<ClusterRoleBinding>::all(admin.clone());
    let binding = bindings.get(PROXY_BINDING).await.unwrap();
    assert_eq!(subjects(&binding), Vec::<String>::new());
    let injector = start_injector(&cluster, &admin, &docs, &scratch).await;

    let enabled = json!({"sidelb.io/inject": "enabled"});
    namespace(&admin, "shop", enabled.clone()).await;
    namespace(&admin, "other", json!({})).await;
    namespace(&admin, "dry", enabled).await;
    // Before any pod is injected, shop's service accounts are refused too.
    assert_eq!(
        proxy_access(&cluster, &admin, "shop", "other", node).await,
        [403; 3]
    );

    // A dry-run pod is injected and grants nothing.
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let dry = Api::<Pod>::namespaced(admin.clone(), "dry")
        .create(&dry_run, &pod("app"))
        .await
        .expect("dry-run pod");
    assert!(injected(&dry), "{:?}", dry.spec);

    // A pod created in shop comes out injected, and shop's group is bound.
    let app = Api::<Pod>::namespaced(admin.clone(), "shop")
        .create(&PostParams::default(), &pod("app"))
        .await
        .expect("pod created");
    assert!(injected(&app), "{:?}", app.spec);
    let binding = bindings.get(PROXY_BINDING).await.unwrap();
    assert_eq!(
        subjects(&binding),
        ["Group:system:serviceaccounts:shop"],
        "injector log:\n{}",
        injector.log()
    );
    // The API server's authorizer sees the binding a moment after it changed.
    wait_until(
        "shop's token to read what the proxy reads",
        WAIT,
        || async {
            let access = proxy_access(&cluster, &admin, "shop", "other", node).await;
            (access == [200; 3]).then_some(())
        },
    )
    .await
    .unwrap();
    // A namespace without an injected pod, and the dry-run one, get 403.
    for ns in ["other", "dry"] {
        assert_eq!(
            proxy_access(&cluster, &admin, ns, "shop", node).await,
            [403; 3],
            "{ns}"
        );
    }
    // A second pod in shop changes nothing.
    Api::<Pod>::namespaced(admin.clone(), "shop")
        .create(&PostParams::default(), &pod("app-2"))
        .await
        .expect("second pod");
    let again = bindings.get(PROXY_BINDING).await.unwrap();
    assert_eq!(subjects(&again), subjects(&binding));

    // The injector's own token reads nothing the proxies read, nor Secrets.
    let token = token(&cluster, &admin, NAMESPACE, "sidelb-injector").await;
    let as_injector = client_for(token_kubeconfig(&cluster, &token)).await;
    for result in [
        Api::<EndpointSlice>::namespaced(as_injector.clone(), "shop")
            .list(&ListParams::default())
            .await
            .map(drop),
        Api::<Secret>::namespaced(as_injector, NAMESPACE)
            .list(&ListParams::default())
            .await
            .map(drop),
    ] {
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403),
            "{result:?}"
        );
    }

    // An upgrade (the chart applied again) keeps what the injector added.
    apply_rbac(&admin, &docs).await;
    let upgraded = bindings.get(PROXY_BINDING).await.unwrap();
    assert_eq!(subjects(&upgraded), ["Group:system:serviceaccounts:shop"]);

    // With the binding gone the grant fails: the pod is still injected, and
    // kubectl shows the user why its proxy will be refused.
    bindings
        .delete(PROXY_BINDING, &Default::default())
        .await
        .expect("binding deleted");
    namespace(&admin, "late", json!({"sidelb.io/inject": "enabled"})).await;
    wait_until("the default ServiceAccount in late", WAIT, || async {
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), "late");
        accounts.get_opt("default").await.ok().flatten()
    })
    .await
    .unwrap();
    let kubectl = Kubectl::new(&cluster.kubeconfig()).unwrap();
    let manifest = kubectl.file("late.json", &json!(pod("app")).to_string());
    let manifest = manifest.display().to_string();
    let output = kubectl.run(&["-n", "late", "create", "-f", &manifest]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "Warning: sidelb-injector: could not give the service accounts of namespace late"
        ) && stderr.contains("ClusterRoleBinding sidelb-proxy does not exist"),
        "{stderr}"
    );
    let late = Api::<Pod>::namespaced(admin.clone(), "late")
        .get("app")
        .await
        .unwrap();
    assert!(injected(&late), "{:?}", late.spec);

    // rbac.clusterWide=true: every service account reads it.
    let wide = chart::render(None, &json!({"rbac": {"clusterWide": true}})).unwrap();
    let env = &chart::find(&wide, "Deployment", "sidelb-injector").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["env"];
    let binding_env = names::injector_env::PROXY_ROLE_BINDING;
    assert!(
        !env.as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == binding_env),
        "{env}"
    );
    apply_rbac(&admin, &wide).await;
    let binding = bindings.get(PROXY_BINDING).await.unwrap();
    assert_eq!(subjects(&binding), ["Group:system:serviceaccounts"]);
    wait_until("other's token to read it cluster-wide", WAIT, || async {
        let access = proxy_access(&cluster, &admin, "other", "shop", node).await;
        (access == [200; 3]).then_some(())
    })
    .await
    .unwrap();
}
