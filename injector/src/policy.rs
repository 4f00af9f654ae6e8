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

use crate::config::{self, ProxyResources, RESOURCE_ANNOTATIONS, SidecarDefaults};
use crate::review::{AdmissionRequest, PodObject};
use sidelb_config::names;
use sidelb_config::settings::{self, SETTINGS};
use sidelb_config::{ProxyConfig, Setting, quantity, upstreams};
use std::collections::BTreeMap;

/// What to do with one admission request.
#[derive(Debug)]
pub enum Decision {
    Skip(Skip),
    Inject(Plan),
    /// Refused, with a message for the user.
    Refuse(String),
}

/// Why a request is allowed unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NotAPod,
    NotCreate,
    DisabledByLabel,
    DisabledByAnnotation,
    AlreadyInjected,
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
        }
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
    /// Annotations to add besides `sidelb.io/injected`.
    pub annotations: Vec<(&'static str, String)>,
    /// Unknown `sidelb.io/` annotations, likely typos, for `kubectl` to show.
    pub warnings: Vec<String>,
}

/// A Pod CREATE whose object cannot be read as a Pod.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("request.object is missing for a Pod CREATE")]
    MissingObject,
    #[error("request.object is not a Pod: {0}")]
    NotAPod(#[from] serde_json::Error),
}

/// How long a classic sidecar keeps serving after SIGTERM, so the app can
/// finish its own shutdown through it.
pub const CLASSIC_SHUTDOWN_GRACE: &str = "10s";

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
    let none = BTreeMap::new();
    match plan(pod, annotations.unwrap_or(&none), defaults) {
        Ok(plan) => Decision::Inject(plan),
        Err(problems) => Decision::Refuse(problems.join("; ")),
    }
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
    if !native
        && !proxy_env
            .iter()
            .any(|(env, _)| *env == settings::SHUTDOWN_GRACE)
    {
        proxy_env.push((settings::SHUTDOWN_GRACE, CLASSIC_SHUTDOWN_GRACE.to_owned()));
        proxy_env.sort_by_key(|(env, _)| SETTINGS.iter().position(|s| s.env == *env));
    }

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
    Ok(Plan {
        native,
        proxy_env,
        resources,
        token_volume: automount_off.then(|| free_volume_name(pod)),
        annotations: default_container,
        warnings: unknown_annotations(annotations),
    })
}

fn free_volume_name(pod: &PodObject) -> String {
    let taken: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| v.name.as_str())
        .collect();
    std::iter::once(TOKEN_VOLUME.to_owned())
        .chain((1..).map(|n| format!("{TOKEN_VOLUME}-{n}")))
        .find(|name| !taken.contains(&name.as_str()))
        .unwrap_or_else(|| TOKEN_VOLUME.to_owned())
}

/// Every annotation key the injector reads or writes.
fn known_annotation(key: &str) -> bool {
    [names::INJECT, names::INJECTED, names::NATIVE_SIDECAR].contains(&key)
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
            Decision::Refuse(why) => (format!("refuse:{why}"), None),
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
                "refuse:sidelb.io/balancer",
            ),
            (
                "a bad native-sidecar",
                annotated(json!({(names::NATIVE_SIDECAR): "yes"})),
                "refuse:sidelb.io/native-sidecar",
            ),
            (
                "a bad quantity",
                annotated(json!({(names::PROXY_MEMORY_LIMIT): "64MB"})),
                "refuse:sidelb.io/proxy-memory-limit",
            ),
            (
                "a request above its limit",
                annotated(json!({(names::PROXY_CPU_REQUEST): "2", (names::PROXY_CPU_LIMIT): "1"})),
                "refuse:sidelb.io/proxy-cpu-request: `2` is above the limit `1`",
            ),
            (
                "an upstream on the admin port",
                annotated(json!({"sidelb.io/upstreams": "greeter.default:50051=4191"})),
                "refuse:sidelb.io/upstreams",
            ),
        ];
        for (name, req, expected) in cases {
            let (got, _) = outcome(&req);
            assert!(got.starts_with(expected), "{name}: {got}");
        }
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
            [(settings::BALANCER, "round-robin".to_owned())]
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
    fn a_classic_sidecar_gets_a_shutdown_grace_and_leaves_the_app_the_default_container() {
        let (_, plan) = outcome(&annotated(json!({(names::NATIVE_SIDECAR): "false"})));
        let plan = plan.expect("injected");
        assert!(!plan.native);
        assert_eq!(
            plan.proxy_env,
            [(settings::SHUTDOWN_GRACE, CLASSIC_SHUTDOWN_GRACE.to_owned())]
        );
        assert_eq!(plan.annotations, [(DEFAULT_CONTAINER, "app".to_owned())]);

        let (_, plan) = outcome(&annotated(json!({
            (names::NATIVE_SIDECAR): "false",
            "sidelb.io/shutdown-grace": "3s",
        })));
        let env = plan.expect("injected").proxy_env;
        assert!(
            env.contains(&(settings::SHUTDOWN_GRACE, "3s".to_owned())),
            "{env:?}"
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
