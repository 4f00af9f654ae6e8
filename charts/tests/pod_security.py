"""The Pod Security Standards, `baseline` and `restricted` profiles, as
documented for Kubernetes 1.33, applied to a whole pod spec.

`violations(spec)` returns every rule the pod breaks (empty: it would be
admitted to a namespace enforcing `restricted`). Container fields fall back to
the pod's securityContext where Kubernetes does.
"""

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}


def _containers(spec):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield c


def violations(spec):
    out = []
    pod_sc = spec.get("securityContext") or {}

    # Baseline.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"Host Namespaces: {field} must not be true")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: pod windowsOptions.hostProcess must not be true")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"HostPath Volumes: volume {v['name']}")
    for s in pod_sc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: {s.get('name')} is not safe")
    if (pod_sc.get("seLinuxOptions") or {}).get("type", "") not in SELINUX_TYPES:
        out.append("SELinux: pod type is not allowed")
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("Seccomp: pod profile must not be Unconfined")
    if (pod_sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        out.append("AppArmor: pod profile must be RuntimeDefault or Localhost")

    # Restricted, pod level.
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"Volume Types: volume {v['name']} is {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        out.append("Running as Non-root user: pod runAsUser must not be 0")

    for c in _containers(spec):
        name = c.get("name")
        sc = c.get("securityContext") or {}

        def effective(field):
            return sc[field] if field in sc else pod_sc.get(field)

        if sc.get("privileged"):
            out.append(f"{name}: Privileged: privileged must not be true")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{name}: HostProcess must not be true")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if not added <= BASELINE_CAPABILITIES:
            out.append(f"{name}: Capabilities (baseline): {sorted(added - BASELINE_CAPABILITIES)} added")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append(f"{name}: Host Ports: hostPort must be unset or 0")
        if (sc.get("seLinuxOptions") or {}).get("type", "") not in SELINUX_TYPES:
            out.append(f"{name}: SELinux: type is not allowed")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: /proc Mount Type must be Default")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{name}: AppArmor: profile must be RuntimeDefault or Localhost")

        # Restricted.
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: Privilege Escalation: allowPrivilegeEscalation must be false")
        if effective("runAsNonRoot") is not True:
            out.append(f"{name}: Running as Non-root: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: Running as Non-root user: runAsUser must not be 0")
        seccomp = effective("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: Seccomp: profile must be RuntimeDefault or Localhost")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{name}: Capabilities (restricted): must drop ALL")
        if not added <= {"NET_BIND_SERVICE"}:
            out.append(f"{name}: Capabilities (restricted): may add only NET_BIND_SERVICE")
    return out
