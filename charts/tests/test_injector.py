"""The injector Deployment's configuration is the real injector's: the
`sidelb-injector` binary starts with the rendered environment and the rendered
certificate, serves that certificate under the name the API server dials
(verified against the rendered caBundle), and injects the proxy the values
describe."""

import base64
import copy
import json
import os
import queue
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import kubernetes_validate
import pytest

from chart import KUBE_VERSIONS, REPO, injector_binary, render
from pod_security import violations
from test_render import OVERRIDES

LISTENING = re.compile(r"sidelb-injector listening on https://127\.0\.0\.1:(\d+)")
REVIEW = json.loads((REPO / "injector" / "tests" / "fixtures" / "pod-create-bare.json").read_text())


@pytest.fixture(scope="session")
def binary():
    return injector_binary()


class Injector:
    """The real injector, started with a rendered chart's environment and certificate."""

    def __init__(self, binary, rendered, tmp: Path):
        self.rendered = rendered
        files = rendered.tls_secret()
        (tmp / "tls.crt").write_bytes(files["tls.crt"])
        (tmp / "tls.key").write_bytes(files["tls.key"])
        self.ca_pem = base64.b64decode(rendered.webhook_configuration["webhooks"][0]["clientConfig"]["caBundle"])
        service = rendered.webhook_configuration["webhooks"][0]["clientConfig"]["service"]
        self.server_name = f"{service['name']}.{service['namespace']}.svc"
        env = dict(rendered.injector_env)
        # Only where it listens and where the mounted Secret's files are differ from the pod.
        env["SIDELB_INJECTOR_ADDR"] = "127.0.0.1:0"
        env["SIDELB_TLS_CERT"] = str(tmp / "tls.crt")
        env["SIDELB_TLS_KEY"] = str(tmp / "tls.key")
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        # No API server here: the grant it makes with it is tested against the
        # real one (tests/tests/e2e/rbac.rs).
        env.pop("SIDELB_PROXY_ROLE_BINDING", None)
        self.proc = subprocess.Popen([str(binary)], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        lines = queue.Queue()

        def read():
            for line in self.proc.stderr:
                self.stderr.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        self.port = None
        while self.port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise AssertionError("sidelb-injector did not start:\n" + "".join(self.stderr))
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, method, path, body=None):
        """One HTTP/1.1 request over TLS, verified as the API server verifies the webhook."""
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        ctx.check_hostname = True
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=self.server_name) as tls:
                data = b"" if body is None else json.dumps(body).encode()
                head = (f"{method} {path} HTTP/1.1\r\nHost: {self.server_name}:443\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                        "Connection: close\r\n\r\n")
                tls.sendall(head.encode() + data)
                response = b""
                while chunk := tls.recv(65536):
                    response += chunk
        head, _, payload = response.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if b"transfer-encoding: chunked" in head.lower():
            payload = dechunk(payload)
        return status, payload

    def mutate(self, pod_labels=None, annotations=None):
        review = copy.deepcopy(REVIEW)
        meta = review["request"]["object"]["metadata"]
        meta["labels"].update(pod_labels or {})
        if annotations:
            meta["annotations"] = annotations
        status, payload = self.request("POST", "/mutate?timeout=5s", review)
        assert status == 200, payload
        answer = json.loads(payload)["response"]
        assert answer["uid"] == review["request"]["uid"]
        pod = review["request"]["object"]
        if "patch" in answer:
            assert answer["patchType"] == "JSONPatch"
            pod = apply_patch(pod, json.loads(base64.b64decode(answer["patch"])))
        return answer, pod


def dechunk(data):
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2:]
    return out


def apply_patch(doc, ops):
    """RFC 6902 add / replace / remove, enough for the injector's patches."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise AssertionError(f"unexpected patch op {op}")
    return doc


@pytest.fixture
def start(binary, tmp_path):
    started = []

    def start(values=None, **kw):
        injector = Injector(binary, render(values, **kw), tmp_path)
        started.append(injector)
        return injector

    yield start
    for injector in started:
        injector.stop()


def check_injected_pod(pod):
    """The patched pod is valid for every supported Kubernetes version, and the
    proxy passes Pod Security `restricted` on its own (the app is the user's)."""
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    proxy = proxy_of(pod)
    mounted = {m["name"] for m in proxy.get("volumeMounts") or []}
    alone = {"containers": [proxy], "volumes": [v for v in pod["spec"].get("volumes") or [] if v["name"] in mounted]}
    assert violations(alone) == []


def proxy_of(pod):
    spec = pod["spec"]
    found = [c for c in (spec.get("initContainers") or []) + spec["containers"] if c["name"] == "sidelb-proxy"]
    assert len(found) == 1, spec
    return found[0]


def test_starts_with_the_rendered_configuration_and_serves_the_rendered_certificate(start):
    injector = start()
    status, body = injector.request("GET", "/healthz")
    assert status == 200, body


def test_starts_with_every_value_overridden(start):
    # The overrides' injector port is 9443; the listen address is replaced above either way.
    injector = start(OVERRIDES, namespace="infra", release="lb")
    status, _ = injector.request("GET", "/healthz")
    assert status == 200
    assert injector.server_name == "lb-injector.infra.svc"


def test_injects_the_proxy_the_default_values_describe(start):
    injector = start()
    answer, pod = injector.mutate()
    assert answer["allowed"] is True
    proxy = proxy_of(pod)
    # A native sidecar: the first init container, restarted always.
    assert pod["spec"]["initContainers"][0] is proxy
    assert proxy["restartPolicy"] == "Always"
    assert proxy["image"] == "sidelb/proxy:0.1.0"
    assert proxy["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SIDELB_BALANCER"] == "p2c-ewma"
    assert env["SIDELB_LOG"] == "info"
    assert proxy["resources"] == {"requests": {"cpu": "10m", "memory": "20Mi"}, "limits": {"memory": "64Mi"}}
    check_injected_pod(pod)


def test_injects_the_proxy_the_overridden_values_describe(start):
    injector = start(OVERRIDES)
    answer, pod = injector.mutate()
    assert answer["allowed"] is True
    proxy = proxy_of(pod)
    # nativeSidecar: false -> a regular first container.
    assert pod["spec"]["containers"][0] is proxy
    assert "restartPolicy" not in proxy
    assert proxy["image"] == "registry.example/sidelb/proxy:1.2.3"
    assert proxy["imagePullPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SIDELB_BALANCER"] == "least-request"
    assert env["SIDELB_LOG"] == "sidelb_proxy=debug,warn"
    assert env["SIDELB_MAX_IN_FLIGHT"] == "5000"
    assert env["SIDELB_LOG_FORMAT"] == "json"
    assert env["SIDELB_EJECTION_FAILURES"] == "3"
    assert proxy["resources"] == OVERRIDES["proxy"]["resources"]
    check_injected_pod(pod)


def test_a_pods_annotation_beats_the_chart_default(start):
    injector = start({"proxy": {"balancer": "round-robin"}})
    _, pod = injector.mutate(annotations={"sidelb.io/balancer": "least-request"})
    env = {e["name"]: e.get("value") for e in proxy_of(pod)["env"]}
    assert env["SIDELB_BALANCER"] == "least-request"


def test_resources_removed_in_values_are_not_set(start):
    injector = start({"proxy": {"resources": {"limits": {"memory": None}}}})
    _, pod = injector.mutate()
    assert proxy_of(pod)["resources"] == {"requests": {"cpu": "10m", "memory": "20Mi"}}


def test_a_bad_setting_stops_the_injector_naming_it(binary, tmp_path):
    with pytest.raises(AssertionError, match="SIDELB_DEFAULT_MAX_IN_FLIGHT"):
        Injector(binary, render({"proxy": {"settings": {"max-in-flight": "lots"}}}), tmp_path)
