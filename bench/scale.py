#!/usr/bin/env python3
"""What a sidelb proxy costs at scale: its memory with many endpoints, and
the load that many proxies watching one Service put on the real API server.

Two parts (`--part memory`, `--part apiserver`, both by default), each
bounded in time; results go to their section of bench/RESULTS.md (between
the `scale` markers) and to bench/out/scale.json.

memory: `target/release/sidelb-proxy` with file discovery, its RSS idle,
with one service of 1,000 endpoints (with the default subset of 64 and with
`SIDELB_SUBSET_SIZE=0`, all of them) and with 50 services of 100 endpoints.
Every endpoint accepts HTTP/2: one `bench-backend` process listens on 1,000
ports.

apiserver: a control plane of its own (cluster/cluster.sh, in
target/bench-scale/cluster, wiped before and stopped after), one Service of
1,000 endpoints whose EndpointSlices (100 endpoints each) this script writes
itself, as the EndpointSlice controller would, and `--proxies` real proxies
(`SIDELB_DISCOVERY=kubernetes`, a service-account token allowed what the
chart grants) with the Service as an upstream, so each watches it. The
Service then rolls: every endpoint replaced, a few at a time, slice by slice.
Measured: kube-apiserver's CPU seconds (utime+stime of /proc/PID/stat) and
RSS, its `apiserver_watch_events_*` metrics (events and bytes sent to
watchers per slice change), its long-running requests (watches per proxy),
and the proxies' RSS and CPU; the same roll with no proxy watching first,
so the cost of the writes themselves is told apart from the fan-out.

All traffic stays on 127.0.0.0/8 and in a network namespace this script
makes for the endpoints (EndpointSlices may not hold loopback addresses);
every process and the namespace are removed at the end.
"""

import argparse
import base64
import datetime
import http.client
import json
import os
import pathlib
import re
import shutil
import ssl
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from targets import BIN, OUT, ROOT, admin_get, cpu_model, cpu_seconds, free_port, status_kib  # noqa: E402

PROXY = BIN / "sidelb-proxy"
BACKEND = BIN / "bench-backend"
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
WORK = ROOT / "target" / "bench-scale"
CLUSTER = WORK / "cluster"
NAMESPACE = "scale"
SERVICE = "wide"
MANAGER = "bench.sidelb.io"
TARGET_PORT = 7000
PER_SLICE = 100
# The endpoints' network (a /16) and the link to it (a /30).
ENDPOINT_NET = "10.253"
LINK_NET = "10.252.255"


def mib(kib):
    return round(kib / 1024, 1)


def rss_kib(pid):
    return status_kib([pid], "VmRSS")


class ManyBackend:
    """One bench-backend listening on every address of `addrs` (IP:PORT, port 0 = any)."""

    def __init__(self, addrs, net=None):
        argv = [str(BACKEND), "--name", "scale"]
        for a in addrs:
            argv += ["--addr", a]
        self.process = subprocess.Popen(net.command(argv) if net else argv, stdout=subprocess.PIPE, text=True)
        self.addrs = []
        for _ in addrs:
            line = self.process.stdout.readline().strip()
            if not line.startswith("listening "):
                self.stop()
                raise RuntimeError(f"bench-backend did not start: {line!r}")
            self.addrs.append(line.split()[1])

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def wait_for(what, check, timeout, interval=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout}s")


def endpoint_states(admin):
    """(connected, in use, listed) endpoints over all services in /endpoints."""
    try:
        view = json.loads(admin_get(admin, "/endpoints"))
    except ValueError:
        return 0, 0, 0
    connected = used = listed = 0
    for service in view["services"]:
        for ep in service["endpoints"]:
            listed += 1
            if ep["state"] != "outside-subset":
                used += 1
            if ep["state"] == "ready":
                connected += 1
    return connected, used, listed


# ---------------------------------------------------------------- memory


def write_file_services(path, services):
    lines = ["services:"]
    for name, addrs in services.items():
        listed = ", ".join(f'"{a}"' for a in addrs)
        lines += [f"  - name: {name}", "    namespace: default", "    port: 50051", f"    endpoints: [{listed}]"]
    path.write_text("\n".join(lines) + "\n")


def proxy_rss(work, label, services, subset=None):
    """Starts a proxy on `services`, waits until every endpoint it uses is
    connected, lets it settle, and returns its figures."""
    endpoints = work / f"{label}.yaml"
    write_file_services(endpoints, services)
    admin = free_port()
    env = dict(os.environ, SIDELB_DISCOVERY=f"file:{endpoints}", SIDELB_OUTBOUND_ADDR=f"127.0.0.1:{free_port()}",
               SIDELB_ADMIN_ADDR=f"127.0.0.1:{admin}", SIDELB_LOG="warn")
    if subset is not None:
        env["SIDELB_SUBSET_SIZE"] = str(subset)
    process = subprocess.Popen([str(PROXY)], env=env, stderr=open(work / f"{label}.log", "w"))
    try:
        total = sum(len(a) for a in services.values())

        def connected():
            ready, used, listed = endpoint_states(admin)
            return listed == total and used > 0 and ready >= used and (ready, used)

        if services:
            ready, used = wait_for(f"{label}: every endpoint connected", connected, 120)
        else:
            wait_for(f"{label}: ready", lambda: admin_get(admin, "/ready").startswith("ready"), 30)
            ready = used = 0
        time.sleep(3)
        return {"rss_mib": mib(rss_kib(process.pid)), "connections": ready, "endpoints": total, "in_use": used,
                "fds": len(os.listdir(f"/proc/{process.pid}/fd"))}
    finally:
        process.terminate()
        process.wait(timeout=10)


def memory(work):
    backend = ManyBackend(["127.0.0.1:0"] * 1000)
    try:
        addrs = backend.addrs
        rows = {}
        rows["idle"] = proxy_rss(work, "idle", {})
        rows["1x1000-subset64"] = proxy_rss(work, "1x1000-subset64", {"wide": addrs})
        rows["1x1000-all"] = proxy_rss(work, "1x1000-all", {"wide": addrs}, subset=0)
        fifty = {f"svc{k}": [addrs[(k * 100 + j) % 1000] for j in range(100)] for k in range(50)}
        rows["50x100-subset64"] = proxy_rss(work, "50x100-all", fifty)
        for key, row in rows.items():
            print(f"memory {key}: {row}", flush=True)
        return rows
    finally:
        backend.stop()


# ---------------------------------------------------------------- API server


def cluster_sh(*args):
    env = dict(os.environ, SIDELB_CLUSTER_DIR=str(CLUSTER))
    out = subprocess.run([str(ROOT / "cluster" / "cluster.sh"), *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cluster/cluster.sh {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


class Api:
    """kube-apiserver as the admin (the cluster's client certificate)."""

    def __init__(self):
        env = dict(line.split("=", 1) for line in (CLUSTER / "env").read_text().splitlines() if "=" in line)
        self.server = env["SIDELB_CLUSTER_SERVER"]
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        pki = CLUSTER / "pki"
        self.ca = (pki / "ca.crt").read_bytes()
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.conn = None

    def call(self, method, path, body=None, content_type="application/json"):
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
            try:
                data = None if body is None else json.dumps(body).encode()
                headers = {"Content-Type": content_type} if data is not None else {}
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                text = response.read().decode()
                if response.status >= 300:
                    raise RuntimeError(f"{method} {path}: {response.status} {text[:300]}")
                return text
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        return ""

    def apply(self, path, obj):
        """Server-side apply of `obj` at `path` (its collection path plus name)."""
        return self.call("PATCH", f"{path}?fieldManager={MANAGER}&force=true", obj,
                         content_type="application/apply-patch+yaml")

    def metrics(self):
        return self.call("GET", "/metrics")


def samples(text, name, **labels):
    """Sum of the samples of metric `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def address(generation, i):
    return f"{ENDPOINT_NET}.{generation * 16 + i // 250}.{i % 250 + 1}"


class EndpointNet:
    """A network namespace of its own where the endpoints live: an
    EndpointSlice may not hold loopback addresses, so the endpoints get
    addresses of ENDPOINT_NET.0.0/16, all local to that namespace (a `local`
    route), reached from here over a veth pair. Deleting the namespace
    removes the pair and its route."""

    def __init__(self):
        tag = os.getpid() % 100000
        self.name, host, inner = f"sidelb-scale-{tag}", f"slsc{tag}h", f"slsc{tag}n"
        self.created = False
        steps = [["ip", "netns", "add", self.name],
                 ["ip", "link", "add", host, "type", "veth", "peer", "name", inner, "netns", self.name],
                 ["ip", "addr", "add", f"{LINK_NET}.1/30", "dev", host], ["ip", "link", "set", host, "up"],
                 ["ip", "-n", self.name, "addr", "add", f"{LINK_NET}.2/30", "dev", inner],
                 ["ip", "-n", self.name, "link", "set", inner, "up"], ["ip", "-n", self.name, "link", "set", "lo", "up"],
                 ["ip", "-n", self.name, "route", "add", "local", f"{ENDPOINT_NET}.0.0/16", "dev", "lo"],
                 ["ip", "route", "add", f"{ENDPOINT_NET}.0.0/16", "via", f"{LINK_NET}.2", "dev", host]]
        for step in steps:
            out = subprocess.run(step, capture_output=True, text=True)
            if out.returncode != 0:
                self.close()
                raise RuntimeError(f"{' '.join(step)}: {out.stderr.strip()} (root and iproute2 are needed)")
            self.created = True

    def command(self, argv):
        return ["ip", "netns", "exec", self.name] + argv

    def close(self):
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False


def slice_object(k, generations):
    """EndpointSlice `wide-k`: endpoints k*100..k*100+99, endpoint i from
    generation `generations[i]`, shaped as the controller writes them."""
    endpoints = []
    for i in range(k * PER_SLICE, (k + 1) * PER_SLICE):
        g = generations[i]
        pod = f"{SERVICE}-g{g}-{i:04d}"
        endpoints.append({
            "addresses": [address(g, i)],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": f"node-{i % 40:02d}",
            "zone": f"zone-{i % 3}",
            "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": pod,
                          "uid": f"{g:08x}-0000-4000-8000-{i:012x}"},
        })
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{SERVICE}-{k}", "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": SERVICE,
                                "endpointslice.kubernetes.io/managed-by": MANAGER}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": TARGET_PORT, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def slice_path(k):
    return f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices/{SERVICE}-{k}"


def set_up(api, generations, endpoints):
    api.apply(f"/api/v1/namespaces/{NAMESPACE}", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": NAMESPACE}})
    wait_for("the namespace's default ServiceAccount", lambda: try_get(
        api, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), 90)
    api.apply(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/proxy",
              {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "proxy", "namespace": NAMESPACE}})
    # What the chart grants the proxies of an injected namespace.
    api.apply("/apis/rbac.authorization.k8s.io/v1/clusterroles/sidelb-proxy", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "sidelb-proxy"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                   "verbs": ["get", "list", "watch"]},
                  {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]})
    api.apply("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/sidelb-proxy", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "sidelb-proxy"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sidelb-proxy"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                      "name": f"system:serviceaccounts:{NAMESPACE}"}]})
    # No selector: its slices are this script's, as a controller's would be.
    api.apply(f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "grpc", "port": 50051, "targetPort": TARGET_PORT, "protocol": "TCP"}]}})
    for k in range(endpoints // PER_SLICE):
        api.apply(slice_path(k), slice_object(k, generations))


def try_get(api, path):
    try:
        return api.call("GET", path)
    except RuntimeError:
        return None


def token_kubeconfig(api, path):
    issued = json.loads(api.call("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/proxy/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}}))
    token = issued["status"]["token"]
    ca = base64.b64encode(api.ca).decode()
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: sidelb
  cluster:
    server: {api.server}
    certificate-authority-data: {ca}
users:
- name: proxy
  user:
    token: {token}
contexts:
- name: sidelb
  context:
    cluster: sidelb
    user: proxy
    namespace: {NAMESPACE}
current-context: sidelb
""")
    path.chmod(0o600)


class Proxies:
    def __init__(self, count, kubeconfig, work):
        self.procs, self.admins = [], []
        logs = work / "proxy-logs"
        logs.mkdir(exist_ok=True)
        for n in range(count):
            admin = free_port()
            env = dict(os.environ, SIDELB_DISCOVERY="kubernetes", KUBECONFIG=str(kubeconfig),
                       POD_NAMESPACE=NAMESPACE, POD_NAME=f"client-{n:04d}",
                       SIDELB_UPSTREAMS=f"{SERVICE}.{NAMESPACE}:grpc=127.0.0.1:{free_port()}",
                       SIDELB_OUTBOUND_ADDR=f"127.0.0.1:{free_port()}", SIDELB_ADMIN_ADDR=f"127.0.0.1:{admin}",
                       SIDELB_LOG="warn")
            self.procs.append(subprocess.Popen([str(PROXY)], env=env, stderr=open(logs / f"{n}.log", "w")))
            self.admins.append(admin)
            if n % 20 == 19:
                self.wait_ready(self.admins[n - 19:n + 1])

    def wait_ready(self, admins):
        for admin in admins:
            wait_for(f"proxy on admin port {admin} ready",
                     lambda: admin_get(admin, "/ready").startswith("ready"), 120, interval=0.2)

    def pids(self):
        return [p.pid for p in self.procs]

    def rss_mib(self):
        return mib(status_kib(self.pids(), "VmRSS"))

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def addresses_seen(admin):
    try:
        view = json.loads(admin_get(admin, "/endpoints"))
    except ValueError:
        return set()
    return {ep["address"] for s in view["services"] for ep in s["endpoints"] if ep["state"] != "draining"}


def roll(api, generations, to, step, pause, apiserver_pid, watch_pids=()):
    """Every endpoint replaced by one of generation `to`, `step` at a time,
    slice by slice; returns the figures of the roll."""
    before = api.metrics()
    cpu0, watch_cpu0 = cpu_seconds([apiserver_pid]), cpu_seconds(list(watch_pids))
    peak = rss_kib(apiserver_pid)
    started = time.time()
    changes = 0
    for k in range(len(generations) // PER_SLICE):
        for first in range(k * PER_SLICE, (k + 1) * PER_SLICE, step):
            for i in range(first, first + step):
                generations[i] = to
            api.apply(slice_path(k), slice_object(k, generations))
            changes += 1
            peak = max(peak, rss_kib(apiserver_pid))
            time.sleep(pause)
    return before, changes, started, cpu0, watch_cpu0, peak


def roll_figures(api, state, apiserver_pid, watch_pids=()):
    """The roll's figures, 3 s after its last write (so the watchers have
    taken its last events, and nothing else is counted)."""
    before, changes, started, cpu0, watch_cpu0, peak = state
    time.sleep(3)
    apiserver_cpu = cpu_seconds([apiserver_pid]) - cpu0
    watch_cpu = cpu_seconds(list(watch_pids)) - watch_cpu0
    after = api.metrics()
    resource = {"resource": "endpointslices"}
    events = samples(after, "apiserver_watch_events_total", **resource) - samples(
        before, "apiserver_watch_events_total", **resource)
    sizes = samples(after, "apiserver_watch_events_sizes_sum", **resource) - samples(
        before, "apiserver_watch_events_sizes_sum", **resource)
    return {
        "changes": changes,
        "seconds": round(time.time() - started - 3, 1),
        "apiserver_cpu_s": round(apiserver_cpu, 2),
        "apiserver_peak_rss_mib": mib(max(peak, rss_kib(apiserver_pid))),
        "watch_events": int(events),
        "watch_bytes": int(sizes),
        "proxies_cpu_s": round(watch_cpu, 2) if watch_pids else None,
    }


def watches(api):
    text = api.metrics()
    return (int(samples(text, "apiserver_longrunning_requests", resource="endpointslices", verb="WATCH")),
            int(samples(text, "apiserver_longrunning_requests", resource="services", verb="WATCH")))


def apiserver(work, args):
    if CLUSTER.exists():
        cluster_sh("wipe")
    cluster_sh("up")
    proxies = backend = net = None
    try:
        api = Api()
        pid = int((CLUSTER / "run" / "kube-apiserver.pid").read_text())
        endpoints = args.endpoints
        generations = [0] * endpoints
        net = EndpointNet()
        backend = ManyBackend([f"{address(g, i)}:{TARGET_PORT}" for g in (0, 1) for i in range(endpoints)], net)
        set_up(api, generations, endpoints)
        kubeconfig = work / "proxy.kubeconfig"
        token_kubeconfig(api, kubeconfig)
        time.sleep(2)
        figures = {"endpoints": endpoints, "slices": endpoints // PER_SLICE, "proxies": args.proxies,
                   "step": args.step, "apiserver_rss_mib_before": mib(rss_kib(pid))}

        figures["watches_before"] = watches(api)
        quiet = roll(api, generations, 1, args.step, args.pause, pid)
        figures["roll_unwatched"] = roll_figures(api, quiet, pid)
        print(f"roll with no proxy: {figures['roll_unwatched']}", flush=True)

        cpu0 = cpu_seconds([pid])
        started = time.time()
        proxies = Proxies(args.proxies, kubeconfig, work)
        figures["proxies_start_s"] = round(time.time() - started, 1)
        figures["apiserver_cpu_s_proxies_start"] = round(cpu_seconds([pid]) - cpu0, 2)
        time.sleep(5)
        current = {f"{address(1, i)}:{TARGET_PORT}" for i in range(endpoints)}
        wait_for("every proxy sees the 1,000 endpoints", lambda: all(
            addresses_seen(a) == current for a in proxies.admins[:: max(1, args.proxies // 10)]), 120)
        figures["watches_watched"] = watches(api)
        figures["apiserver_rss_mib_watched"] = mib(rss_kib(pid))
        figures["proxies_rss_mib"] = proxies.rss_mib()
        idle0 = cpu_seconds(proxies.pids()), cpu_seconds([pid])
        time.sleep(10)
        figures["proxies_idle_cpu_s_per_10s"] = round(cpu_seconds(proxies.pids()) - idle0[0], 2)
        figures["apiserver_idle_cpu_s_per_10s"] = round(cpu_seconds([pid]) - idle0[1], 2)

        final = {f"{address(0, i)}:{TARGET_PORT}" for i in range(endpoints)}
        watched = roll(api, generations, 0, args.step, args.pause, pid, proxies.pids())

        figures["roll_watched"] = roll_figures(api, watched, pid, proxies.pids())
        missing = [a for a in proxies.admins if addresses_seen(a) != final]
        if missing:
            wait_for("every proxy sees the whole roll",
                     lambda: all(addresses_seen(a) == final for a in missing), 120)
        figures["proxies_saw_roll"] = sum(addresses_seen(a) == final for a in proxies.admins)
        figures["proxies_rss_mib_after"] = proxies.rss_mib()
        print(f"roll watched by {args.proxies}: {figures['roll_watched']}", flush=True)
        return figures
    finally:
        if proxies:
            proxies.stop()
        if backend:
            backend.stop()
        if net:
            net.close()
        cluster_sh("down")


# ---------------------------------------------------------------- report


def model(api):
    """The extrapolation to 10,000 pods × 5 services, from the roll measured."""
    watched, quiet, n = api["roll_watched"], api["roll_unwatched"], api["proxies"]
    changes = watched["changes"]
    bytes_per_event = watched["watch_bytes"] / max(1, watched["watch_events"])
    cpu_per_event = (watched["apiserver_cpu_s"] - quiet["apiserver_cpu_s"]) / max(1, changes * n)
    cpu_per_write = quiet["apiserver_cpu_s"] / max(1, changes)
    rss_per_watch_kib = (api["apiserver_rss_mib_watched"] - api["apiserver_rss_mib_before"]) * 1024 / n
    proxy_cpu_per_event = watched["proxies_cpu_s"] / max(1, changes * n)
    return {"bytes_per_event": bytes_per_event, "cpu_per_event_s": cpu_per_event, "cpu_per_write_s": cpu_per_write,
            "rss_per_watcher_kib": rss_per_watch_kib, "proxy_cpu_per_event_s": proxy_cpu_per_event}


def section(mem, api, args, took):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [BEGIN, "## Scale: memory per proxy, API-server load of many proxies", "",
           f"Written by `bench/scale.py` (`make bench-scale`) on {now}, one run on a shared machine "
           f"({os.cpu_count()} cores: {cpu_model()}), {took:.0f} s. `target/release/sidelb-proxy`, a plain release build.",
           ""]
    if mem:
        out += ["### Proxy memory (file discovery, every endpoint accepting HTTP/2)", "",
                "| proxy serving | endpoints in use | connections | RSS MiB | target |", "|---|---|---|---|---|"]
        labels = {"idle": ("nothing (idle)", "< 8"), "1x1000-subset64": ("1 service × 1,000 endpoints, subset 64 (default)", "< 12"),
                  "1x1000-all": ("1 service × 1,000 endpoints, `SIDELB_SUBSET_SIZE=0` (all)", "< 12"),
                  "50x100-subset64": ("50 services × 100 endpoints, subset 64 (default)", "< 20")}
        for key, (label, target) in labels.items():
            row = mem[key]
            out.append(f"| {label} | {row['in_use']} | {row['connections']} | {row['rss_mib']} | {target} |")
        out += ["", "RSS is `VmRSS` 3 s after every endpoint in use is connected (`/endpoints` says `ready`); "
                "one `bench-backend` listens on 1,000 ports of 127.0.0.1 (the 50 services share them, 100 each). "
                "Before subsetting (issue #19's figures): 7.4 MiB idle, 25 MiB with 1,000 endpoints, all connected. "
                "Each connection costs about 19 KiB: about 13 KiB are the HTTP/2 client's own buffers and state "
                "(measured with the same client alone: 16 KiB write and 8 KiB read buffers, a 4 KiB header "
                "decoder buffer, partly touched), the rest the endpoint's statistics, driver task and copies "
                "in discovery and the pool.", ""]
    if api:
        m = model(api)
        w, q = api["roll_watched"], api["roll_unwatched"]
        (ws0, wv0), (ws1, wv1) = api["watches_before"], api["watches_watched"]
        n = api["proxies"]
        out += [f"### API server: {n} proxies watching one Service of {api['endpoints']:,} endpoints while it rolls", "",
                "| figure | no proxy watching | " + f"{n} proxies watching |", "|---|---|---|",
                f"| slice changes in the roll (each a server-side apply of one slice of {PER_SLICE}) | {q['changes']} | {w['changes']} |",
                f"| roll length s | {q['seconds']} | {w['seconds']} |",
                f"| kube-apiserver CPU s during the roll | {q['apiserver_cpu_s']} | {w['apiserver_cpu_s']} |",
                f"| kube-apiserver CPU ms per slice change | {q['apiserver_cpu_s'] / q['changes'] * 1000:.1f} | {w['apiserver_cpu_s'] / w['changes'] * 1000:.1f} |",
                f"| kube-apiserver peak RSS MiB during the roll | {q['apiserver_peak_rss_mib']} | {w['apiserver_peak_rss_mib']} |",
                f"| EndpointSlice watch events sent | {q['watch_events']} | {w['watch_events']} |",
                f"| bytes sent to watchers per slice change | {q['watch_bytes'] / max(1, q['changes']):,.0f} | {w['watch_bytes'] / max(1, w['changes']):,.0f} |",
                f"| bytes per watch event (one slice of {PER_SLICE}, JSON) | — | {m['bytes_per_event']:,.0f} |",
                f"| proxies' CPU s during the roll (all {n}) | — | {w['proxies_cpu_s']} |",
                "",
                f"- Watches (`apiserver_longrunning_requests`, WATCH): on EndpointSlices {ws0} before the proxies "
                f"(the controllers'), {ws1} with them; on Services {wv0} and {wv1}: "
                f"{(ws1 - ws0) / n:.2f} and {(wv1 - wv0) / n:.2f} per proxy.",
                f"- Watch events per slice change: {q['watch_events'] / max(1, q['changes']):.1f} with no proxy, "
                f"{w['watch_events'] / max(1, w['changes']):.1f} with {n}: one per watcher, each the whole slice.",
                f"- kube-apiserver RSS: {api['apiserver_rss_mib_before']} MiB before the proxies, "
                f"{api['apiserver_rss_mib_watched']} MiB with {n} watching ({m['rss_per_watcher_kib']:.0f} KiB per proxy); "
                f"starting the {n} proxies (each a list and two watches) took {api['apiserver_cpu_s_proxies_start']} CPU s of it.",
                f"- Proxies: {api['proxies_rss_mib']} MiB RSS in all ({api['proxies_rss_mib'] / n:.1f} MiB each, subset 64, "
                f"64 connections each) before the roll, {api['proxies_rss_mib_after']} MiB after; idle they took "
                f"{api['proxies_idle_cpu_s_per_10s']} CPU s per 10 s in all, kube-apiserver {api['apiserver_idle_cpu_s_per_10s']}.",
                f"- {api['proxies_saw_roll']} of {n} proxies ended with exactly the {api['endpoints']:,} new endpoints.",
                f"- Per watcher and slice change: {m['cpu_per_event_s'] * 1e6:.0f} µs of kube-apiserver CPU "
                f"(the watched roll's CPU less the unwatched one's, over {w['changes']} changes × {n} watchers), "
                f"{m['proxy_cpu_per_event_s'] * 1e6:.0f} µs of proxy CPU; the write itself "
                f"{m['cpu_per_write_s'] * 1000:.1f} ms.",
                "",
                "How it was run: a control plane of its own (`cluster/cluster.sh`); Service `wide` without a selector and "
                f"{api['slices']} EndpointSlices of {PER_SLICE} endpoints (`managed-by: {MANAGER}`, each endpoint with "
                "its conditions, node, zone and a Pod reference, as the controller writes them), served by one `bench-backend` "
                f"listening on every address, in a network namespace of its own ({ENDPOINT_NET}.0.0/16, over a veth pair); "
                f"{n} `sidelb-proxy` processes with `SIDELB_DISCOVERY=kubernetes`, the Service as an upstream "
                "(so each watches it from the start), a service-account token and the chart's grant. "
                f"The roll replaces {api['step']} endpoints per write, slice after slice, "
                f"{args.pause * 1000:.0f} ms apart; first with no proxy, then with all of them watching; "
                "the watched roll ends when every proxy has the new endpoints.", ""]
        out += model_text(api, m)
    out.append(END)
    return "\n".join(out)


def model_text(api, m):
    """The extrapolation, written out with its assumptions."""
    pods, services = 10_000, 5
    per_service = pods // services
    slices = per_service // PER_SLICE
    writes_per_pod = 3  # a pod replaced: the new one added, made ready; the old one removed
    watchers = pods  # every pod's proxy uses all five services
    roll_events = per_service * writes_per_pod * watchers
    roll_bytes = roll_events * m["bytes_per_event"]
    roll_cpu = roll_events * m["cpu_per_event_s"] + per_service * writes_per_pod * m["cpu_per_write_s"]
    # Today a proxy recomputes the whole Service on each event: its cost grows with the Service's size.
    proxy_cpu = per_service * writes_per_pod * m["proxy_cpu_per_event_s"] * per_service / api["endpoints"]
    watches = pods * services * 2
    rss = pods * services * m["rss_per_watcher_kib"] / 1024 / 1024
    return [
        f"### Model: {pods:,} pods × {services} services, direct watches", "",
        f"Assumptions: {pods:,} pods, each with a proxy using all {services} Services; each Service has "
        f"{per_service:,} pods in {slices} slices of {PER_SLICE}; a rolling update replaces every pod of one Service, "
        f"{writes_per_pod} slice writes per pod (new pod added, new pod ready, old pod removed), each sent whole to every "
        "watcher of that Service; cost per event and per watcher as measured above (JSON, no compression), "
        "per watch as measured (the API server's memory per watch does not depend on the slices' size).", "",
        "| figure | value |", "|---|---|",
        f"| watches on the API server | {watches:,} ({services} Services × 2 kinds × {pods:,} proxies) |",
        f"| kube-apiserver memory for the watchers | about {rss:.1f} GiB |",
        f"| watch events of one Service's roll | {roll_events:,} ({per_service:,} pods × {writes_per_pod} × {watchers:,}) |",
        f"| bytes sent in one Service's roll | about {roll_bytes / 1e9:,.0f} GB ({roll_bytes / watchers / 1e6:,.0f} MB per proxy) |",
        f"| kube-apiserver CPU for one Service's roll | about {roll_cpu / 3600:,.1f} CPU hours |",
        f"| each proxy's CPU for one Service's roll | about {proxy_cpu:,.0f} s ({proxy_cpu * pods / 3600:,.0f} CPU hours "
        "over the cluster; per event as measured, scaled by the Service's size) |",
        "",
        "Fan-out is what grows: events × watchers. Subsetting bounds each proxy's connections, not what it "
        "watches; the shared resolver (`SIDELB_RESOLVER`) turns the watchers of a Service from one per proxy into "
        "one per resolver replica and sends proxies only the endpoints that changed.", ""]


def write_results(text):
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "memory", "apiserver"], default="all")
    parser.add_argument("--proxies", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--step", type=int, default=20, help="endpoints replaced per slice write")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between slice writes")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    parser.add_argument("--render", action="store_true", help="write the section again from bench/out/scale.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((OUT / "scale.json").read_text())
        write_results(section(saved["memory"], saved["apiserver"], argparse.Namespace(**saved["args"]), saved["seconds"]))
        return
    for binary in (PROXY, BACKEND):
        if not binary.exists():
            sys.exit(f"{binary} is missing: make release")
    WORK.mkdir(parents=True, exist_ok=True)
    work = WORK / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.time()
    mem = memory(work) if args.part in ("all", "memory") else None
    api = apiserver(work, args) if args.part in ("all", "apiserver") else None
    text = section(mem, api, args, time.time() - started)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps({"memory": mem, "apiserver": api, "args": vars(args),
                                                "seconds": time.time() - started}, indent=2))
    print(text)
    if not args.no_write:
        write_results(text)


if __name__ == "__main__":
    main()
