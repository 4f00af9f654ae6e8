//! The `sidelb-proxy` container and the volumes it may need, as Kubernetes
//! objects.
//!
//! The container is built from a [`Plan`] alone, so what a pod gets depends
//! only on its annotations and the injector's defaults. It is hardened to pass
//! the Pod Security `restricted` profile on its own (non-root with a fixed
//! UID, read-only root, no privilege escalation, no capabilities,
//! RuntimeDefault seccomp): the app's pod-level settings are not assumed.

use crate::config::SidecarDefaults;
use crate::policy::{BackendCa, Plan};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    DownwardAPIProjection, DownwardAPIVolumeFile, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sidelb_config::names;
use sidelb_config::settings;
use std::collections::BTreeMap;

/// The proxy's user and group: fixed and non-root, so `runAsNonRoot` can be
/// verified by the kubelet whatever the image says.
pub const PROXY_UID: i64 = 2102;

/// Where Kubernetes clients look for the service-account token.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The proxy container for `plan`.
pub fn container(plan: &Plan, defaults: &SidecarDefaults) -> Container {
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(names::ADMIN_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    Container {
        name: names::PROXY_CONTAINER.to_owned(),
        image: Some(defaults.image.clone()),
        image_pull_policy: Some(defaults.image_pull_policy.clone()),
        env: Some(env(plan)),
        ports: Some(vec![ContainerPort {
            name: Some(names::ADMIN_PORT_NAME.to_owned()),
            container_port: i32::from(names::ADMIN_PORT),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        // Native only: the kubelet starts the next containers once this passes.
        startup_probe: plan.native.then(|| probe(names::READY_PATH, 1, 300)),
        readiness_probe: Some(probe(names::READY_PATH, 5, 3)),
        liveness_probe: Some(probe(names::LIVE_PATH, 10, 3)),
        resources: Some(resources(plan)),
        security_context: Some(security_context()),
        restart_policy: plan.native.then(|| "Always".to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: volume_mounts(plan),
        ..Default::default()
    }
}

fn volume_mounts(plan: &Plan) -> Option<Vec<VolumeMount>> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    let mounts: Vec<VolumeMount> = plan
        .token_volume
        .iter()
        .map(|v| mount(v, TOKEN_MOUNT_PATH))
        .chain(
            plan.backend_ca
                .iter()
                .map(|ca| mount(&ca.volume, names::BACKEND_CA_DIR)),
        )
        .collect();
    (!mounts.is_empty()).then_some(mounts)
}

/// The volumes the pod gets for the proxy.
pub fn volumes(plan: &Plan) -> Vec<Volume> {
    plan.token_volume
        .as_deref()
        .map(token_volume)
        .into_iter()
        .chain(plan.backend_ca.as_deref().map(backend_ca_volume))
        .collect()
}

/// The Secret's or ConfigMap's `ca.crt`, for `SIDELB_BACKEND_TLS_CA`. The
/// kubelet updates it in place when the object changes; the proxy reads it
/// again then.
fn backend_ca_volume(ca: &BackendCa) -> Volume {
    let items = Some(vec![KeyToPath {
        key: names::BACKEND_CA_KEY.to_owned(),
        path: names::BACKEND_CA_KEY.to_owned(),
        mode: None,
    }]);
    let mut volume = Volume {
        name: ca.volume.clone(),
        ..Default::default()
    };
    match &ca.source {
        crate::policy::CaSource::Secret(name) => {
            volume.secret = Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                items,
                default_mode: Some(0o444),
                optional: None,
            });
        }
        crate::policy::CaSource::ConfigMap(name) => {
            volume.config_map = Some(ConfigMapVolumeSource {
                name: name.clone(),
                items,
                default_mode: Some(0o444),
                optional: None,
            });
        }
    }
    volume
}

fn env(plan: &Plan) -> Vec<EnvVar> {
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path.to_owned(),
            }),
            ..Default::default()
        }),
    };
    let mut vars = vec![
        field(names::POD_NAME_ENV, "metadata.name"),
        field(names::POD_NAMESPACE_ENV, "metadata.namespace"),
        field(names::NODE_NAME_ENV, "spec.nodeName"),
        value(settings::ADMIN_ADDR, &names::SIDECAR_ADMIN_ADDR.to_string()),
    ];
    vars.extend(plan.proxy_env.iter().map(|(name, v)| value(name, v)));
    vars
}

fn resources(plan: &Plan) -> ResourceRequirements {
    let r = &plan.resources;
    let map = |cpu: &Option<String>, memory: &Option<String>| {
        let map: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), Quantity(v.clone()?))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: map(&r.cpu_request, &r.memory_request),
        limits: map(&r.cpu_limit, &r.memory_limit),
        ..Default::default()
    }
}

fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(PROXY_UID),
        run_as_group: Some(PROXY_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The projected volume Kubernetes itself mounts for service-account tokens
/// (token, cluster CA, namespace), for pods that turned automounting off.
fn token_volume(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_owned(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".to_owned()),
                                field_path: "metadata.namespace".to_owned(),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}
