"""What the benchmarks run: the bench backends and the targets in front of them.

One place for how each target is configured and started (nginx, HAProxy,
sidelb with file discovery, or no proxy at all), for the cores everything is
pinned to, and for reading a process's CPU time and memory from /proc.
bench/run.py and bench/rollout.py both use it, so the two benchmarks measure
the same configurations.
"""

import os
import pathlib
import socket
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
PGO_BIN = ROOT / "target" / "pgo" / "release"
OUT = ROOT / "bench" / "out"
PROXY_CORE = "0"
LOAD_CORE = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def pinned(core, argv):
    return ["taskset", "-c", core] + argv


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def status_kib(pids, key):
    total = 0
    for pid in pids:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                total += int(line.split()[1])
    return total


def children(pid):
    path = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


class Backends:
    def __init__(self, count):
        self.procs, self.addrs = [], []
        for i in range(count):
            p = subprocess.Popen(
                pinned(LOAD_CORE, [str(BIN / "bench-backend"), "--name", f"b{i + 1}", "--addr", "127.0.0.1:0"]),
                stdout=subprocess.PIPE, text=True)
            line = p.stdout.readline().strip()
            if not line.startswith("listening "):
                raise RuntimeError(f"bench-backend did not start: {line!r}")
            self.procs.append(p)
            self.addrs.append(line.split()[1])

    def served(self):
        counts = []
        for addr in self.addrs:
            out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", f"http://{addr}/stats"],
                                 capture_output=True, text=True, timeout=5).stdout
            counts.append(int(out.strip() or 0))
        return counts

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=5)


class Target:
    name = ""
    process = None
    port = 0

    def pids(self):
        return [self.process.pid]

    def stop(self):
        if self.process:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Direct(Target):
    name = "direct (one backend, the floor)"

    def __init__(self, backends, work):
        self.port = int(backends.addrs[0].rsplit(":", 1)[1])

    def pids(self):
        return []


def nginx_conf(work, port, addrs):
    """nginx, one worker, round robin over keep-alive HTTP/2 connections."""
    servers = "\n".join(f"    server {a};" for a in addrs)
    return f"""
worker_processes 1;
error_log {work}/nginx-error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000000;
  http2_max_concurrent_streams 1024;
  client_body_temp_path {work}/nginx-body;
  upstream backends {{
{servers}
    keepalive 256;
    keepalive_requests 1000000000;
  }}
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{ grpc_pass grpc://backends; }}
  }}
}}
"""


def haproxy_conf(port, servers, admin_socket=None):
    """HAProxy, one thread, round robin over `servers` (name → address) with proto h2."""
    lines = "\n".join(f"  server {name} {a} proto h2" for name, a in servers.items())
    stats = f"\n  stats socket {admin_socket} mode 600 level admin" if admin_socket else ""
    return f"""
global
  nbthread 1
  maxconn 4000{stats}
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend grpc
  bind 127.0.0.1:{port} proto h2
  default_backend backends
backend backends
  balance roundrobin
{lines}
"""


class Nginx(Target):
    name = "nginx grpc_pass"

    def __init__(self, backends, work):
        self.port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(nginx_conf(work, self.port, backends.addrs))
        self.process = subprocess.Popen(pinned(PROXY_CORE, ["nginx", "-c", str(conf), "-p", str(work), "-g", "daemon off;"]),
                                        stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def pids(self):
        return [self.process.pid] + children(self.process.pid)


class Haproxy(Target):
    name = "HAProxy 2.6 proto h2"

    def __init__(self, backends, work):
        self.port = free_port()
        conf = work / "haproxy.cfg"
        conf.write_text(haproxy_conf(self.port, {f"b{i + 1}": a for i, a in enumerate(backends.addrs)}))
        self.process = subprocess.Popen(pinned(PROXY_CORE, ["haproxy", "-db", "-f", str(conf)]),
                                        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_port(self.port)


SIDELB_AUTHORITY = "bench.default:50051"


def write_endpoints(path, addrs):
    """sidelb's endpoints file for the bench Service, replaced atomically."""
    listed = ", ".join(f'"{a}"' for a in addrs)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"services:\n  - name: bench\n    namespace: default\n    port: 50051\n"
                         f"    endpoints: [{listed}]\n")
    temporary.rename(path)


def admin_get(port, path):
    """The body of GET `path` on sidelb's admin server, "" if it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
    except OSError:
        return ""


def sidelb_binary():
    """The profile-guided build (`make pgo`) unless the plain one is newer."""
    plain, pgo = BIN / "sidelb-proxy", PGO_BIN / "sidelb-proxy"
    if pgo.exists() and (not plain.exists() or pgo.stat().st_mtime >= plain.stat().st_mtime):
        return pgo
    return plain


def sidelb_build():
    """How the benchmarked sidelb-proxy was built, in words for RESULTS.md."""
    binary = sidelb_binary()
    if binary.parent != PGO_BIN:
        return f"`{binary.relative_to(ROOT)}`, a plain release build (`make pgo` builds the profile-guided one)"
    how = binary.with_name("sidelb-proxy.build")
    return f"`{binary.relative_to(ROOT)}`, " + (how.read_text().strip() if how.exists() else "bench/pgo.sh")


def start_sidelb(work, endpoints, port, admin, balancer="p2c-ewma", binary=None):
    """sidelb-proxy (`binary`, else [`sidelb_binary`]) on core PROXY_CORE, one
    worker, file discovery, serving the bench Service on `port`; returns its
    process once /ready says so."""
    env = dict(os.environ,
               SIDELB_DISCOVERY=f"file:{endpoints}",
               SIDELB_UPSTREAMS=f"{SIDELB_AUTHORITY}={port}",
               SIDELB_OUTBOUND_ADDR=f"127.0.0.1:{free_port()}",
               SIDELB_ADMIN_ADDR=f"127.0.0.1:{admin}",
               SIDELB_BALANCER=balancer,
               SIDELB_WORKERS="1",
               SIDELB_LOG="warn")
    process = subprocess.Popen(pinned(PROXY_CORE, [str(binary or sidelb_binary())]), env=env,
                               stderr=open(work / "sidelb.log", "w"))
    wait_port(port)
    deadline = time.time() + 10
    while time.time() < deadline:
        if admin_get(admin, "/ready").startswith("ready"):
            return process
        time.sleep(0.05)
    raise RuntimeError("sidelb-proxy did not become ready")


class Sidelb(Target):
    name = "sidelb p2c-ewma"
    binary = None

    def __init__(self, backends, work, balancer="p2c-ewma"):
        self.name = type(self).name
        self.port = free_port()
        endpoints = work / "endpoints.yaml"
        write_endpoints(endpoints, backends.addrs)
        self.process = start_sidelb(work, endpoints, self.port, free_port(), balancer, self.binary)


class SidelbPlain(Sidelb):
    """The same proxy from a plain `cargo build --release`, next to the
    profile-guided one, to show what the profile buys."""
    name = "sidelb p2c-ewma, plain build"
    binary = BIN / "sidelb-proxy"


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
