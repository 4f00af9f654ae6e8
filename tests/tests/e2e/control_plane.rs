//! The control plane of `make cluster` (cluster/cluster.sh) is the real one:
//! kube-apiserver issues and verifies service-account tokens, enforces RBAC
//! and runs its admission chain; kube-controller-manager's controllers make
//! ServiceAccounts, root CA ConfigMaps and EndpointSlices. And the script
//! itself: a second `up` reuses what runs, a killed component is restarted
//! cleanly, `down` stops every process it started and keeps the data. And
//! CoreDNS (`make cluster-dns`) answers for Services from the API server.
//!
//! Each test runs a private control plane in a scratch directory (its own
//! ports), so it neither needs nor disturbs `target/cluster`. The binaries
//! come from `cluster/build.sh`'s cache; the first run on a machine builds
//! them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Resolver, TokioResolver};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Namespace, Pod, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use sidelb_tests::harness::control_plane::{COMPONENTS, ControlPlane};
use sidelb_tests::harness::wait_until;

/// Bound on each condition the controllers bring about (a busy machine).
const WAIT: Duration = Duration::from_secs(60);

async fn client_for(kubeconfig: &Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client")
}

async fn admin(cluster: &ControlPlane) -> Client {
    client_for(&Kubeconfig::read_from(cluster.kubeconfig()).expect("admin kubeconfig reads")).await
}

/// A client that presents `token` as a bearer token, trusting the cluster CA.
async fn with_token(cluster: &ControlPlane, token: &str) -> Client {
    let mut kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("admin kubeconfig");
    let user = json!({"name": "bearer", "user": {"token": token}});
    kubeconfig.auth_infos = vec![serde_json::from_value(user).expect("auth info")];
    if let Some(context) = kubeconfig.contexts[0].context.as_mut() {
        context.user = Some("bearer".into());
    }
    client_for(&kubeconfig).await
}

/// The HTTP status of a failed request, or 0 if it succeeded.
fn status_of<T>(result: &Result<T, kube::Error>) -> (u16, String) {
    match result {
        Ok(_) => (0, String::new()),
        Err(kube::Error::Api(status)) => (status.code, status.message.clone()),
        Err(other) => panic!("expected an API status, got {other:#}"),
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace created");
}

fn private_cluster() -> ControlPlane {
    ControlPlane::private().unwrap_or_else(|err| panic!("make cluster: {err:#}"))
}

/// A private control plane with namespace `ns` made, and its admin client.
async fn cluster_with_namespace(ns: &str) -> (ControlPlane, Client) {
    let cluster = tokio::task::spawn_blocking(private_cluster)
        .await
        .expect("join");
    let client = admin(&cluster).await;
    create_namespace(&client, ns).await;
    (cluster, client)
}

/// A new ServiceAccount `account` in `ns` and a token for it, issued through
/// the TokenRequest API for the cluster's audience.
async fn issued_token(cluster: &ControlPlane, client: &Client, ns: &str, account: &str) -> String {
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let reader = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(account.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &reader)
        .await
        .expect("ServiceAccount created");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![cluster.get("SIDELB_CLUSTER_API_AUDIENCES").unwrap().into()],
            expiration_seconds: Some(600),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_reports_the_release_the_build_pinned() {
    let cluster = tokio::task::spawn_blocking(private_cluster)
        .await
        .expect("join");
    let version = admin(&cluster)
        .await
        .apiserver_version()
        .await
        .expect("/version");
    assert_eq!(
        version.git_version,
        cluster.get("SIDELB_CLUSTER_KUBERNETES_VERSION").unwrap()
    );
    assert!(version.git_version.starts_with("v1."), "{version:?}");
}

/// The serviceaccount and root-ca-certificate-publisher controllers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_namespace_gets_its_default_service_account_and_root_ca() {
    let ns = "shop";
    let (cluster, client) = cluster_with_namespace(ns).await;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    wait_until("the default ServiceAccount in shop", WAIT, || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await
    .unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let root_ca = wait_until("kube-root-ca.crt in shop", WAIT, || async {
        config_maps.get_opt("kube-root-ca.crt").await.ok().flatten()
    })
    .await
    .unwrap();
    let ca = std::fs::read_to_string(cluster.get("SIDELB_CLUSTER_CA").unwrap()).unwrap();
    assert_eq!(root_ca.data.unwrap()["ca.crt"].trim(), ca.trim());
}

/// An issued token authenticates (403 names the account, not 401); RBAC
/// refuses it what no role grants, and allows what a Role grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_token_gets_what_rbac_grants_and_nothing_more() {
    let ns = "shop";
    let (cluster, client) = cluster_with_namespace(ns).await;
    let token = issued_token(&cluster, &client, ns, "reader").await;
    let as_reader = with_token(&cluster, &token).await;
    let services_as_reader = Api::<Service>::namespaced(as_reader.clone(), ns);
    let (code, message) = status_of(&services_as_reader.list(&ListParams::default()).await);
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("system:serviceaccount:shop:reader") && message.contains("services"),
        "{message}"
    );

    grant_service_reading(&client, ns, "reader").await;
    wait_until("the Role to let reader list Services", WAIT, || async {
        services_as_reader.list(&ListParams::default()).await.ok()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_signature_was_changed_is_not_accepted() {
    let ns = "shop";
    let (cluster, client) = cluster_with_namespace(ns).await;
    let token = issued_token(&cluster, &client, ns, "reader").await;
    grant_service_reading(&client, ns, "reader").await;
    let services_as_reader = Api::<Service>::namespaced(with_token(&cluster, &token).await, ns);
    wait_until("the Role to let reader list Services", WAIT, || async {
        services_as_reader.list(&ListParams::default()).await.ok()
    })
    .await
    .unwrap();

    // Not its last character, whose low bits are padding that decoding drops.
    let signature = token.rfind('.').expect("a JWT") + 1;
    let at = signature + (token.len() - signature) / 2;
    let mut forged = token.clone().into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("base64url text");
    let as_forger = with_token(&cluster, &forged).await;
    let (code, message) = status_of(
        &Api::<Service>::namespaced(as_forger, ns)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 401, "{message}");
}

/// The ServiceAccount admission plugin mounts a token volume into a pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_mounts_a_service_account_token_into_a_new_pod() {
    let ns = "shop";
    let (_cluster, client) = cluster_with_namespace(ns).await;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    wait_until("the default ServiceAccount in shop", WAIT, || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await
    .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let volumes = spec.volumes.unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")
                && v.projected.as_ref().is_some_and(|p| p
                    .sources
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|s| s.service_account_token.is_some())))),
        "{volumes:?}"
    );
}

/// The EndpointSlice controller makes a slice for a Service with a selector;
/// the mirroring controller mirrors hand-written Endpoints of one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slice_controllers_slice_selected_services_and_mirror_endpoints() {
    let ns = "shop";
    let (_cluster, client) = cluster_with_namespace(ns).await;
    let services = Api::<Service>::namespaced(client.clone(), ns);
    for service in [
        json!({"metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "grpc", "port": 50051}]}}),
        json!({"metadata": {"name": "external"},
               "spec": {"ports": [{"name": "grpc", "port": 50051}]}}),
    ] {
        let service: Service = serde_json::from_value(service).unwrap();
        services
            .create(&PostParams::default(), &service)
            .await
            .expect("Service");
    }
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some("external".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: "10.1.2.3".into(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("grpc".into()),
                port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    Api::<Endpoints>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &endpoints)
        .await
        .expect("Endpoints");
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    let web = slice_of(&slices, "web", "endpointslice-controller.k8s.io").await;
    assert!(web.endpoints.is_empty(), "no pods match app=web: {web:?}");
    let external = slice_of(
        &slices,
        "external",
        "endpointslicemirroring-controller.k8s.io",
    )
    .await;
    let addresses: Vec<_> = external
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.clone())
        .collect();
    assert_eq!(addresses, ["10.1.2.3"]);
    let ports = external.ports.unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("grpc"), Some(8080))
    );
}

async fn grant_service_reading(client: &Client, ns: &str, account: &str) {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("service-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["services".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("Role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("service-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "service-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding");
}

/// The EndpointSlice of Service `service` written by `manager`, once it exists.
async fn slice_of(slices: &Api<EndpointSlice>, service: &str, manager: &str) -> EndpointSlice {
    let selector = format!(
        "kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by={manager}"
    );
    wait_until(
        &format!("an EndpointSlice of {service} by {manager}"),
        WAIT,
        || async {
            let list = slices
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().next()
        },
    )
    .await
    .unwrap()
}

fn pids(cluster: &ControlPlane) -> Vec<Option<u32>> {
    COMPONENTS.iter().map(|c| cluster.pid(c)).collect()
}

fn run(cluster: &ControlPlane, args: &[&str]) {
    cluster
        .script(args)
        .unwrap_or_else(|err| panic!("cluster/cluster.sh {}: {err:#}", args.join(" ")));
}

fn alive(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty()
        && !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_reuses_restarts_what_died_and_down_stops_every_process_it_started() {
    let cluster = tokio::task::spawn_blocking(private_cluster)
        .await
        .expect("join");
    let first = pids(&cluster);
    assert!(first.iter().all(Option::is_some), "{first:?}");
    create_namespace(&admin(&cluster).await, "kept").await;

    // A second `up` while everything runs changes nothing.
    let cluster = tokio::task::spawn_blocking(move || {
        run(&cluster, &["up"]);
        cluster
    })
    .await
    .expect("join");
    assert_eq!(pids(&cluster), first);

    // A killed API server leaves a stale pid file; `up` starts a new one and
    // leaves etcd and the controller manager alone.
    let apiserver = first[1].unwrap();
    // SAFETY: kill(2) on a pid this test's cluster started.
    unsafe { libc::kill(apiserver as i32, libc::SIGKILL) };
    wait_until_dead(apiserver).await;
    let cluster = tokio::task::spawn_blocking(move || {
        run(&cluster, &["up"]);
        cluster
    })
    .await
    .expect("join");
    let second = pids(&cluster);
    assert_eq!((second[0], second[2]), (first[0], first[2]));
    assert!(second[1].is_some() && second[1] != first[1], "{second:?}");
    admin(&cluster)
        .await
        .apiserver_version()
        .await
        .expect("the new API server answers");

    // `down` stops them all and removes env; a second `down` is a no-op.
    let cluster = tokio::task::spawn_blocking(move || {
        run(&cluster, &["down"]);
        run(&cluster, &["down"]);
        cluster
    })
    .await
    .expect("join");
    for pid in second.iter().flatten() {
        assert!(!alive(*pid), "pid {pid} still runs after down");
    }
    assert!(!Path::new(&cluster.dir().join("env")).exists());

    // `up` again: the same data (etcd's), so the namespace made before is there.
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        run(&cluster, &["up"]);
        cluster.reread().map(|()| cluster)
    })
    .await
    .expect("join")
    .expect("env after up");
    Api::<Namespace>::all(admin(&cluster).await)
        .get("kept")
        .await
        .expect("the namespace made before down");
}

async fn wait_until_dead(pid: u32) {
    wait_until(&format!("pid {pid} to exit"), WAIT, || async {
        (!alive(pid)).then_some(())
    })
    .await
    .unwrap();
}

/// A resolver that asks only `server`, caching nothing, as an app would with
/// that server in its resolv.conf.
fn resolver(server: SocketAddr) -> TokioResolver {
    let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = Duration::from_secs(2);
    options.use_hosts_file = ResolveHosts::Never;
    Resolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], servers),
        TokioConnectionProvider::default(),
    )
    .with_options(options)
    .build()
}

/// The addresses `name` resolves to, once they are `want`.
async fn resolves_to(server: SocketAddr, name: &str, want: &[&str]) {
    let mut want: Vec<IpAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
    want.sort();
    let resolver = resolver(server);
    wait_until(
        &format!("{name} to resolve to {want:?}"),
        DNS_WAIT,
        || async {
            let mut got: Vec<IpAddr> = resolver.lookup_ip(name).await.ok()?.iter().collect();
            got.sort();
            (got == want).then_some(())
        },
    )
    .await
    .unwrap();
}

/// CoreDNS caches answers (and their absence) for 30 s, as in a real cluster.
const DNS_WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_for_services_from_the_api_server_and_for_nothing_else() {
    let cluster = tokio::task::spawn_blocking(|| {
        let mut cluster = private_cluster();
        run(&cluster, &["dns"]);
        cluster.reread().map(|()| cluster)
    })
    .await
    .expect("join")
    .expect("env after dns");
    let server: SocketAddr = cluster
        .get("SIDELB_CLUSTER_DNS")
        .unwrap()
        .parse()
        .expect("DNS address");
    let client = admin(&cluster).await;

    // A headless Service's names are its EndpointSlices' addresses; a
    // ClusterIP Service's, its ClusterIP.
    let ns = "dns";
    create_namespace(&client, ns).await;
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let headless: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "grpc", "port": 50051}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &headless)
        .await
        .expect("headless Service");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": true}}
        ]
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &slice)
        .await
        .expect("EndpointSlice");
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let web = services
        .create(&PostParams::default(), &web)
        .await
        .expect("Service");
    let cluster_ip = web.spec.unwrap().cluster_ip.expect("a ClusterIP");

    resolves_to(
        server,
        "db.dns.svc.cluster.local.",
        &["10.1.0.1", "10.1.0.2"],
    )
    .await;
    resolves_to(server, "web.dns.svc.cluster.local.", &[cluster_ip.as_str()]).await;
    let kubernetes = cluster.get("SIDELB_CLUSTER_KUBERNETES_SERVICE_IP").unwrap();
    resolves_to(
        server,
        "kubernetes.default.svc.cluster.local.",
        &[kubernetes],
    )
    .await;

    // Names outside the cluster are not looked up elsewhere.
    let outside = resolver(server).lookup_ip("example.com.").await;
    assert!(outside.is_err(), "{outside:?}");
}
