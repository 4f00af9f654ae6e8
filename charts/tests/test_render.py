"""The chart lints clean, renders with defaults and with overrides, and every
manifest is valid for the Kubernetes versions it supports."""

import helm_python as helm
import kubernetes_validate
import pytest

from chart import CHART, KUBE_VERSIONS, render
from pod_security import violations

# Values that change every knob, to render every branch of the templates.
OVERRIDES = {
    "fullnameOverride": "lb",
    "injector": {
        "replicas": 3,
        "image": {"repository": "registry.example/sidelb/injector", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "port": 9443,
        "logLevel": "debug",
        "logFormat": "json",
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"},
    },
    "proxy": {
        "image": {"repository": "registry.example/sidelb/proxy", "tag": "1.2.3", "pullPolicy": "Always"},
        "balancer": "least-request",
        "logLevel": "sidelb_proxy=debug,warn",
        "nativeSidecar": False,
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        "settings": {"max-in-flight": 5000, "log-format": "json", "ejection-failures": "3"},
    },
    "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10, "excludeNamespaces": ["monitoring"]},
    "tls": {"validityDays": 365},
    "rbac": {"subjects": [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:shop"},
        {"kind": "ServiceAccount", "name": "frontend", "namespace": "web"},
    ]},
}

CERT_MANAGER = {"certManager": {"enabled": True}}

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)

CASES = {
    "defaults": {},
    "overrides": OVERRIDES,
    "cert-manager": CERT_MANAGER,
    "cert-manager-issuer": {"certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}},
    "minimal": {"injector": {"replicas": 1, "podDisruptionBudget": {"enabled": False}}, "rbac": {"create": False}},
}


def test_lint_is_clean():
    for values in CASES.values():
        report = helm.lint(CHART, values, strict=True, namespace="sidelb", kube_version="v1.29.0")
        assert report["errors"] == [], report
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert problems == [], problems


def test_defaults_install_what_the_design_lists():
    r = render()
    kinds = sorted(d["kind"] for d in r.docs)
    assert kinds == sorted([
        "ServiceAccount", "Service", "Deployment", "PodDisruptionBudget", "Secret",
        "MutatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding",
        "ClusterRole", "ClusterRoleBinding",
    ])
    for doc in r.docs:
        meta = doc["metadata"]
        if doc["kind"] not in ("MutatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"):
            assert meta["namespace"] == "sidelb", doc["kind"]
        for label in RECOMMENDED_LABELS:
            assert label in meta["labels"], (doc["kind"], label)
        assert meta["labels"]["app.kubernetes.io/instance"] == "sidelb"
    assert r.deployment["metadata"]["name"] == "sidelb-injector"
    assert r.webhook_configuration["metadata"]["name"] == "sidelb"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid(case, kube_version):
    r = render(CASES[case])
    assert r.docs
    for doc in r.docs:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue  # not a Kubernetes API: checked in test_tls.py
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_injector_deployment():
    d = render().deployment
    spec = d["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    anti = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pod["spec"]["serviceAccountName"] == "sidelb-injector"
    assert pod["spec"]["automountServiceAccountToken"] is True  # it keeps the proxies' binding

    (c,) = pod["spec"]["containers"]
    assert c["image"] == "sidelb/injector:0.1.0"
    assert c["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    (mount,) = c["volumeMounts"]
    (volume,) = pod["spec"]["volumes"]
    assert volume["name"] == mount["name"] and mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "sidelb-injector-tls"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["SIDELB_TLS_CERT"] == mount["mountPath"] + "/tls.crt"
    assert env["SIDELB_TLS_KEY"] == mount["mountPath"] + "/tls.key"


def test_injector_pods_pass_pod_security_restricted():
    for values in CASES.values():
        spec = render(values).deployment["spec"]["template"]["spec"]
        assert violations(spec) == []


def test_pod_security_check_catches_what_it_should():
    # The checker above is only worth something if it fails on a bad pod.
    spec = render().deployment["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["containers"][0]["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    del spec["securityContext"]["seccompProfile"]
    del spec["containers"][0]["securityContext"]["seccompProfile"]
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    found = "\n".join(violations(spec))
    for rule in ("Privilege Escalation", "NET_ADMIN", "Seccomp", "Host Namespaces", "HostPath", "Volume Types"):
        assert rule in found, rule


def test_service_and_disruption_budget_select_the_injector():
    r = render()
    selector = r.deployment["spec"]["selector"]["matchLabels"]
    svc = r.one("Service")
    assert svc["spec"]["selector"] == selector
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "https")
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1


def test_overrides_reach_the_manifests():
    r = render(OVERRIDES)
    d = r.deployment
    assert d["metadata"]["name"] == "lb-injector"
    assert d["spec"]["replicas"] == 3
    pod = d["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert pod["spec"]["affinity"] == OVERRIDES["injector"]["affinity"]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["tolerations"] == OVERRIDES["injector"]["tolerations"]
    c = r.injector_container
    assert c["image"] == "registry.example/sidelb/injector:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    assert c["ports"][0]["containerPort"] == 9443
    assert c["resources"] == OVERRIDES["injector"]["resources"]
    assert r.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == "50%"
    assert r.one("Service")["metadata"]["name"] == "lb-injector"


def test_optional_objects_can_be_left_out():
    r = render(CASES["minimal"])
    kinds = {d["kind"] for d in r.docs}
    assert "PodDisruptionBudget" not in kinds
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    assert "SIDELB_PROXY_ROLE_BINDING" not in r.injector_env
    assert r.deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


RBAC = "rbac.authorization.k8s.io"


def rules_of(role):
    return {(tuple(x["apiGroups"]), tuple(x["resources"]), tuple(x.get("resourceNames", ()))): sorted(x["verbs"])
            for x in role["rules"]}


def named(r, kind, name):
    (doc,) = [d for d in r.all(kind) if d["metadata"]["name"] == name]
    return doc


def test_by_default_nothing_is_bound_cluster_wide():
    r = render()
    role = named(r, "ClusterRole", "sidelb-proxy")
    assert rules_of(role) == {
        (("",), ("services",), ()): ["get", "list", "watch"],
        (("discovery.k8s.io",), ("endpointslices",), ()): ["get", "list", "watch"],
        (("",), ("nodes",), ()): ["get"],
    }
    # The proxies' binding has no subject until the injector adds a namespace's group.
    binding = named(r, "ClusterRoleBinding", "sidelb-proxy")
    assert binding["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole", "name": "sidelb-proxy"}
    assert "subjects" not in binding
    for doc in r.all("ClusterRoleBinding") + r.all("RoleBinding"):
        for subject in doc.get("subjects", []):
            assert not subject["name"].startswith("system:serviceaccounts"), doc
            assert subject["kind"] == "ServiceAccount", doc
    # The injector may keep that one binding and bind that one role, nothing else.
    injector_role = named(r, "ClusterRole", "sidelb-injector")
    assert rules_of(injector_role) == {
        ((RBAC,), ("clusterrolebindings",), ("sidelb-proxy",)): ["get", "update"],
        ((RBAC,), ("clusterroles",), ("sidelb-proxy",)): ["bind"],
    }
    injector_binding = named(r, "ClusterRoleBinding", "sidelb-injector")
    assert injector_binding["roleRef"]["name"] == "sidelb-injector"
    assert injector_binding["subjects"] == [{"kind": "ServiceAccount", "name": "sidelb-injector",
                                             "namespace": "sidelb"}]
    # Its pod gets its token and the binding's name.
    assert r.deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert r.injector_env["SIDELB_PROXY_ROLE_BINDING"] == "sidelb-proxy"


def test_cluster_wide_binds_every_service_account_and_the_injector_nothing():
    r = render({"rbac": {"clusterWide": True}})
    assert [d["metadata"]["name"] for d in r.all("ClusterRole")] == ["sidelb-proxy"]
    binding = r.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "sidelb-proxy"
    assert binding["subjects"] == [{"kind": "Group", "apiGroup": RBAC, "name": "system:serviceaccounts"}]
    assert "SIDELB_PROXY_ROLE_BINDING" not in r.injector_env
    assert r.deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_more_subjects_get_a_binding_of_their_own():
    r = render(OVERRIDES)
    assert "subjects" not in named(r, "ClusterRoleBinding", "lb-proxy")
    extra = named(r, "ClusterRoleBinding", "lb-proxy-subjects")
    assert extra["roleRef"]["name"] == "lb-proxy"
    assert extra["subjects"] == OVERRIDES["rbac"]["subjects"]


def test_notes_say_what_to_do_next():
    notes = render().notes
    for step in ("kubectl label namespace", "sidelb.io/inject=enabled", "sidelb.io/upstreams",
                 "localhost:15001", "/endpoints", "rollout status deployment/sidelb-injector",
                 "failurePolicy is Ignore"):
        assert step in notes, step
    assert "failurePolicy is Ignore" not in render({"webhook": {"failurePolicy": "Fail"}}).notes
