"""Rendering the sidelb chart with Helm's own engine, and what the tests share.

Helm comes from the PyPI package helm-python-sdk (it bundles Helm v4's Go SDK);
see requirements.txt for the rest.
"""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sidelb"
NAMESPACE = "sidelb"
RELEASE = "sidelb"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.29", "1.33")


class Rendered:
    """The manifests of one render: parsed documents and NOTES.txt."""

    def __init__(self, files, namespace, release):
        self.files = files
        self.namespace = namespace
        self.release = release
        self.notes = ""
        self.docs = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append(doc)

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind):
        found = self.all(kind)
        assert len(found) == 1, f"{len(found)} {kind} rendered"
        return found[0]

    @property
    def deployment(self):
        return self.one("Deployment")

    @property
    def injector_container(self):
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return container

    @property
    def injector_env(self):
        """The injector container's environment as a dict (every value literal)."""
        env = {}
        for var in self.injector_container["env"]:
            assert "valueFrom" not in var, var
            assert var["name"] not in env, f"{var['name']} set twice"
            env[var["name"]] = var["value"]
        return env

    @property
    def webhook_configuration(self):
        return self.one("MutatingWebhookConfiguration")

    def tls_secret(self):
        """The generated Secret's files, decoded: {"ca.crt": bytes, ...}."""
        secret = self.one("Secret")
        return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def render(values=None, *, namespace=NAMESPACE, release=RELEASE):
    with helm.Chart.load(CHART) as chart:
        return Rendered(chart.render(values or {}, name=release, namespace=namespace), namespace, release)


def check_values(values):
    """Validates values against values.schema.json as `helm install` does; raises on a problem."""
    with helm.Chart.load(CHART) as chart:
        return chart.validate_schema(chart.merge_values(values))


def proxy_settings():
    """files/proxy-settings.json: the proxy settings a pod annotation can set (generated from SETTINGS)."""
    return json.loads((CHART / "files" / "proxy-settings.json").read_text())["settings"]


def target_dir():
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    return REPO / "target"


def injector_binary():
    """The real sidelb-injector: $SIDELB_INJECTOR_BIN, or built with cargo (a no-op when fresh)."""
    if os.environ.get("SIDELB_INJECTOR_BIN"):
        return Path(os.environ["SIDELB_INJECTOR_BIN"])
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    subprocess.run([cargo, "build", "-q", "-p", "sidelb-injector"], cwd=REPO, check=True)
    return target_dir() / "debug" / "sidelb-injector"
