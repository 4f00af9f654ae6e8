//! Whether a pod gets the proxy, and with which settings.
//!
//! The webhook's namespace and object selectors choose which pods are sent
//! here; this module only turns down what must be left alone (not a Pod
//! CREATE, opted out, already injected) and resolves the proxy's settings from
//! the pod's annotations over the injector's defaults.
//!
//! Every annotation is checked before anything is decided, with the same
//! rules the proxy applies to the variable it becomes ([`Setting::check`]): a
//! pod with a bad value is refused as a whole, with every bad annotation
//! named, rather than injected with a proxy that would fail to start.
//!
//! The sidecar's shutdown grace and drain timeout are fitted into the pod's
//! own grace period ([`shutdown`]).
//!
//! `sidelb.io/backend-tls-ca` names the Secret or ConfigMap whose `ca.crt`
//! the proxy trusts for `sidelb.io/backend-tls`: it becomes a volume mounted
//! into the sidecar and `SIDELB_BACKEND_TLS_CA`. TLS services without it are
//! refused, since the proxy would not start.

mod shutdown;

use crate::config::{self, ProxyResources, RESOURCE_ANNOTATIONS, SidecarDefaults};
use crate::review::{AdmissionRequest, PodObject};
use sidelb_config::names;
use sidelb_config::settings::{self, SETTINGS};
use sidelb_config::{ProxyConfig, Setting, quantity, upstreams, value};
use std::collections::BTreeMap;

/// What to do with one admission request.
#[derive(Debug)]
pub enum Decision {
    Skip(Skip),
    Inject(Plan),
    /// Refused, with a message for the user.
    Refuse(Refusal),
}

/// Why a pod is refused, for metrics, and the message for the user.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid-annotation` or `port-clash`.
    pub reason: &'static str,
    pub message: String,
}

/// Why a request is allowed unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NotAPod,
    NotCreate,
    DisabledByLabel,
    DisabledByAnnotation,
    AlreadyInjected,
    /// On the node's network: the sidecar's ports would be the node's.
    HostNetwork,
}

impl Skip {
    /// The metrics label and log word.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::NotAPod => "not-a-pod",
            Skip::NotCreate => "not-create",
            Skip::DisabledByLabel => "disabled-by-label",
            Skip::DisabledByAnnotation => "disabled-by-annotation",
            Skip::AlreadyInjected => "already-injected",
            Skip::HostNetwork => "host-network",
        }
    }

    /// What the user who created the pod is told, when it is not what they asked for.
    pub fn warning(self) -> Option<String> {
        (self == Skip::HostNetwork).then(|| {
            format!(
                "sidelb-injector: this pod uses hostNetwork, so sidelb-proxy was not added: \
                 its listeners ({outbound} and the admin port {admin}) would be the node's, \
                 shared with the node and every other hostNetwork pod on it; call Services \
                 directly from this pod, or run it without hostNetwork to get the proxy",
                outbound = ProxyConfig::defaults().outbound_addr,
                admin = names::SIDECAR_ADMIN_ADDR.port(),
            )
        })
    }
}

/// The resolved sidecar for one pod.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// An init container with `restartPolicy: Always` (else a regular container).
    pub native: bool,
    /// Proxy settings to set, by variable, in [`SETTINGS`] order.
    pub proxy_env: Vec<(&'static str, String)>,
    pub resources: ProxyResources,
    /// The name of a projected service-account token volume to add for the
    /// proxy, when the pod turns automounting off.
    pub token_volume: Option<String>,
    /// The CA bundle of `sidelb.io/backend-tls-ca`, mounted for the proxy.
    pub backend_ca: Option<Box<BackendCa>>,
    /// Annotations to add besides `sidelb.io/injected`.
    pub annotations: Vec<(&'static str, String)>,
    /// Unknown `sidelb.io/` annotations, likely typos, for `kubectl` to show.
    pub warnings: Vec<String>,
}

/// Where the CAs of TLS backends come from, and the volume that mounts them.
#[derive(Debug, PartialEq, Eq)]
pub struct BackendCa {
    pub source: CaSource,
    pub volume: String,
}

/// A Secret or ConfigMap of the pod's namespace with the key `ca.crt`.
#[derive(Debug, PartialEq, Eq)]
pub enum CaSource {
    Secret(String),
    ConfigMap(String),
}

/// The preferred name of the backend CA volume.
pub const BACKEND_CA_VOLUME: &str = "sidelb-backend-ca";

fn parse_ca_source(v: &str) -> Result<CaSource, String> {
    let valid = |name: &str| {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(sidelb_config::service::is_dns_label)
    };
    match v.split_once(':') {
        Some(("secret", name)) if valid(name) => Ok(CaSource::Secret(name.to_owned())),
        Some(("configmap", name)) if valid(name) => Ok(CaSource::ConfigMap(name.to_owned())),
        _ => Err(format!(
            "{}: `{v}` is not `secret:NAME` or `configmap:NAME` (a Secret or ConfigMap of the pod's namespace whose key `{}` holds the PEM CAs of the backends' certificates)",
            names::BACKEND_TLS_CA,
            names::BACKEND_CA_KEY
        )),
    }
}

/// A Pod CREATE whose object cannot be read as a Pod.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("request.object is missing for a Pod CREATE")]
    MissingObject,
    #[error("request.object is not a Pod: {0}")]
    NotAPod(#[from] serde_json::Error),
}

/// Names the container `kubectl logs` and `exec` pick by default, which would
/// otherwise be the proxy when it is the first container.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The preferred name of the proxy's own token volume.
pub const TOKEN_VOLUME: &str = "sidelb-proxy-token";

/// Why a request is not a Pod CREATE, the only one the injector changes.
pub fn not_a_pod_create(req: &AdmissionRequest<'_>) -> Option<Skip> {
    if !req.is_pod() {
        return Some(Skip::NotAPod);
    }
    (req.operation != "CREATE").then_some(Skip::NotCreate)
}

/// The pod of a Pod CREATE, read from the request's raw object once.
pub fn read_pod(req: &AdmissionRequest<'_>) -> Result<PodObject, PolicyError> {
    let object = req.object.ok_or(PolicyError::MissingObject)?;
    Ok(serde_json::from_str(object.get())?)
}

pub fn decide(pod: &PodObject, defaults: &SidecarDefaults) -> Decision {
    if has_proxy(pod) {
        return Decision::Skip(Skip::AlreadyInjected);
    }
    let metadata = pod.metadata.as_ref();
    let disabled = |map: Option<&BTreeMap<String, String>>| {
        map.and_then(|m| m.get(names::INJECT)).map(|v| v.trim()) == Some(names::INJECT_DISABLED)
    };
    if disabled(metadata.and_then(|m| m.labels.as_ref())) {
        return Decision::Skip(Skip::DisabledByLabel);
    }
    let annotations = metadata.and_then(|m| m.annotations.as_ref());
    if disabled(annotations) {
        return Decision::Skip(Skip::DisabledByAnnotation);
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        return Decision::Skip(Skip::HostNetwork);
    }
    let none = BTreeMap::new();
    let refuse = |reason, problems: Vec<String>| {
        let message = problems.join("; ");
        Decision::Refuse(Refusal { reason, message })
    };
    let plan = match plan(pod, annotations.unwrap_or(&none), defaults) {
        Ok(plan) => plan,
        Err(problems) => return refuse("invalid-annotation", problems),
    };
    match port_clashes(pod, &sidecar_ports(&plan.proxy_env)) {
        clashes if clashes.is_empty() => Decision::Inject(plan),
        clashes => refuse("port-clash", clashes),
    }
}

/// The TCP ports the sidecar listens on in the pod's network namespace, and
/// what for.
fn sidecar_ports(proxy_env: &[(&str, String)]) -> Vec<(u16, String)> {
    let mut ports = vec![
        (
            ProxyConfig::defaults().outbound_addr.port(),
            "its outbound listener".to_owned(),
        ),
        (
            names::SIDECAR_ADMIN_ADDR.port(),
            "its admin server, probed by the kubelet".to_owned(),
        ),
    ];
    let list = proxy_env
        .iter()
        .find(|(env, _)| *env == settings::UPSTREAMS)
        .and_then(|(_, value)| upstreams::parse(value, "default").ok());
    for upstream in list.iter().flatten() {
        let what = format!("the local port of upstream `{}`", upstream.service);
        ports.push((upstream.listen.port(), what));
    }
    ports
}

/// Every TCP port a container of the pod declares that the sidecar would
/// listen on too: one of them would fail to start.
fn port_clashes(pod: &PodObject, ports: &[(u16, String)]) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let init = spec.init_containers.iter().flatten();
    let mut clashes = Vec::new();
    for container in init.chain(&spec.containers) {
        for declared in container.ports.iter().flatten() {
            if declared.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Some((port, what)) = ports
                .iter()
                .find(|(port, _)| i32::from(*port) == declared.container_port)
            else {
                continue;
            };
            clashes.push(format!(
                "container `{}` uses port {port}, which {proxy} listens on ({what}); \
                 move the container to another port, or leave this pod uninjected \
                 with the annotation {inject}: {disabled}",
                container.name,
                proxy = names::PROXY_CONTAINER,
                inject = names::INJECT,
                disabled = names::INJECT_DISABLED,
            ));
        }
    }
    clashes
}

fn has_proxy(pod: &PodObject) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let init = spec.init_containers.iter().flatten();
    spec.containers
        .iter()
        .chain(init)
        .any(|c| c.name == names::PROXY_CONTAINER)
}

/// What the annotation check alone cannot see: an upstream on a port the
/// sidecar itself listens on (the proxy's own start-up check, against the
/// sidecar's addresses).
fn sidecar_can_use(setting: &Setting, key: &str, value: &str) -> Result<(), String> {
    if setting.env != settings::UPSTREAMS {
        return Ok(());
    }
    let outbound = ProxyConfig::defaults().outbound_addr;
    upstreams::parse(value, "default")
        .and_then(|list| upstreams::check_listeners(&list, outbound, names::SIDECAR_ADMIN_ADDR))
        .map_err(|why| format!("{key}: {why}"))
}

/// The plan, or every problem found in the annotations.
fn plan(
    pod: &PodObject,
    annotations: &BTreeMap<String, String>,
    defaults: &SidecarDefaults,
) -> Result<Plan, Vec<String>> {
    let mut problems = Vec::new();
    let annotation = |key: &str| annotations.get(key).map(|v| v.trim().to_owned());

    let mut proxy_env = Vec::new();
    for setting in SETTINGS {
        let Some(key) = setting.annotation else {
            continue;
        };
        let value = match annotation(key) {
            Some(v) => match setting
                .check(key, &v)
                .map_err(|e| e.to_string())
                .and_then(|()| sidecar_can_use(setting, key, &v))
            {
                Ok(()) => v,
                Err(why) => {
                    problems.push(why);
                    continue;
                }
            },
            None => match defaults
                .proxy_env
                .iter()
                .find(|(s, _)| s.env == setting.env)
            {
                Some((_, v)) => v.clone(),
                None => continue,
            },
        };
        proxy_env.push((setting.env, value));
    }

    let ca_source = annotation(names::BACKEND_TLS_CA)
        .and_then(|v| parse_ca_source(&v).map_err(|why| problems.push(why)).ok());
    let tls_listed = proxy_env
        .iter()
        .any(|(env, v)| *env == settings::BACKEND_TLS && !v.is_empty());
    if tls_listed && ca_source.is_none() && !annotations.contains_key(names::BACKEND_TLS_CA) {
        problems.push(format!(
            "sidelb.io/backend-tls lists services served over TLS but {} is not set: name the Secret or ConfigMap whose key `{}` holds their CAs (`secret:NAME` or `configmap:NAME`); the proxy does not start without it",
            names::BACKEND_TLS_CA,
            names::BACKEND_CA_KEY
        ));
    }
    if ca_source.is_some() {
        proxy_env.push((
            settings::BACKEND_TLS_CA,
            format!("{}/{}", names::BACKEND_CA_DIR, names::BACKEND_CA_KEY),
        ));
    }

    let native = match annotation(names::NATIVE_SIDECAR) {
        None => defaults.native_sidecar,
        Some(v) => config::parse_bool(&v).unwrap_or_else(|| {
            problems.push(format!(
                "{}: {}",
                names::NATIVE_SIDECAR,
                config::bool_error(&v)
            ));
            defaults.native_sidecar
        }),
    };
    let overrun = fit_shutdown(pod, native, &mut proxy_env);

    let mut resource = |key: &str, default: &Option<String>| match annotation(key) {
        None => default.clone(),
        Some(v) => match quantity::check(&v) {
            Ok(()) => Some(v),
            Err(why) => {
                problems.push(format!("{key}: {why}"));
                None
            }
        },
    };
    let r = &defaults.resources;
    let [cpu_req, mem_req, cpu_lim, mem_lim] = RESOURCE_ANNOTATIONS.map(|(key, _)| key);
    let resources = ProxyResources {
        cpu_request: resource(cpu_req, &r.cpu_request),
        memory_request: resource(mem_req, &r.memory_request),
        cpu_limit: resource(cpu_lim, &r.cpu_limit),
        memory_limit: resource(mem_lim, &r.memory_limit),
    };

    for (request, limit, req_key, lim_key) in [
        (
            &resources.cpu_request,
            &resources.cpu_limit,
            cpu_req,
            cpu_lim,
        ),
        (
            &resources.memory_request,
            &resources.memory_limit,
            mem_req,
            mem_lim,
        ),
    ] {
        let (Some(request), Some(limit)) = (request, limit) else {
            continue;
        };
        let (Ok(r), Ok(l)) = (quantity::value(request), quantity::value(limit)) else {
            continue;
        };
        if r > l {
            problems.push(format!(
                "{req_key}: `{request}` is above the limit `{limit}`; Kubernetes refuses a request above its limit, so raise {lim_key} too"
            ));
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let automount_off = pod
        .spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        == Some(false);
    let first_app_container = pod.spec.as_ref().and_then(|s| s.containers.first());
    let default_container = match first_app_container {
        Some(c) if !native && !annotations.contains_key(DEFAULT_CONTAINER) => {
            vec![(DEFAULT_CONTAINER, c.name.clone())]
        }
        _ => Vec::new(),
    };
    let token_volume = automount_off.then(|| free_volume_name(pod, TOKEN_VOLUME, &[]));
    let backend_ca = ca_source.map(|source| {
        Box::new(BackendCa {
            source,
            volume: free_volume_name(pod, BACKEND_CA_VOLUME, token_volume.as_slice()),
        })
    });
    Ok(Plan {
        native,
        proxy_env,
        resources,
        token_volume,
        backend_ca,
        annotations: default_container,
        warnings: unknown_annotations(annotations)
            .into_iter()
            .chain(overrun)
            .collect(),
    })
}

/// Adds the shutdown grace and drain timeout not given, fitted into the
/// pod's grace period with the given ones; returns a warning when the two
/// outlast the period.
fn fit_shutdown(
    pod: &PodObject,
    native: bool,
    proxy_env: &mut Vec<(&'static str, String)>,
) -> Option<String> {
    let given = |env: &str| {
        proxy_env
            .iter()
            .find(|(e, _)| *e == env)
            .map(|(_, v)| v.clone())
    };
    let grace_given = given(settings::SHUTDOWN_GRACE);
    let drain_given = given(settings::DRAIN_TIMEOUT);
    let parse = |v: &Option<String>, allow_zero| {
        v.as_deref()
            .and_then(|v| value::duration(v, allow_zero).ok())
    };
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds);
    let period = shutdown::period(seconds);
    let fitted = shutdown::fit(
        period,
        native,
        parse(&grace_given, true),
        parse(&drain_given, false),
    );
    if grace_given.is_none()
        && let Some(grace) = fitted.grace
    {
        proxy_env.push((settings::SHUTDOWN_GRACE, shutdown::format(grace)));
    }
    if drain_given.is_none() {
        proxy_env.push((settings::DRAIN_TIMEOUT, shutdown::format(fitted.drain)));
    }
    proxy_env.sort_by_key(|(env, _)| SETTINGS.iter().position(|s| s.env == *env));

    let total = fitted.grace.unwrap_or_default() + fitted.drain;
    if grace_given.is_none() && drain_given.is_none() || total <= period {
        return None;
    }
    let named = |env: &'static str, given: Option<String>, value: std::time::Duration| {
        let name = Setting::by_env(env)
            .and_then(|s| s.annotation)
            .unwrap_or(env);
        (name, given.unwrap_or_else(|| shutdown::format(value)))
    };
    let grace = named(
        settings::SHUTDOWN_GRACE,
        grace_given,
        fitted.grace.unwrap_or_default(),
    );
    let drain = named(settings::DRAIN_TIMEOUT, drain_given, fitted.drain);
    Some(shutdown::overrun(
        period,
        (grace.0, &grace.1),
        (drain.0, &drain.1),
    ))
}

/// `base`, or `base-N`, whichever the pod (and `also_taken`) does not use.
fn free_volume_name(pod: &PodObject, base: &str, also_taken: &[String]) -> String {
    let taken: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| v.name.as_str())
        .chain(also_taken.iter().map(String::as_str))
        .collect();
    std::iter::once(base.to_owned())
        .chain((1..).map(|n| format!("{base}-{n}")))
        .find(|name| !taken.contains(&name.as_str()))
        .unwrap_or_else(|| base.to_owned())
}

/// Every annotation key the injector reads or writes.
fn known_annotation(key: &str) -> bool {
    [
        names::INJECT,
        names::INJECTED,
        names::NATIVE_SIDECAR,
        names::BACKEND_TLS_CA,
    ]
    .contains(&key)
        || RESOURCE_ANNOTATIONS.iter().any(|(k, _)| *k == key)
        || Setting::by_annotation(key).is_some()
}

fn unknown_annotations(annotations: &BTreeMap<String, String>) -> Vec<String> {
    annotations
        .keys()
        .filter(|k| k.starts_with("sidelb.io/") && !known_annotation(k))
        .map(|k| format!("annotation {k} is not a sidelb setting and is ignored; see the sidelb README for the annotations"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InjectorConfig;
    use serde_json::{Value, json};

    fn defaults() -> SidecarDefaults {
        InjectorConfig::parse_from(["sidelb-injector", "--tls-cert", "/c", "--tls-key", "/k"])
            .expect("default configuration")
            .sidecar
    }

    fn request(kind: &str, sub_resource: Option<&str>, operation: &str, object: Value) -> Value {
        json!({
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "subResource": sub_resource,
            "operation": operation,
            "object": object,
        })
    }

    fn pod(labels: Value, annotations: Value, spec: Value) -> Value {
        json!({
            "metadata": {"labels": labels, "annotations": annotations},
            "spec": spec,
        })
    }

    fn app() -> Value {
        json!({"containers": [{"name": "app", "image": "app"}]})
    }

    fn annotated(annotations: Value) -> Value {
        request("Pod", None, "CREATE", pod(json!({}), annotations, app()))
    }

    /// The decision in a few words: `skip:<reason>`, `inject`, `refuse:<message>`
    /// or `error:<message>`.
    fn outcome(req: &Value) -> (String, Option<Plan>) {
        let text = req.to_string();
        let req: AdmissionRequest = serde_json::from_str(&text).expect("a request");
        if let Some(skip) = not_a_pod_create(&req) {
            return (format!("skip:{}", skip.reason()), None);
        }
        let pod = match read_pod(&req) {
            Ok(pod) => pod,
            Err(e) => return (format!("error:{e}"), None),
        };
        match decide(&pod, &defaults()) {
            Decision::Skip(skip) => (format!("skip:{}", skip.reason()), None),
            Decision::Inject(plan) => ("inject".into(), Some(plan)),
            Decision::Refuse(why) => (format!("refuse:{}:{}", why.reason, why.message), None),
        }
    }

    #[test]
    fn which_requests_are_left_alone_refused_or_injected() {
        let proxy = json!({"containers": [{"name": names::PROXY_CONTAINER}]});
        let proxy_init = json!({
            "containers": [{"name": "app"}],
            "initContainers": [{"name": names::PROXY_CONTAINER}],
        });
        let disabled = json!({(names::INJECT): " disabled "});
        let cases = [
            (
                "a Service",
                request("Service", None, "CREATE", json!({})),
                "skip:not-a-pod",
            ),
            (
                "a binding",
                request("Pod", Some("binding"), "CREATE", json!({})),
                "skip:not-a-pod",
            ),
            (
                "an update",
                request("Pod", None, "UPDATE", app()),
                "skip:not-create",
            ),
            (
                "a delete",
                request("Pod", None, "DELETE", Value::Null),
                "skip:not-create",
            ),
            (
                "no object",
                request("Pod", None, "CREATE", Value::Null),
                "error:request.object is missing",
            ),
            (
                "not a pod",
                request("Pod", None, "CREATE", json!({"spec": "x"})),
                "error:request.object is not a Pod",
            ),
            (
                "proxy present",
                request("Pod", None, "CREATE", pod(json!({}), json!({}), proxy)),
                "skip:already-injected",
            ),
            (
                "proxy present as a native sidecar",
                request("Pod", None, "CREATE", pod(json!({}), json!({}), proxy_init)),
                "skip:already-injected",
            ),
            (
                "label off",
                request(
                    "Pod",
                    None,
                    "CREATE",
                    pod(disabled.clone(), json!({}), app()),
                ),
                "skip:disabled-by-label",
            ),
            (
                "annotation off",
                annotated(disabled),
                "skip:disabled-by-annotation",
            ),
            ("a plain pod", annotated(json!({})), "inject"),
            (
                "a bad balancer",
                annotated(json!({"sidelb.io/balancer": "random"})),
                "refuse:invalid-annotation:sidelb.io/balancer",
            ),
            (
                "a bad native-sidecar",
                annotated(json!({(names::NATIVE_SIDECAR): "yes"})),
                "refuse:invalid-annotation:sidelb.io/native-sidecar",
            ),
            (
                "a bad quantity",
                annotated(json!({(names::PROXY_MEMORY_LIMIT): "64MB"})),
                "refuse:invalid-annotation:sidelb.io/proxy-memory-limit",
            ),
            (
                "a request above its limit",
                annotated(json!({(names::PROXY_CPU_REQUEST): "2", (names::PROXY_CPU_LIMIT): "1"})),
                "refuse:invalid-annotation:sidelb.io/proxy-cpu-request: `2` is above the limit `1`",
            ),
            (
                "an upstream on the admin port",
                annotated(json!({"sidelb.io/upstreams": "greeter.default:50051=4191"})),
                "refuse:invalid-annotation:sidelb.io/upstreams",
            ),
        ];
        for (name, req, expected) in cases {
            let (got, _) = outcome(&req);
            assert!(got.starts_with(expected), "{name}: {got}");
        }
    }

    fn with_spec(annotations: Value, spec: Value) -> Value {
        request("Pod", None, "CREATE", pod(json!({}), annotations, spec))
    }

    fn ports(container: &str, ports: Value) -> Value {
        json!({"name": container, "image": "app", "ports": ports})
    }

    #[test]
    fn pods_the_sidecar_cannot_share_a_network_with() {
        let upstream = json!({"sidelb.io/upstreams": "greeter.default:50051=15001"});
        let on = |port: u16| json!([{"containerPort": port}]);
        let cases = [
            (
                "hostNetwork",
                with_spec(
                    json!({}),
                    json!({"hostNetwork": true, "containers": [{"name": "app"}]}),
                ),
                "skip:host-network",
            ),
            (
                "hostNetwork, injection off",
                with_spec(
                    json!({(names::INJECT): "disabled"}),
                    json!({"hostNetwork": true, "containers": [{"name": "app"}]}),
                ),
                "skip:disabled-by-annotation",
            ),
            (
                "hostNetwork false",
                with_spec(
                    json!({}),
                    json!({"hostNetwork": false, "containers": [{"name": "app"}]}),
                ),
                "inject",
            ),
            (
                "a container on the outbound port",
                with_spec(json!({}), json!({"containers": [ports("app", on(4140))]})),
                "refuse:port-clash:container `app` uses port 4140, which sidelb-proxy listens on (its outbound listener)",
            ),
            (
                "an init container on the admin port",
                with_spec(
                    json!({}),
                    json!({"initContainers": [ports("setup", on(4191))], "containers": [{"name": "app"}]}),
                ),
                "refuse:port-clash:container `setup` uses port 4191, which sidelb-proxy listens on (its admin server",
            ),
            (
                "a second port of a container on an upstream's local port",
                with_spec(
                    upstream.clone(),
                    json!({"containers": [{"name": "app"}, ports("metrics", json!([{"containerPort": 9090}, {"containerPort": 15001, "protocol": "TCP"}]))]}),
                ),
                "refuse:port-clash:container `metrics` uses port 15001, which sidelb-proxy listens on (the local port of upstream `greeter.default:50051`)",
            ),
            (
                "a UDP port is not the proxy's",
                with_spec(
                    upstream.clone(),
                    json!({"containers": [ports("dns", json!([{"containerPort": 4140, "protocol": "UDP"}]))]}),
                ),
                "inject",
            ),
            (
                "other ports",
                with_spec(
                    upstream,
                    json!({"containers": [ports("app", json!([{"containerPort": 8080}, {"containerPort": 15002}]))]}),
                ),
                "inject",
            ),
            (
                "an upstream listening beyond loopback",
                annotated(
                    json!({"sidelb.io/upstreams": "a:1=15000, greeter.default:50051=0.0.0.0:15001"}),
                ),
                "refuse:invalid-annotation:sidelb.io/upstreams: entry `greeter.default:50051=0.0.0.0:15001`: listen address 0.0.0.0:15001 is not loopback",
            ),
        ];
        for (name, req, expected) in cases {
            let (got, _) = outcome(&req);
            assert!(got.starts_with(expected), "{name}: {got}");
        }
    }

    #[test]
    fn every_port_clash_is_named_and_host_network_warns_why() {
        let spec = json!({"containers": [ports("a", json!([{"containerPort": 4140}])), ports("b", json!([{"containerPort": 4191}]))]});
        let (got, _) = outcome(&with_spec(json!({}), spec));
        assert!(
            got.contains("`a` uses port 4140") && got.contains("`b` uses port 4191"),
            "{got}"
        );
        let warning = Skip::HostNetwork.warning().expect("a warning");
        assert!(
            warning.contains("hostNetwork") && warning.contains("127.0.0.1:4140"),
            "{warning}"
        );
        assert_eq!(Skip::AlreadyInjected.warning(), None);
    }

    #[test]
    fn every_bad_annotation_is_named_at_once() {
        let (got, _) = outcome(&annotated(json!({
            "sidelb.io/balancer": "random",
            (names::PROXY_CPU_LIMIT): "lots",
        })));
        assert!(got.contains("sidelb.io/balancer"), "{got}");
        assert!(got.contains("sidelb.io/proxy-cpu-limit"), "{got}");
    }

    #[test]
    fn the_plan_follows_the_annotations_over_the_defaults() {
        let (_, plan) = outcome(&annotated(json!({
            "sidelb.io/balancer": " round-robin ",
            (names::PROXY_MEMORY_LIMIT): "128Mi",
            "sidelb.io/balancr": "typo",
        })));
        let plan = plan.expect("injected");
        assert!(plan.native);
        assert_eq!(
            plan.proxy_env,
            [
                (settings::BALANCER, "round-robin".to_owned()),
                (settings::DRAIN_TIMEOUT, "28s".to_owned())
            ]
        );
        assert_eq!(plan.resources.memory_limit.as_deref(), Some("128Mi"));
        assert_eq!(
            plan.resources.cpu_request,
            defaults().resources.cpu_request,
            "unset ones keep the injector's defaults"
        );
        assert_eq!(plan.token_volume, None);
        assert!(plan.annotations.is_empty());
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("sidelb.io/balancr"));
    }

    #[test]
    fn a_backend_ca_gets_a_volume_name_of_its_own() {
        let spec = json!({
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "app"}],
            "volumes": [{"name": "sidelb-backend-ca", "emptyDir": {}}]
        });
        let annotations = json!({
            "sidelb.io/backend-tls": "greeter",
            (names::BACKEND_TLS_CA): "configmap:greeter-ca",
        });
        let (_, plan) = outcome(&with_spec(annotations, spec));
        let plan = plan.expect("injected");
        assert_eq!(plan.token_volume.as_deref(), Some(TOKEN_VOLUME));
        let ca = plan.backend_ca.expect("a CA volume");
        assert_eq!(ca.source, CaSource::ConfigMap("greeter-ca".into()));
        assert_eq!(ca.volume, "sidelb-backend-ca-1");
        assert!(plan.proxy_env.contains(&(
            settings::BACKEND_TLS_CA,
            "/var/run/sidelb/backend-ca/ca.crt".to_owned()
        )));
        for bad in [
            "secret:",
            "secret",
            "Secret:ca",
            "configmap:a/b",
            "secret:-x",
        ] {
            assert!(parse_ca_source(bad).is_err(), "{bad}");
        }
    }

    fn shutdown_env(plan: &Plan) -> Vec<(&'static str, &str)> {
        plan.proxy_env
            .iter()
            .filter(|(env, _)| [settings::SHUTDOWN_GRACE, settings::DRAIN_TIMEOUT].contains(env))
            .map(|(env, v)| (*env, v.as_str()))
            .collect()
    }

    fn with_period(annotations: Value, seconds: Option<i64>) -> Value {
        let mut spec = app();
        if let Some(s) = seconds {
            spec["terminationGracePeriodSeconds"] = json!(s);
        }
        with_spec(annotations, spec)
    }

    #[test]
    fn a_classic_sidecar_gets_a_shutdown_grace_and_leaves_the_app_the_default_container() {
        let classic = json!({(names::NATIVE_SIDECAR): "false"});
        let (_, plan) = outcome(&annotated(classic.clone()));
        let plan = plan.expect("injected");
        assert!(!plan.native);
        assert_eq!(
            shutdown_env(&plan),
            [
                (settings::SHUTDOWN_GRACE, "10s"),
                (settings::DRAIN_TIMEOUT, "18s")
            ],
            "a third of the default 30s, and the rest less 2s"
        );
        assert_eq!(plan.proxy_env.len(), 2);
        assert_eq!(plan.annotations, [(DEFAULT_CONTAINER, "app".to_owned())]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        let (_, plan) = outcome(&annotated(json!({
            (names::NATIVE_SIDECAR): "false",
            "sidelb.io/shutdown-grace": "3s",
        })));
        let plan = plan.expect("injected");
        assert_eq!(
            shutdown_env(&plan),
            [
                (settings::SHUTDOWN_GRACE, "3s"),
                (settings::DRAIN_TIMEOUT, "25s")
            ]
        );
    }

    #[test]
    fn grace_and_drain_follow_the_pods_grace_period() {
        let classic = json!({(names::NATIVE_SIDECAR): "false"});
        let cases = [
            (
                classic.clone(),
                None,
                vec![
                    ("SIDELB_SHUTDOWN_GRACE", "10s"),
                    ("SIDELB_DRAIN_TIMEOUT", "18s"),
                ],
            ),
            (
                classic.clone(),
                Some(60),
                vec![
                    ("SIDELB_SHUTDOWN_GRACE", "10s"),
                    ("SIDELB_DRAIN_TIMEOUT", "48s"),
                ],
            ),
            (
                classic.clone(),
                Some(5),
                vec![
                    ("SIDELB_SHUTDOWN_GRACE", "1666ms"),
                    ("SIDELB_DRAIN_TIMEOUT", "1667ms"),
                ],
            ),
            (classic, Some(0), vec![("SIDELB_DRAIN_TIMEOUT", "1ms")]),
            (json!({}), None, vec![("SIDELB_DRAIN_TIMEOUT", "28s")]),
            (json!({}), Some(60), vec![("SIDELB_DRAIN_TIMEOUT", "30s")]),
            (json!({}), Some(0), vec![("SIDELB_DRAIN_TIMEOUT", "1ms")]),
        ];
        for (annotations, period, expected) in cases {
            let (got, plan) = outcome(&with_period(annotations.clone(), period));
            let plan = plan.unwrap_or_else(|| panic!("{annotations} {period:?}: {got}"));
            assert_eq!(shutdown_env(&plan), expected, "{annotations} {period:?}");
            assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        }
    }

    #[test]
    fn given_values_win_and_a_warning_says_when_they_outlast_the_period() {
        let given = json!({
            (names::NATIVE_SIDECAR): "false",
            "sidelb.io/shutdown-grace": "15s",
            "sidelb.io/drain-timeout": "30s",
        });
        let (_, plan) = outcome(&with_period(given.clone(), None));
        let plan = plan.expect("admitted, not refused");
        assert_eq!(
            shutdown_env(&plan),
            [
                (settings::SHUTDOWN_GRACE, "15s"),
                (settings::DRAIN_TIMEOUT, "30s")
            ]
        );
        let [warning] = &plan.warnings[..] else {
            panic!("one warning: {:?}", plan.warnings)
        };
        for part in [
            "sidelb.io/shutdown-grace `15s`",
            "sidelb.io/drain-timeout `30s`",
            "terminationGracePeriodSeconds of 30s",
        ] {
            assert!(warning.contains(part), "{part}: {warning}");
        }
        let (_, plan) = outcome(&with_period(given, Some(60)));
        assert!(
            plan.expect("injected").warnings.is_empty(),
            "45s fit in 60s"
        );

        // One given: the other takes what is left, or the least there is.
        let (_, plan) = outcome(&with_period(
            json!({"sidelb.io/shutdown-grace": "40s"}),
            None,
        ));
        let plan = plan.expect("injected");
        assert_eq!(
            shutdown_env(&plan),
            [
                (settings::SHUTDOWN_GRACE, "40s"),
                (settings::DRAIN_TIMEOUT, "1ms")
            ]
        );
        assert!(
            plan.warnings[0].contains("sidelb.io/drain-timeout `1ms`"),
            "{:?}",
            plan.warnings
        );

        // The injector's own defaults count as given.
        let mut defaults = defaults();
        let drain = Setting::by_env(settings::DRAIN_TIMEOUT).expect("a setting");
        defaults.proxy_env.push((drain, "25s".to_owned()));
        let pod: PodObject = serde_json::from_value(pod(
            json!({}),
            json!({(names::NATIVE_SIDECAR): "false"}),
            app(),
        ))
        .expect("a pod");
        let Decision::Inject(plan) = decide(&pod, &defaults) else {
            panic!("injected")
        };
        assert_eq!(
            shutdown_env(&plan),
            [
                (settings::SHUTDOWN_GRACE, "3s"),
                (settings::DRAIN_TIMEOUT, "25s")
            ]
        );
    }

    #[test]
    fn a_pod_without_automounted_token_gets_a_volume_of_a_free_name() {
        let spec = json!({
            "automountServiceAccountToken": false,
            "containers": [{"name": "app"}],
            "volumes": [{"name": TOKEN_VOLUME, "emptyDir": {}}],
        });
        let req = request("Pod", None, "CREATE", pod(json!({}), json!({}), spec));
        let (_, plan) = outcome(&req);
        assert_eq!(
            plan.expect("injected").token_volume,
            Some(format!("{TOKEN_VOLUME}-1"))
        );
    }
}
