"""The values are the chart's public interface: a typo fails the install, and
every value is documented."""

import json
import os
import re

import helm_python as helm
import pytest
import yaml

from chart import CHART, check_values, proxy_settings, render

SCHEMA_PATH = CHART / "values.schema.json"
# proxy.settings excludes the settings with a value of their own, and the
# upstreams, which only make sense per workload.
DEDICATED = {"sidelb.io/balancer": "proxy.balancer", "sidelb.io/log-level": "proxy.logLevel",
             "sidelb.io/upstreams": None}


def defaults():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_the_documented_defaults():
    v = defaults()
    assert v["injector"]["replicas"] == 2
    assert v["proxy"]["nativeSidecar"] is True
    assert v["proxy"]["balancer"] == "p2c-ewma"
    assert v["proxy"]["logLevel"] == "info"
    assert v["webhook"]["failurePolicy"] == "Ignore"
    assert v["certManager"]["enabled"] is False
    assert v["rbac"] == {"create": True, "clusterWide": False, "subjects": []}
    for path in ("injector.image.repository", "injector.image.tag", "injector.image.pullPolicy",
                 "injector.resources", "proxy.image.repository", "proxy.image.tag", "proxy.resources",
                 "webhook.timeoutSeconds"):
        node = v
        for key in path.split("."):
            assert key in node, path
            node = node[key]


@pytest.mark.parametrize("values,complaint", [
    ({"injectr": {"replicas": 2}}, "injectr"),
    ({"injector": {"replica": 3}}, "replica"),
    ({"injector": {"replicas": "two"}}, "replicas"),
    ({"injector": {"image": {"tags": "1.0"}}}, "tags"),
    ({"proxy": {"balancer": "random"}}, "balancer"),
    ({"proxy": {"nativeSidecar": "yes"}}, "nativeSidecar"),
    ({"proxy": {"resources": {"limits": {"memory": "64MB"}}}}, "memory"),
    ({"proxy": {"resources": {"limit": {"memory": "64Mi"}}}}, "limit"),
    ({"proxy": {"settings": {"max-inflight": "10"}}}, "max-inflight"),
    ({"proxy": {"settings": {"balancer": "round-robin"}}}, "balancer"),
    ({"webhook": {"failurePolicy": "ignore"}}, "failurePolicy"),
    ({"webhook": {"timeoutSeconds": 60}}, "timeoutSeconds"),
    ({"certManager": {"enable": True}}, "enable"),
    ({"rbac": {"clusterWide": "yes"}}, "clusterWide"),
    ({"rbac": {"subjects": [{"kind": "ServiceAccount", "name": "frontend"}]}}, "namespace"),
])
def test_a_typo_or_wrong_type_fails_the_install(values, complaint):
    with pytest.raises(helm.HelmValuesError, match=complaint):
        check_values(values)
    # And rendering, as `helm install` does, stops on it too.
    with pytest.raises(helm.HelmValuesError):
        render(values)


def test_good_values_pass_the_schema():
    check_values({})
    check_values({"proxy": {"resources": {"limits": {"cpu": 1, "memory": "1.5Gi"}}},
                  "rbac": {"subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "b"}]},
                  "certManager": {"enabled": True, "issuerRef": {"name": "x"}}})


def expected_settings_schema():
    properties = {}
    for s in proxy_settings():
        if s["annotation"] in DEDICATED:
            continue
        name = s["annotation"].removeprefix("sidelb.io/")
        properties[name] = {
            "type": ["string", "integer"],
            "description": f"{s['help']}; {s['accepted']} (default `{s['default']}`; sets {s['injectorEnv']})",
        }
    return {
        "type": "object",
        "description": "defaults of other proxy settings for every injected pod, by pod annotation name "
                       "without `sidelb.io/` (generated from files/proxy-settings.json)",
        "additionalProperties": False,
        "properties": properties,
    }


def test_schema_knows_every_proxy_setting():
    """values.schema.json's proxy.settings lists exactly the settings in
    files/proxy-settings.json (itself checked against SETTINGS by
    `cargo test -p sidelb-tests --test e2e -- chart::contract`).
    SIDELB_UPDATE_CHART=1 rewrites it."""
    schema = json.loads(SCHEMA_PATH.read_text())
    expected = expected_settings_schema()
    if schema["definitions"]["proxySettings"] != expected:
        if os.environ.get("SIDELB_UPDATE_CHART"):
            schema["definitions"]["proxySettings"] = expected
            SCHEMA_PATH.write_text(json.dumps(schema, indent=2) + "\n")
        else:
            pytest.fail("values.schema.json's proxySettings is out of date with files/proxy-settings.json; "
                        "run `SIDELB_UPDATE_CHART=1 python3 -m pytest charts/tests -k schema_knows`")
    # Every setting accepted by the schema becomes the injector's variable.
    settings = {s["annotation"].removeprefix("sidelb.io/"): s for s in proxy_settings()}
    for name in expected["properties"]:
        env = render({"proxy": {"settings": {name: settings[name]["default"] or "x"}}}).injector_env
        assert settings[name]["injectorEnv"] in env, name


def test_dedicated_values_set_their_settings():
    by_annotation = {s["annotation"]: s for s in proxy_settings()}
    env = render({"proxy": {"balancer": "round-robin", "logLevel": "debug"}}).injector_env
    assert env[by_annotation["sidelb.io/balancer"]["injectorEnv"]] == "round-robin"
    assert env[by_annotation["sidelb.io/log-level"]["injectorEnv"]] == "debug"


def test_values_map_to_the_injectors_variables():
    env = render({"proxy": {"nativeSidecar": False, "image": {"repository": "r/p", "tag": "7"},
                            "resources": {"requests": {"cpu": "1", "memory": "2Mi"}, "limits": {"cpu": "3"}}},
                  "injector": {"logLevel": "warn", "logFormat": "json"}}).injector_env
    assert env["SIDELB_NATIVE_SIDECAR"] == "false"
    assert env["SIDELB_PROXY_IMAGE"] == "r/p:7"
    assert env["SIDELB_PROXY_CPU_REQUEST"] == "1"
    assert env["SIDELB_PROXY_MEMORY_REQUEST"] == "2Mi"
    assert env["SIDELB_PROXY_CPU_LIMIT"] == "3"
    assert env["SIDELB_PROXY_MEMORY_LIMIT"] == "64Mi"
    assert env["SIDELB_LOG"] == "warn"
    assert env["SIDELB_LOG_FORMAT"] == "json"


def leaves(node, prefix=""):
    """Value paths as the README's table names them: maps are descended, except
    free-form ones and resources, which are documented as a whole."""
    whole = {"injector.resources", "proxy.resources", "proxy.settings", "rbac.subjects", "certManager.issuerRef",
             "injector.podAnnotations", "injector.podLabels", "injector.nodeSelector", "injector.affinity"}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in whole:
            yield from leaves(value, path + ".")
        else:
            yield path


def test_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Za-z.]+)` \|", readme, re.M))
    values = set(leaves(defaults()))
    assert values - table == set(), "values missing from the README's table"
    assert table - values == set(), "README documents values that do not exist"


def test_values_yaml_comments_every_section():
    text = (CHART / "values.yaml").read_text()
    for section in ("injector:", "proxy:", "webhook:", "tls:", "certManager:", "rbac:"):
        before = text.split("\n" + section)[0].rstrip().splitlines()[-1]
        assert before.startswith("#"), f"{section} has no comment above it"
