//! A container's environment, built as the kubelet builds it: the
//! `kubernetes` Service's variables first, then `envFrom` sources, then `env`
//! entries in order (later ones win), each value `$(VAR)`-expanded against
//! the variables defined before it.
//!
//! Values come from literals, the downward API (`fieldRef`), ConfigMap and
//! Secret keys. The container's own environment is only this: nothing of the
//! agent's leaks in, so a binary that would read `KUBECONFIG` finds none and
//! uses its in-cluster credentials.

use super::expand::expand;
use super::objects::Objects;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod};
use std::collections::BTreeMap;

/// `PATH` as a typical image defines it (the host's root is the container's).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where in-cluster clients find the API server (the `kubernetes` Service).
#[derive(Clone, Debug)]
pub struct ApiService {
    pub host: String,
    pub port: u16,
}

/// The environment of `container` in `pod`, in definition order.
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    api: &ApiService,
    objects: &Objects,
) -> Result<Vec<(String, String)>> {
    let mut env = Env::default();
    env.set("PATH", PATH.to_owned());
    env.set("HOSTNAME", pod.metadata.name.clone().unwrap_or_default());
    let (host, port) = (&api.host, api.port);
    env.set("KUBERNETES_SERVICE_HOST", host.clone());
    env.set("KUBERNETES_SERVICE_PORT", port.to_string());
    env.set("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string());
    env.set("KUBERNETES_PORT", format!("tcp://{host}:{port}"));
    env.set(
        &format!("KUBERNETES_PORT_{port}_TCP"),
        format!("tcp://{host}:{port}"),
    );
    env.set(&format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into());
    env.set(
        &format!("KUBERNETES_PORT_{port}_TCP_PORT"),
        port.to_string(),
    );
    env.set(&format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.clone());

    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.config_map(namespace, &r.name).await? {
                Some(data) => data
                    .into_iter()
                    .for_each(|(k, v)| env.set(&format!("{prefix}{k}"), text(v))),
                None if optional => {}
                None => bail!("envFrom: ConfigMap {namespace}/{} not found", r.name),
            }
        }
        if let Some(r) = &source.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.secret(namespace, &r.name).await? {
                Some(data) => data
                    .into_iter()
                    .for_each(|(k, v)| env.set(&format!("{prefix}{k}"), text(v))),
                None if optional => {}
                None => bail!("envFrom: Secret {namespace}/{} not found", r.name),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, field)
                        .with_context(|| format!("env {}: fieldRef", var.name))?
                } else if let Some(key) = &from.config_map_key_ref {
                    let optional = key.optional.unwrap_or(false);
                    let data = objects.config_map(namespace, &key.name).await?;
                    match data.and_then(|mut d| d.remove(&key.key)) {
                        Some(v) => text(v),
                        None if optional => continue,
                        None => bail!(
                            "env {}: key {} of ConfigMap {namespace}/{} not found",
                            var.name,
                            key.key,
                            key.name
                        ),
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    let optional = key.optional.unwrap_or(false);
                    let data = objects.secret(namespace, &key.name).await?;
                    match data.and_then(|mut d| d.remove(&key.key)) {
                        Some(v) => text(v),
                        None if optional => continue,
                        None => bail!(
                            "env {}: key {} of Secret {namespace}/{} not found",
                            var.name,
                            key.key,
                            key.name
                        ),
                    }
                } else {
                    bail!(
                        "env {}: only fieldRef, configMapKeyRef and secretKeyRef are supported \
                         by the node agent",
                        var.name
                    )
                }
            }
            (value, None) => expand(value.as_deref().unwrap_or(""), |name| env.get(name)),
        };
        env.set(&var.name, value);
    }
    Ok(env.vars)
}

/// `command` and `args` with `$(VAR)` expanded against `env`.
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    words.iter().map(|w| expand(w, lookup)).collect()
}

/// A downward-API field of `pod`.
pub fn field_value(pod: &Pod, field: &ObjectFieldSelector) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let path = field.field_path.as_str();
    if let Some(key) = bracketed(path, "metadata.labels") {
        return Ok(lookup(meta.labels.as_ref(), key));
    }
    if let Some(key) = bracketed(path, "metadata.annotations") {
        return Ok(lookup(meta.annotations.as_ref(), key));
    }
    let ips = |list: Option<Vec<String>>| list.unwrap_or_default().join(",");
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIPs" => ips(status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|l| l.iter().map(|ip| ip.ip.clone()).collect())),
        "status.hostIPs" => ips(status
            .and_then(|s| s.host_ips.as_ref())
            .map(|l| l.iter().map(|ip| ip.ip.clone()).collect())),
        other => bail!("field path {other:?} is not one the downward API offers"),
    })
}

fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

fn lookup(map: Option<&BTreeMap<String, String>>, key: &str) -> String {
    map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Variables in definition order; setting one again moves it to the end.
#[derive(Default)]
struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn set(&mut self, name: &str, value: String) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value));
    }

    fn get(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.244.1.7".into()),
                pod_ips: Some(vec![PodIP {
                    ip: "10.244.1.7".into(),
                }]),
                ..Default::default()
            }),
        }
    }

    fn field(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            api_version: None,
            field_path: path.into(),
        }
    }

    #[test]
    fn downward_api_fields_come_from_the_pod() {
        let pod = pod();
        let value = |p: &str| field_value(&pod, &field(p)).expect(p);
        assert_eq!(value("metadata.name"), "web-1");
        assert_eq!(value("metadata.namespace"), "shop");
        assert_eq!(value("spec.nodeName"), "node-a");
        assert_eq!(value("status.podIP"), "10.244.1.7");
        assert_eq!(value("status.podIPs"), "10.244.1.7");
        assert_eq!(value("metadata.labels['app']"), "web");
        assert_eq!(value("metadata.labels['missing']"), "");
        let err = field_value(&pod, &field("spec.containers")).expect_err("unknown");
        assert!(err.to_string().contains("spec.containers"), "{err}");
    }

    #[test]
    fn args_expand_against_the_last_definition() {
        let env = vec![
            ("PORT".to_owned(), "1".to_owned()),
            ("PORT".to_owned(), "50051".to_owned()),
        ];
        let words = expand_all(&["--listen=0.0.0.0:$(PORT)".to_owned()], &env);
        assert_eq!(words, ["--listen=0.0.0.0:50051"]);
    }
}
