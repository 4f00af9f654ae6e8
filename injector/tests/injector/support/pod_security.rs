//! The Pod Security Standards' `restricted` profile (which includes
//! `baseline`), as documented for Kubernetes 1.33, applied to one container
//! and the volumes it mounts.
//!
//! The container is judged on its own security context, without help from the
//! pod's: the proxy must pass whatever the app's pod says.

use serde_json::Value;

const BASELINE_ADDABLE: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every rule `container` (in `pod`) breaks.
pub fn violations(container: &Value, pod: &Value) -> Vec<String> {
    let sc = &container["securityContext"];
    let mut out = Vec::new();
    let mut rule = |ok: bool, what: &str| {
        if !ok {
            out.push(what.to_owned());
        }
    };
    let unset_or = |v: &Value, allowed: &[&str]| {
        v.is_null() || v.as_str().is_some_and(|s| allowed.contains(&s))
    };

    // Baseline.
    rule(
        sc["windowsOptions"]["hostProcess"] != true,
        "HostProcess: windowsOptions.hostProcess must not be true",
    );
    rule(
        sc["privileged"] != true,
        "Privileged: privileged must not be true",
    );
    let added: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    rule(
        added.iter().all(|c| BASELINE_ADDABLE.contains(c)),
        "Capabilities (baseline): a capability outside the baseline list is added",
    );
    let host_ports = container["ports"].as_array().into_iter().flatten();
    rule(
        host_ports
            .clone()
            .all(|p| p["hostPort"].is_null() || p["hostPort"] == 0),
        "Host Ports: hostPort must be unset or 0",
    );
    rule(
        unset_or(
            &sc["appArmorProfile"]["type"],
            &["RuntimeDefault", "Localhost"],
        ),
        "AppArmor: profile must be RuntimeDefault or Localhost",
    );
    let selinux = &sc["seLinuxOptions"];
    rule(
        unset_or(&selinux["type"], SELINUX_TYPES),
        "SELinux: type is not allowed",
    );
    rule(
        unset_or(&selinux["user"], &[""]) && unset_or(&selinux["role"], &[""]),
        "SELinux: user and role must be unset",
    );
    rule(
        unset_or(&sc["procMount"], &["Default"]),
        "/proc Mount Type: procMount must be Default",
    );
    rule(
        sc["seccompProfile"]["type"] != "Unconfined",
        "Seccomp (baseline): must not be Unconfined",
    );

    // Restricted.
    rule(
        sc["allowPrivilegeEscalation"] == false,
        "Privilege Escalation: allowPrivilegeEscalation must be false",
    );
    rule(
        sc["runAsNonRoot"] == true,
        "Running as Non-root: runAsNonRoot must be true",
    );
    rule(
        sc["runAsUser"] != 0,
        "Running as Non-root user: runAsUser must not be 0",
    );
    rule(
        unset_or(
            &sc["seccompProfile"]["type"],
            &["RuntimeDefault", "Localhost"],
        ) && !sc["seccompProfile"]["type"].is_null(),
        "Seccomp (restricted): seccompProfile.type must be RuntimeDefault or Localhost",
    );
    let dropped: Vec<&str> = sc["capabilities"]["drop"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    rule(
        dropped.contains(&"ALL"),
        "Capabilities (restricted): must drop ALL",
    );
    rule(
        added.iter().all(|c| *c == "NET_BIND_SERVICE"),
        "Capabilities (restricted): may add only NET_BIND_SERVICE",
    );

    // Volume Types, for the volumes this container mounts.
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"]);
        let Some(volume) = volume else {
            out.push(format!(
                "volume {} is mounted but not in the pod",
                mount["name"]
            ));
            continue;
        };
        let kinds: Vec<&String> = volume
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| *k != "name")
            .collect();
        if !kinds
            .iter()
            .all(|k| RESTRICTED_VOLUMES.contains(&k.as_str()))
        {
            out.push(format!("Volume Types: {} is {kinds:?}", mount["name"]));
        }
    }
    out
}
