"""The MutatingWebhookConfiguration: which pods reach the injector, and how."""

import itertools

import pytest

from chart import render

INJECT = "sidelb.io/inject"


def matches(selector, labels):
    """A Kubernetes LabelSelector, evaluated as the API server does."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def webhooks_called(configuration, namespace, namespace_labels, pod_labels):
    """Names of the webhooks the API server calls for a Pod CREATE."""
    ns_labels = {"kubernetes.io/metadata.name": namespace, **namespace_labels}
    called = []
    for hook in configuration["webhooks"]:
        pod_create = any(
            "CREATE" in rule["operations"] and "" in rule["apiGroups"] and "pods" in rule["resources"]
            for rule in hook["rules"]
        )
        if pod_create and matches(hook.get("namespaceSelector"), ns_labels) and matches(
            hook.get("objectSelector"), pod_labels
        ):
            called.append(hook["name"])
    return called


def test_without_grants_the_webhook_has_no_side_effects():
    for values in ({"rbac": {"clusterWide": True}}, {"rbac": {"create": False}}):
        for hook in render(values).webhook_configuration["webhooks"]:
            assert hook["sideEffects"] == "None", values


def test_policies():
    config = render().webhook_configuration
    assert len(config["webhooks"]) == 2
    for hook in config["webhooks"]:
        assert hook["failurePolicy"] == "Ignore"
        # The injector grants the pod's namespace the proxies' access, except on dry runs.
        assert hook["sideEffects"] == "NoneOnDryRun"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["timeoutSeconds"] == 5
        assert hook["rules"] == [{
            "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
            "resources": ["pods"], "scope": "Namespaced",
        }]
        assert hook["clientConfig"]["service"] == {
            "name": "sidelb-injector", "namespace": "sidelb", "path": "/mutate", "port": 443,
        }
    assert [h["name"] for h in config["webhooks"]] == ["namespace.inject.sidelb.io", "pod.inject.sidelb.io"]


def test_failure_policy_and_timeout_are_configurable():
    config = render({"webhook": {"failurePolicy": "Fail", "timeoutSeconds": 12}}).webhook_configuration
    assert {h["failurePolicy"] for h in config["webhooks"]} == {"Fail"}
    assert {h["timeoutSeconds"] for h in config["webhooks"]} == {12}


# (namespace, namespace's sidelb.io/inject label, pod's sidelb.io/inject label) -> webhooks called.
EXPECTED = {
    # An enabled namespace: every pod but those opting out, by the namespace webhook only.
    ("shop", "enabled", None): ["namespace.inject.sidelb.io"],
    ("shop", "enabled", "enabled"): ["namespace.inject.sidelb.io"],
    ("shop", "enabled", "disabled"): [],
    # Any other namespace: only pods labelled enabled, by the pod webhook only.
    ("shop", None, None): [],
    ("shop", None, "enabled"): ["pod.inject.sidelb.io"],
    ("shop", None, "disabled"): [],
    ("shop", "other", "enabled"): ["pod.inject.sidelb.io"],
    # A namespace labelled disabled opts all its pods out.
    ("shop", "disabled", "enabled"): [],
    ("shop", "disabled", None): [],
}


@pytest.mark.parametrize("namespace,ns_label,pod_label", sorted(EXPECTED, key=str))
def test_which_pods_reach_the_injector(namespace, ns_label, pod_label):
    config = render().webhook_configuration
    ns_labels = {INJECT: ns_label} if ns_label else {}
    pod_labels = {"app": "x", **({INJECT: pod_label} if pod_label else {})}
    assert webhooks_called(config, namespace, ns_labels, pod_labels) == EXPECTED[(namespace, ns_label, pod_label)]


def test_no_pod_is_sent_twice_and_excluded_namespaces_never():
    config = render({"webhook": {"excludeNamespaces": ["monitoring"]}}, namespace="sidelb-system").webhook_configuration
    labels = [None, "enabled", "disabled", "other"]
    for namespace, ns_label, pod_label in itertools.product(
        ["shop", "kube-system", "sidelb-system", "monitoring"], labels, labels
    ):
        ns_labels = {INJECT: ns_label} if ns_label else {}
        pod_labels = {INJECT: pod_label} if pod_label else {}
        called = webhooks_called(config, namespace, ns_labels, pod_labels)
        assert len(called) <= 1, (namespace, ns_label, pod_label, called)
        if namespace != "shop":
            assert called == [], (namespace, ns_label, pod_label)
        if pod_label == "disabled":
            assert called == []


def test_the_injectors_own_pods_are_never_sent():
    r = render()
    pod_labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    config = r.webhook_configuration
    # Not in its own namespace, and not even if installed into an enabled one.
    assert webhooks_called(config, "sidelb", {INJECT: "enabled"}, pod_labels) == []
    other = render(namespace="apps")
    assert webhooks_called(other.webhook_configuration, "shop", {INJECT: "enabled"}, pod_labels) == []


def test_with_cert_manager_the_ca_is_injected_not_rendered():
    r = render({"certManager": {"enabled": True}})
    config = r.webhook_configuration
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "sidelb/sidelb-injector"
    for hook in config["webhooks"]:
        assert "caBundle" not in hook["clientConfig"]
    assert r.all("Secret") == []
