//! The fake API server for the discovery tests the real control plane
//! cannot serve (see [`super`]): pods that are real test backends, the
//! objects the EndpointSlice controller would write for them, and a proxy
//! pointed at it all through `KUBECONFIG`.
//!
//! Pods of one workload share a target port and differ by IP, as in a
//! cluster: each group gets its own loopback /24 (`127.0.N.0`, all of
//! 127.0.0.0/8 is loopback on Linux) and every pod of it listens on the same
//! port, so one EndpointSlice can list several of them under one port.

pub use super::view::*;
use serde_json::{Value, json};
use sidelb_config::settings;
use sidelb_fake_apiserver::FakeApiServer;
use sidelb_tests::harness::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};

pub const NAMESPACE: &str = "default";
/// The user the proxy's credentials belong to, named in 403 messages.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:default:app";

/// The fake API server, over TLS with a bearer token as in a pod.
pub struct Cluster {
    pub api: FakeApiServer,
}

impl Cluster {
    pub fn start() -> Cluster {
        let api = FakeApiServer::builder()
            .tls(true)
            .token("sidelb-test-token")
            .user(SERVICE_ACCOUNT)
            .start()
            .expect("fake API server starts");
        Cluster { api }
    }

    /// A proxy using this cluster for discovery.
    pub fn proxy_options(&self) -> ProxyOptions {
        ProxyOptions::new()
            .env(
                "KUBECONFIG",
                self.api.kubeconfig_path().display().to_string(),
            )
            .env(settings::DISCOVERY, "kubernetes")
    }

    /// Starts a proxy with an upstream listener per target; ready when returned.
    pub async fn proxy(&self, upstreams: &[&str]) -> Proxy {
        let mut options = self.proxy_options();
        for target in upstreams {
            options = options.upstream(target);
        }
        Proxy::spawn(options).await.expect("proxy ready")
    }

    /// Creates or replaces an object.
    pub fn apply(&self, object: Value) {
        let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
        if let Err(e) = self.api.apply(object) {
            panic!("applying {what}: {e}");
        }
    }

    pub fn apply_slice(&self, slice: &Slice) {
        self.apply(slice.json());
    }

    /// Waits until exactly `n` watches of `resource` are open.
    pub async fn wait_for_watches(&self, resource: &str, n: usize) {
        let what = format!("{n} open watches of {resource}");
        wait_until(&what, WAIT, || async {
            (self.api.open_watches(resource) == n).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}: {} open", self.api.open_watches(resource)));
    }

    pub fn delete_slice(&self, name: &str) {
        self.api
            .delete(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                Some(NAMESPACE),
                name,
            )
            .expect("slice deleted");
    }
}

/// A Service with `ports` (`{name, port, targetPort}` objects).
pub fn service(name: &str, ports: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": { "selector": { "app": name }, "ports": ports }
    })
}

/// A Service with one port `grpc` 50051 whose target is the pods' port.
pub fn grpc_service(name: &str, target_port: u16) -> Value {
    service(
        name,
        json!([{ "name": "grpc", "port": 50051, "targetPort": target_port }]),
    )
}

/// Endpoint conditions as the EndpointSlice controller writes them.
pub mod conditions {
    use serde_json::{Value, json};

    pub fn ready() -> Value {
        json!({ "ready": true, "serving": true, "terminating": false })
    }
    pub fn not_ready() -> Value {
        json!({ "ready": false, "serving": false, "terminating": false })
    }
    /// Shutting down but still answering.
    pub fn terminating_serving() -> Value {
        json!({ "ready": false, "serving": true, "terminating": true })
    }
    pub fn terminating() -> Value {
        json!({ "ready": false, "serving": false, "terminating": true })
    }
    /// No conditions at all: the API says that means ready.
    pub fn unset() -> Value {
        json!({})
    }
}

/// An EndpointSlice of a Service.
#[derive(Clone, Debug)]
pub struct Slice {
    service: String,
    name: String,
    address_type: &'static str,
    ports: Vec<Value>,
    endpoints: Vec<Value>,
}

impl Slice {
    /// An empty IPv4 slice without ports.
    pub fn new(service: &str, name: &str) -> Slice {
        Slice {
            service: service.to_owned(),
            name: name.to_owned(),
            address_type: "IPv4",
            ports: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// A slice of ready `pods` under port `grpc` (their common port).
    pub fn grpc(service: &str, name: &str, pods: &[&Backend]) -> Slice {
        let port = pods.first().map_or(1, |p| p.addr().port());
        let mut slice = Slice::new(service, name).port(Some("grpc"), port);
        for pod in pods {
            slice = slice.pod(pod, conditions::ready());
        }
        slice
    }

    pub fn address_type(mut self, address_type: &'static str) -> Slice {
        self.address_type = address_type;
        self
    }

    /// A port: the Service port's name (`None` for a single unnamed port)
    /// and the number the pods listen on.
    pub fn port(mut self, name: Option<&str>, port: u16) -> Slice {
        let mut entry = json!({ "port": port, "protocol": "TCP" });
        if let Some(name) = name {
            entry["name"] = json!(name);
        }
        self.ports.push(entry);
        self
    }

    /// The pod `pod` (its backend's IP, its name as the pod name).
    pub fn pod(mut self, pod: &Backend, conditions: Value) -> Slice {
        self.endpoints.push(json!({
            "addresses": [pod.addr().ip().to_string()],
            "conditions": conditions,
            "targetRef": { "kind": "Pod", "name": pod.name(), "namespace": NAMESPACE },
        }));
        self
    }

    /// An endpoint by raw address (e.g. a host name in an FQDN slice).
    pub fn address(mut self, address: &str) -> Slice {
        self.endpoints
            .push(json!({ "addresses": [address], "conditions": conditions::ready() }));
        self
    }

    pub fn json(&self) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": self.service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": self.address_type,
            "ports": self.ports,
            "endpoints": self.endpoints,
        })
    }
}

/// Pods of one workload: backends on `127.0.N.1`, `127.0.N.2`, … all on one port.
pub struct Pods {
    subnet: u8,
    port: Option<u16>,
    hosts: u8,
}

impl Pods {
    /// A new group on a /24 no other group of this test binary uses.
    pub fn new() -> Pods {
        static NEXT_SUBNET: AtomicU8 = AtomicU8::new(10);
        let subnet = NEXT_SUBNET.fetch_add(1, Ordering::Relaxed);
        assert!(subnet < 250, "out of loopback subnets");
        Pods {
            subnet,
            port: None,
            hosts: 0,
        }
    }

    /// Starts pod `name`: the first on a free port, the others on the same port.
    pub async fn start(&mut self, name: &str) -> Backend {
        self.hosts += 1;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, self.subnet, self.hosts));
        let addr = SocketAddr::new(ip, self.port.unwrap_or(0));
        let backend = Backend::spawn(
            name,
            BackendOptions {
                addr: Some(addr),
                ..BackendOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("pod {name} starts on {addr}: {e:#}"));
        self.port = Some(backend.addr().port());
        backend
    }

    /// Starts one pod per name.
    pub async fn start_all(&mut self, names: &[&str]) -> Vec<Backend> {
        let mut pods = Vec::new();
        for name in names {
            pods.push(self.start(name).await);
        }
        pods
    }
}
