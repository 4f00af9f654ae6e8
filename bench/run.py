#!/usr/bin/env python3
"""sidelb against a direct connection, nginx and HAProxy, in one run.

The same three lean gRPC backends (bench-backend) serve every target; the
same h2load load hits each target in turn:

- saturation: unary calls as fast as the target takes them (requests/s),
  with the target's CPU seconds per 10k requests and its peak RSS;
- fixed rate: a moderate, steady rate, for p50/p99 latency (from h2load's
  per-request log);
- streaming: server-streaming calls of 10 messages each, at saturation;
- share: how the target spread the saturation run over the backends.

The target runs alone on core 0; h2load and the backends share core 1, the
same for every target. Results go to bench/RESULTS.md (and bench/out/).
Every load is bounded in time; all traffic stays on 127.0.0.1.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
PGO_BIN = ROOT / "target" / "pgo" / "release"
OUT = ROOT / "bench" / "out"
PROXY_CORE = "0"
LOAD_CORE = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
UNARY_PATH = "/sidelb.test.Echo/Unary"
STREAM_PATH = "/sidelb.test.Echo/ServerStream"


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


def start_sidelb(work, endpoints, port, admin, balancer="p2c-ewma"):
    """sidelb-proxy on core PROXY_CORE, one worker, file discovery, serving the bench
    Service on `port`; returns its process once /ready says so."""
    env = dict(os.environ,
               SIDELB_DISCOVERY=f"file:{endpoints}",
               SIDELB_UPSTREAMS=f"{SIDELB_AUTHORITY}={port}",
               SIDELB_OUTBOUND_ADDR=f"127.0.0.1:{free_port()}",
               SIDELB_ADMIN_ADDR=f"127.0.0.1:{admin}",
               SIDELB_BALANCER=balancer,
               SIDELB_WORKERS="1",
               SIDELB_LOG="warn")
    process = subprocess.Popen(pinned(PROXY_CORE, [str(sidelb_binary())]), env=env,
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

    def __init__(self, backends, work, balancer="p2c-ewma"):
        self.name = f"sidelb {balancer}"
        self.port = free_port()
        endpoints = work / "endpoints.yaml"
        write_endpoints(endpoints, backends.addrs)
        self.process = start_sidelb(work, endpoints, self.port, free_port(), balancer)


def h2load(port, path, body, *, clients, streams, duration=None, requests=None, rps=None, log=None):
    argv = ["h2load", "-t", "1", "-c", str(clients), "-m", str(streams),
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)]
    if duration:
        argv += ["-D", str(duration), "--warm-up-time", "1"]
    if requests:
        argv += ["-n", str(requests)]
    if rps:
        argv += ["--rps", str(rps)]
    if log:
        argv += ["--log-file", str(log)]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, timeout=120).stdout
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    rate = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    if not done or not rate:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    return {"succeeded": int(done.group(4)), "failed": int(done.group(5)) + int(done.group(6)),
            "rps": float(rate.group(3)), "raw": out}


def percentiles(log):
    durations = []
    for line in pathlib.Path(log).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "200":
            durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    if not durations:
        return None, None
    p = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))]
    return p(0.50), p(0.99)


def measure(target_cls, backends, work, args, body):
    target = target_cls(backends, work)
    pids = target.pids()
    try:
        h2load(target.port, UNARY_PATH, body, clients=1, streams=1, requests=10)
        idle_rss = status_kib(pids, "VmRSS") / 1024 if pids else None
        h2load(target.port, UNARY_PATH, body, clients=4, streams=32, requests=args.warmup)
        before_served = backends.served()
        cpu0 = cpu_seconds(pids) if pids else 0.0
        sat = h2load(target.port, UNARY_PATH, body, clients=args.clients, streams=args.streams, duration=args.duration)
        cpu = (cpu_seconds(pids) - cpu0) if pids else None
        served = [a - b for a, b in zip(backends.served(), before_served)]
        log = work / f"latency-{target_cls.__name__}.log"
        cpu0 = cpu_seconds(pids) if pids else 0.0
        fixed = h2load(target.port, UNARY_PATH, body, clients=4, streams=1, duration=args.duration,
                       rps=args.rate // 4, log=log)
        fixed_cpu = (cpu_seconds(pids) - cpu0) if pids else None
        p50, p99 = percentiles(log)
        stream = h2load(target.port, STREAM_PATH, body, clients=args.clients, streams=args.streams,
                        duration=max(3, args.duration // 2))
        peak_rss = status_kib(pids, "VmHWM") / 1024 if pids else None
        total = sum(served) or 1
        # The warm-up's and saturation's requests over the CPU they took.
        per_10k = cpu / (sat["succeeded"] + sat["failed"] or 1) * 10_000 if cpu is not None else None
        fixed_per_10k = (fixed_cpu / (fixed["succeeded"] + fixed["failed"] or 1) * 10_000
                         if fixed_cpu is not None else None)
        return {
            "target": target.name, "rps": sat["rps"], "failed": sat["failed"] + fixed["failed"] + stream["failed"],
            "p50_ms": p50, "p99_ms": p99, "fixed_rps": fixed["rps"],
            "cpu_s_per_10k": per_10k, "fixed_cpu_s_per_10k": fixed_per_10k, "peak_rss_mib": peak_rss, "idle_rss_mib": idle_rss,
            "stream_rps": stream["rps"], "share": [round(100 * s / total, 1) for s in served],
        }
    finally:
        target.stop()


def median_row(rows):
    """Each figure's median over the rounds; the worst failure count."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and key != "failed":
            values = [r[key] for r in rows if r[key] is not None]
            out[key] = statistics.median(values) if values else None
    out["failed"] = max(r["failed"] for r in rows)
    out["share"] = [round(statistics.median(r["share"][i] for r in rows), 1) for i in range(len(rows[0]["share"]))]
    out["rounds"] = len(rows)
    return out


def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"


def write_results(rows, args, started):
    by = {r["target"]: r for r in rows}
    s = next((r for r in rows if r["target"].startswith("sidelb p2c")), None)
    h = by.get(Haproxy.name)
    n = by.get(Nginx.name)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`bench/run.py`) on {started}, one run, one machine "
        f"({os.cpu_count()} cores: {cpu_model()}). Every figure is the median of {args.rounds} rounds; "
        "each round measures every target in turn, so a slow moment of the machine hits all targets alike.",
        "",
        "| target | req/s at saturation | p50 ms | p99 ms | CPU s / 10k req at saturation | CPU s / 10k req at fixed rate | peak RSS MiB | idle RSS MiB | streaming calls/s | share per backend % | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['rps']:.0f} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['cpu_s_per_10k'], 3)} "
            f"| {fmt(r['fixed_cpu_s_per_10k'], 3)} "
            f"| {fmt(r['peak_rss_mib'], 1)} | {fmt(r['idle_rss_mib'], 1)} | {r['stream_rps']:.0f} "
            f"| {' / '.join(str(x) for x in r['share'])} | {r['failed']} |")
    if s and h and n:
        spread = max(abs(x - 100 / len(s["share"])) for x in s["share"])
        checks = [
            ("throughput ≥ 1.2× HAProxy", s["rps"] >= 1.2 * h["rps"], f"{s['rps'] / h['rps']:.2f}×"),
            ("throughput ≥ nginx", s["rps"] >= n["rps"], f"{s['rps'] / n['rps']:.2f}×"),
            ("p99 ≤ HAProxy's and nginx's", s["p99_ms"] <= min(h["p99_ms"], n["p99_ms"]),
             f"{s['p99_ms']:.2f} vs {h['p99_ms']:.2f} / {n['p99_ms']:.2f} ms"),
            ("CPU per 10k at saturation below both", s["cpu_s_per_10k"] < min(h["cpu_s_per_10k"], n["cpu_s_per_10k"]),
             f"{s['cpu_s_per_10k']:.3f} vs {h['cpu_s_per_10k']:.3f} / {n['cpu_s_per_10k']:.3f} s"),
            ("CPU per 10k at the fixed rate below both",
             s["fixed_cpu_s_per_10k"] < min(h["fixed_cpu_s_per_10k"], n["fixed_cpu_s_per_10k"]),
             f"{s['fixed_cpu_s_per_10k']:.3f} vs {h['fixed_cpu_s_per_10k']:.3f} / {n['fixed_cpu_s_per_10k']:.3f} s"),
            ("peak RSS ≤ 30 MiB", s["peak_rss_mib"] <= 30, f"{s['peak_rss_mib']:.1f} MiB"),
            ("idle RSS ≤ 10 MiB", s["idle_rss_mib"] <= 10, f"{s['idle_rss_mib']:.1f} MiB"),
            ("spread within 5 % of even", spread <= 5, f"largest deviation {spread:.1f} points"),
        ]
        lines += ["", "## Targets", "", "| target | met | figure |", "|---|---|---|"]
        lines += [f"| {name} | {'yes' if ok else '**no**'} | {fig} |" for name, ok, fig in checks]
    lines += [
        "",
        "## Settings",
        "",
        f"- Backends: 3 × `bench-backend` (raw HTTP/2 gRPC, one thread each), pinned with h2load to core {LOAD_CORE}.",
        f"- Targets: one worker/thread each (`nginx worker_processes 1`, `haproxy nbthread 1`, `SIDELB_WORKERS=1`), pinned to core {PROXY_CORE}; "
        "nginx and HAProxy balance round robin over keep-alive HTTP/2 connections; sidelb uses file discovery.",
        f"- Saturation: `h2load -t 1 -c {args.clients} -m {args.streams} -D {args.duration} --warm-up-time 1` on `{UNARY_PATH}`, "
        f"after {args.warmup} warm-up calls. CPU is user+system seconds of the target's processes during the run, per 10k requests "
        "(also measured during the fixed-rate run, where a sidecar usually lives: little batching, a wake-up per request).",
        f"- Fixed rate: `h2load -c 4 -m 1 --rps {args.rate // 4}` ({args.rate} calls/s in all) for {args.duration} s; "
        "p50/p99 from `--log-file` per-request times.",
        f"- Streaming: `{STREAM_PATH}` answering 10 messages per call, at saturation for {max(3, args.duration // 2)} s.",
        f"- sidelb: {sidelb_build()}.",
        "- RSS: `VmRSS` after 10 calls (idle) and `VmHWM` after all loads (peak), summed over the target's processes.",
        "- Share: calls each backend counted during the saturation run.",
        "",
        "Raw h2load output is in `bench/out/` after a run.",
    ]
    write_keeping_sections("\n".join(lines) + "\n")


def write_keeping_sections(text):
    """Writes RESULTS.md, keeping the sections other scripts own (between
    `<!-- NAME:begin -->` and `<!-- NAME:end -->`, e.g. bench/rollout.py's)."""
    results = ROOT / "bench" / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    sections = [m.group(0) for m in re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->\n?", old, flags=re.S)]
    results.write_text(text + "".join("\n" + s.rstrip("\n") + "\n" for s in sections))


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured load")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=32, help="concurrent streams per client")
    parser.add_argument("--rate", type=int, default=2000, help="calls/s of the fixed-rate run")
    parser.add_argument("--warmup", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all targets, interleaved; the table shows each figure's median")
    parser.add_argument("--only", help="comma-separated subset: direct,nginx,haproxy,sidelb")
    args = parser.parse_args()
    for tool in ["h2load", "nginx", "haproxy", "taskset", "curl"]:
        if not shutil.which(tool):
            sys.exit(f"bench: `{tool}` is missing; install Debian packages nghttp2-client nginx haproxy util-linux curl")
    for binary in ["bench-backend", "sidelb-proxy"]:
        if not (BIN / binary).exists():
            sys.exit(f"bench: {BIN / binary} is missing; run `make release` (or `make bench`)")
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = OUT / "unary.grpc"
    body.write_bytes(b"\x00\x00\x00\x00\x07\x0a\x05hello")
    targets = {"direct": Direct, "nginx": Nginx, "haproxy": Haproxy, "sidelb": Sidelb}
    chosen = args.only.split(",") if args.only else list(targets)
    backends = Backends(3)
    runs = {key: [] for key in chosen}
    try:
        with tempfile.TemporaryDirectory(prefix="sidelb-bench-") as tmp:
            for round_no in range(1, args.rounds + 1):
                for key in chosen:
                    work = pathlib.Path(tmp) / f"{key}-{round_no}"
                    work.mkdir()
                    print(f"bench: round {round_no}/{args.rounds}: {targets[key].name} …", flush=True)
                    row = measure(targets[key], backends, work, args, body)
                    print(json.dumps(row), flush=True)
                    runs[key].append(row)
    finally:
        backends.stop()
    (OUT / "results.json").write_text(json.dumps(runs, indent=2))
    rows = [median_row(runs[key]) for key in chosen]
    write_results(rows, args, started)
    print((ROOT / "bench" / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
