//! What kube-apiserver fills in on its own: scheme defaults applied when a body is
//! decoded, the system fields set just before storing, and the ServiceAccount
//! admission plugin's token volume on Pods.
//!
//! Webhooks see objects after defaulting and after built-in admission, so the injector
//! is tested against pods shaped like a real cluster's (a `kube-api-access-*` volume
//! mounted in every container, `generateName` without a name yet).

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value, json};

use super::meta;
use super::resources::ResourceType;

const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    let absent = map.get(key).is_none_or(Value::is_null);
    if absent {
        map.insert(key.to_string(), value);
    }
}

fn object_at<'a>(object: &'a mut Value, pointer: &str) -> Option<&'a mut Map<String, Value>> {
    object.pointer_mut(pointer).and_then(Value::as_object_mut)
}

fn each_in<'a>(
    object: &'a mut Value,
    pointer: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    object
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Defaults set when a body is decoded (before admission).
pub fn apply_scheme_defaults(resource: &ResourceType, object: &mut Value) {
    match resource.kind {
        "Service" => default_service(object),
        "EndpointSlice" => {
            for port in each_in(object, "/ports") {
                set_default(port, "protocol", json!("TCP"));
            }
        }
        "Pod" => default_pod_spec(object, "/spec"),
        "Namespace" => {
            if let Some(root) = object.as_object_mut() {
                set_default(root, "spec", json!({ "finalizers": ["kubernetes"] }));
            }
        }
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            default_webhooks(object, resource.kind)
        }
        _ => {}
    }
}

fn default_service(object: &mut Value) {
    let Some(spec) = object_at(object, "/spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    for port in each_in(object, "/spec/ports") {
        set_default(port, "protocol", json!("TCP"));
        if let Some(number) = port.get("port").cloned() {
            set_default(port, "targetPort", number);
        }
    }
}

fn default_pod_spec(object: &mut Value, spec_pointer: &str) {
    let Some(spec) = object_at(object, spec_pointer) else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        for container in each_in(object, &format!("{spec_pointer}/{list}")) {
            set_default(
                container,
                "terminationMessagePath",
                json!("/dev/termination-log"),
            );
            set_default(container, "terminationMessagePolicy", json!("File"));
            set_default(container, "resources", json!({}));
            let image = container.get("image").and_then(Value::as_str).unwrap_or("");
            let tag = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split_once(':'))
                .map(|(_, t)| t);
            let policy = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
                "IfNotPresent"
            } else {
                "Always"
            };
            set_default(container, "imagePullPolicy", json!(policy));
            if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(port, "protocol", json!("TCP"));
                }
            }
        }
    }
}

fn default_webhooks(object: &mut Value, kind: &str) {
    for hook in each_in(object, "/webhooks") {
        set_default(hook, "failurePolicy", json!("Fail"));
        set_default(hook, "matchPolicy", json!("Equivalent"));
        set_default(hook, "namespaceSelector", json!({}));
        set_default(hook, "objectSelector", json!({}));
        set_default(hook, "timeoutSeconds", json!(10));
        if kind == "MutatingWebhookConfiguration" {
            set_default(hook, "reinvocationPolicy", json!("Never"));
        }
        if let Some(service) = hook
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            set_default(service, "port", json!(443));
        }
        if let Some(rules) = hook.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                set_default(rule, "scope", json!("*"));
            }
        }
    }
}

/// Hands out ClusterIPs from 10.96.0.0/12 (never routed; only shown and stored).
#[derive(Debug, Default)]
pub struct ClusterIps(AtomicU32);

impl ClusterIps {
    fn next(&self) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 10;
        format!("10.96.{}.{}", (n / 250) % 256, n % 250 + 1)
    }
}

/// System fields set just before an object is first stored (after admission).
pub fn prepare_for_create(resource: &ResourceType, object: &mut Value, ips: &ClusterIps) {
    let name = meta::name(object).to_string();
    let metadata = meta::metadata_mut(object);
    if name.is_empty()
        && let Some(prefix) = metadata
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    {
        let generated = format!("{prefix}{}", meta::name_suffix());
        metadata.insert("name".into(), json!(generated));
    }
    metadata.insert("uid".into(), json!(meta::new_uid()));
    metadata.insert("creationTimestamp".into(), json!(meta::now()));
    metadata.remove("deletionTimestamp");
    metadata.remove("resourceVersion");
    if resource.tracks_generation {
        metadata.insert("generation".into(), json!(1));
    } else {
        metadata.remove("generation");
    }
    if resource.has_status
        && let Some(root) = object.as_object_mut()
    {
        let initial = match resource.kind {
            "Pod" => json!({ "phase": "Pending", "qosClass": "BestEffort" }),
            "Namespace" => json!({ "phase": "Active" }),
            "Service" => json!({ "loadBalancer": {} }),
            _ => json!({}),
        };
        root.insert("status".into(), initial);
    }
    match resource.kind {
        "Namespace" => label_namespace(object),
        "Service" => allocate_cluster_ip(object, ips),
        _ => {}
    }
}

fn label_namespace(object: &mut Value) {
    let name = meta::name(object).to_string();
    let metadata = meta::metadata_mut(object);
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

fn allocate_cluster_ip(object: &mut Value, ips: &ClusterIps) {
    let Some(spec) = object_at(object, "/spec") else {
        return;
    };
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return;
    }
    let ip = match spec.get("clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => ip.to_string(),
        _ => ips.next(),
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
}

/// Carries the server-owned fields of `old` into an update of it.
pub fn prepare_for_update(resource: &ResourceType, new: &mut Value, old: &Value) {
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        let value = old.pointer(&format!("/metadata/{field}")).cloned();
        let metadata = meta::metadata_mut(new);
        match value {
            Some(value) => metadata.insert(field.into(), value),
            None => metadata.remove(field),
        };
    }
    if resource.has_status
        && let Some(root) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => root.insert("status".into(), status.clone()),
            None => root.remove("status"),
        };
    }
    if resource.tracks_generation && spec_changed(new, old) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta::metadata_mut(new).insert("generation".into(), json!(generation));
    }
    match resource.kind {
        "Namespace" => label_namespace(new),
        "Service" => keep_cluster_ip(new, old),
        _ => {}
    }
}

fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    strip(new) != strip(old)
}

fn keep_cluster_ip(new: &mut Value, old: &Value) {
    let Some(spec) = object_at(new, "/spec") else {
        return;
    };
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if let Some(value) = old.pointer(&format!("/spec/{field}")) {
            set_default(spec, field, value.clone());
        }
    }
}

/// The ServiceAccount admission plugin: `serviceAccountName: default` and, unless
/// automounting is off, a projected token volume mounted into every container that
/// lacks it. Idempotent, so it can run again on reinvocation. Returns whether it
/// changed the pod.
pub fn service_account_admission(pod: &mut Value) -> bool {
    let before = pod.clone();
    let Some(spec) = object_at(pod, "/spec") else {
        return false;
    };
    set_default(spec, "serviceAccountName", json!("default"));
    if spec.get("automountServiceAccountToken") == Some(&json!(false)) {
        return *pod != before;
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(volumes) = volumes.as_array_mut() else {
        return *pod != before;
    };
    let existing = volumes.iter().find_map(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .filter(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
            .map(str::to_string)
    });
    let volume_name = match existing {
        Some(name) => name,
        None => {
            let name = format!("{TOKEN_VOLUME_PREFIX}{}", meta::name_suffix());
            volumes.push(token_volume(&name));
            name
        }
    };
    for list in ["initContainers", "containers"] {
        for container in each_in(pod, &format!("/spec/{list}")) {
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let mounted = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !mounted {
                mounts.push(
                    json!({ "name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH }),
                );
            }
        }
    }
    *pod != before
}

fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                { "configMap": { "name": "kube-root-ca.crt", "items": [ { "key": "ca.crt", "path": "ca.crt" } ] } },
                { "downwardAPI": { "items": [ { "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } } ] } }
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_admission_is_idempotent() {
        let mut pod = json!({ "spec": { "containers": [ { "name": "app", "image": "x" } ] } });
        assert!(service_account_admission(&mut pod));
        let once = pod.clone();
        assert!(!service_account_admission(&mut pod));
        assert_eq!(pod, once);
        assert_eq!(
            pod.pointer("/spec/containers/0/volumeMounts/0/mountPath"),
            Some(&json!(TOKEN_MOUNT_PATH))
        );
        pod["spec"]["initContainers"] = json!([ { "name": "sidecar", "image": "y" } ]);
        assert!(service_account_admission(&mut pod));
        assert_eq!(
            pod.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .map(Vec::len),
            Some(1)
        );
        assert!(
            pod.pointer("/spec/initContainers/0/volumeMounts/0")
                .is_some()
        );
    }

    #[test]
    fn services_get_defaults_and_an_ip() {
        let rt = crate::resources::by_kind("v1", "Service").unwrap();
        let mut svc =
            json!({ "metadata": { "name": "a" }, "spec": { "ports": [ { "port": 80 } ] } });
        apply_scheme_defaults(rt, &mut svc);
        prepare_for_create(rt, &mut svc, &ClusterIps::default());
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert!(
            svc["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.96.")
        );
    }
}
