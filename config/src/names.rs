//! Names that cross a boundary: between the chart, the injector, the proxy and
//! the user's manifests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The sidecar's container name; a pod that has it is never injected again.
pub const PROXY_CONTAINER: &str = "sidelb-proxy";

/// The admin port's container port name.
pub const ADMIN_PORT_NAME: &str = "sidelb-admin";

/// Default ports.
pub const OUTBOUND_PORT: u16 = 4140;
pub const ADMIN_PORT: u16 = 4191;
pub const INJECTOR_PORT: u16 = 8443;

/// Most streams one app connection carries at once (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`, advertised to the app): one
/// connection cannot hold a service's whole in-flight limit.
pub const APP_MAX_CONCURRENT_STREAMS: u32 = 100;

/// The admin address the injector gives the proxy: every interface, so the
/// kubelet can probe it.
pub const SIDECAR_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ADMIN_PORT);

/// Injector paths: the webhook configuration points at `INJECTOR_MUTATE_PATH`.
pub const INJECTOR_MUTATE_PATH: &str = "/mutate";
pub const INJECTOR_HEALTH_PATH: &str = "/healthz";

/// Admin server paths.
/// The live page: each service's pods, their share of requests and state.
pub const LIVE_PAGE_PATH: &str = "/";
pub const LIVE_PATH: &str = "/live";
pub const READY_PATH: &str = "/ready";
pub const METRICS_PATH: &str = "/metrics";
pub const ENDPOINTS_PATH: &str = "/endpoints";
/// `GET`: the tracing filter in force; `PUT`: a new one, applied at once.
pub const LOG_LEVEL_PATH: &str = "/log-level";

/// The admin paths that answer anyone who reaches the port (the kubelet,
/// Prometheus). Every other path, present or added later, answers only
/// clients on loopback: 403 otherwise.
pub const ADMIN_PUBLIC_PATHS: &[&str] = &[LIVE_PATH, READY_PATH, METRICS_PATH];

/// Label (on a namespace or a pod) and annotation (on a pod) that select injection.
pub const INJECT: &str = "sidelb.io/inject";
pub const INJECT_ENABLED: &str = "enabled";
pub const INJECT_DISABLED: &str = "disabled";

/// Set by the injector on every pod it changed; the value is the injector's version.
pub const INJECTED: &str = "sidelb.io/injected";

/// Pod annotations read by the injector itself (the proxy's own settings have
/// their annotations in [`crate::settings::SETTINGS`]).
pub const NATIVE_SIDECAR: &str = "sidelb.io/native-sidecar";
pub const PROXY_CPU_REQUEST: &str = "sidelb.io/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST: &str = "sidelb.io/proxy-memory-request";
pub const PROXY_CPU_LIMIT: &str = "sidelb.io/proxy-cpu-limit";
pub const PROXY_MEMORY_LIMIT: &str = "sidelb.io/proxy-memory-limit";
/// `secret:NAME` or `configmap:NAME`: the CAs of `sidelb.io/backend-tls`,
/// under the key [`BACKEND_CA_KEY`], mounted into the sidecar at
/// [`BACKEND_CA_DIR`].
pub const BACKEND_TLS_CA: &str = "sidelb.io/backend-tls-ca";
pub const BACKEND_CA_KEY: &str = "ca.crt";
pub const BACKEND_CA_DIR: &str = "/var/run/sidelb/backend-ca";

/// The downward-API variables the injector sets and the proxy reads.
pub const POD_NAME_ENV: &str = "POD_NAME";
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// The Node label that names its zone, as the EndpointSlice controller reads it.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The label EndpointSlices carry to name their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The injector's own environment variables (each also a flag, set by the
/// chart). Per-pod defaults of proxy settings use
/// [`crate::Setting::injector_default_env`] (`SIDELB_DEFAULT_BALANCER`, …).
pub mod injector_env {
    pub const ADDR: &str = "SIDELB_INJECTOR_ADDR";
    pub const TLS_CERT: &str = "SIDELB_TLS_CERT";
    pub const TLS_KEY: &str = "SIDELB_TLS_KEY";
    /// How often the certificate and key files are checked for a change.
    pub const TLS_RELOAD_INTERVAL: &str = "SIDELB_TLS_RELOAD_INTERVAL";
    pub const PROXY_IMAGE: &str = "SIDELB_PROXY_IMAGE";
    pub const PROXY_IMAGE_PULL_POLICY: &str = "SIDELB_PROXY_IMAGE_PULL_POLICY";
    /// `true` (default): native sidecar; `false`: a regular first container.
    pub const NATIVE_SIDECAR: &str = "SIDELB_NATIVE_SIDECAR";
    pub const PROXY_CPU_REQUEST: &str = "SIDELB_PROXY_CPU_REQUEST";
    pub const PROXY_MEMORY_REQUEST: &str = "SIDELB_PROXY_MEMORY_REQUEST";
    pub const PROXY_CPU_LIMIT: &str = "SIDELB_PROXY_CPU_LIMIT";
    pub const PROXY_MEMORY_LIMIT: &str = "SIDELB_PROXY_MEMORY_LIMIT";
    pub const LOG: &str = "SIDELB_LOG";
    pub const LOG_FORMAT: &str = "SIDELB_LOG_FORMAT";
    /// The ClusterRoleBinding of the proxies' ClusterRole to which the
    /// injector adds the service-account group of each namespace where it
    /// injects a pod; empty: it manages none.
    pub const PROXY_ROLE_BINDING: &str = "SIDELB_PROXY_ROLE_BINDING";
}
