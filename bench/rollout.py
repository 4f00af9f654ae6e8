#!/usr/bin/env python3
"""A rolling restart under steady load through sidelb, HAProxy and nginx.

Each target starts in front of three gRPC backends (`sidelb-test-backend`,
which on SIGTERM closes its listener, sends GOAWAY, finishes its calls and
exits). A fixed-rate gRPC load (`grpc-load`: open loop, judges every call by
its grpc-status, reconnects and transparently retries never-processed calls
as a gRPC channel does) runs through the target while the backends are
replaced one by one, the way a Deployment rolls: a new backend starts on a
new port, the target is told (its own way, below), the old backend gets
SIGTERM at once and drains, and after it exits the next one follows.

How each target is told, the way each is run in production:
- sidelb: its endpoints file is rewritten (file discovery; in a cluster the
  EndpointSlice watch does the same);
- HAProxy: its runtime API (`set server <backend>/<server> addr <ip> port
  <port>` on the admin socket), no reload;
- nginx (open source has no runtime API for upstreams): the configuration is
  rewritten and reloaded (SIGHUP); old workers finish their requests and
  close their client connections with GOAWAY, and the client reconnects.

Reported per target: calls sent, calls failed before / during / after the
rollout (and of what kind), p99 latency of successful calls before and
during. The section goes into bench/RESULTS.md between markers, leaving the
rest of the file (bench/run.py's table) as it is. Every process is pinned
like bench/run.py (targets on core 0, load and backends on core 1), all traffic
is on 127.0.0.1, every run is bounded in time.
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import targets  # noqa: E402
from targets import (LOAD_CORE, OUT, PROXY_CORE, ROOT, admin_get, cpu_model, free_port, pinned,  # noqa: E402
                 start_sidelb, wait_port, write_endpoints)

BIN = targets.BIN

BEGIN = "<!-- rollout:begin -->"
END = "<!-- rollout:end -->"
AUTHORITY = targets.SIDELB_AUTHORITY
BACKENDS = 3


class Backend:
    def __init__(self, name):
        self.name = name
        self.process = subprocess.Popen(
            pinned(LOAD_CORE, [str(BIN / "sidelb-test-backend"), "--name", name, "--addr", "127.0.0.1:0"]),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"sidelb-test-backend did not start: {line!r}")
        self.addr = line.split()[1]
        self.port = int(self.addr.rsplit(":", 1)[1])

    def terminate(self):
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout=30):
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def stop(process):
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sidelb:
    name = "sidelb (p2c-ewma, file discovery)"
    how = "endpoints file rewritten"

    def __init__(self, work, addrs):
        self.port = free_port()
        self.admin = free_port()
        self.file = work / "endpoints.yaml"
        self.addrs = list(addrs)
        write_endpoints(self.file, self.addrs)
        self.process = start_sidelb(work, self.file, self.port, self.admin)

    def get(self, path):
        return admin_get(self.admin, path)

    def replace(self, old, new):
        self.addrs[self.addrs.index(old.addr)] = new.addr
        write_endpoints(self.file, self.addrs)

    def notes(self):
        metrics = self.get("/metrics")
        retries = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("sidelb_retries_total"))
        return f"{retries:.0f} calls retried on another backend by the proxy"

    def stop(self):
        stop(self.process)


class Haproxy:
    name = "HAProxy 2.6 (proto h2)"
    how = "runtime API `set server … addr`"

    def __init__(self, work, addrs):
        self.port = free_port()
        self.socket = work / "haproxy.sock"
        self.servers = {a: f"b{i + 1}" for i, a in enumerate(addrs)}
        conf = work / "haproxy.cfg"
        conf.write_text(targets.haproxy_conf(self.port, {name: a for a, name in self.servers.items()}, self.socket))
        self.process = subprocess.Popen(pinned(PROXY_CORE, ["haproxy", "-db", "-f", str(conf)]),
                                        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def command(self, line):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall((line + "\n").encode())
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        return reply.decode(errors="replace").strip()

    def replace(self, old, new):
        name = self.servers.pop(old.addr)
        self.servers[new.addr] = name
        reply = self.command(f"set server backends/{name} addr 127.0.0.1 port {new.port}")
        if "changed" not in reply and "no need to change" not in reply:
            raise RuntimeError(f"haproxy refused the address change: {reply}")

    def notes(self):
        return ""

    def stop(self):
        stop(self.process)


class Nginx:
    name = "nginx 1.22 (grpc_pass)"
    how = "configuration rewritten, reload (SIGHUP)"

    def __init__(self, work, addrs):
        self.port = free_port()
        self.work = work
        self.conf = work / "nginx.conf"
        self.addrs = list(addrs)
        self.write()
        self.process = subprocess.Popen(
            pinned(PROXY_CORE, ["nginx", "-c", str(self.conf), "-p", str(work), "-g", "daemon off;"]),
            stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def write(self):
        self.conf.write_text(targets.nginx_conf(self.work, self.port, self.addrs))

    def replace(self, old, new):
        self.addrs[self.addrs.index(old.addr)] = new.addr
        self.write()
        self.process.send_signal(signal.SIGHUP)

    def notes(self):
        return ""

    def stop(self):
        stop(self.process)


def p99(latencies):
    if not latencies:
        return None
    latencies = sorted(latencies)
    return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] / 1000.0


def roll(target_cls, work, args):
    backends = [Backend(f"old-{i + 1}") for i in range(BACKENDS)]
    target = target_cls(work, [b.addr for b in backends])
    log = work / "calls.log"
    # Stopped with SIGINT once the rollout is over; the duration is a bound.
    total_ms = int((args.before + args.after) * 1000) + BACKENDS * int((args.step_bound + args.pause) * 1000)
    load = subprocess.Popen(
        pinned(LOAD_CORE, [str(BIN / "grpc-load"), "--target", f"127.0.0.1:{target.port}",
                           "--authority", AUTHORITY, "--rate", str(args.rate), "--connections", "4",
                           "--duration-ms", str(total_ms), "--delay-ms", str(args.delay), "--log", str(log)]),
        stdout=subprocess.PIPE, text=True)
    new_backends = []
    exits = []
    try:
        started = load.stdout.readline().split()
        t0 = int(started[1]) / 1e6
        time.sleep(args.before)
        rollout_start = time.time()
        for i, old in enumerate(backends):
            new = Backend(f"new-{i + 1}")
            new_backends.append(new)
            target.replace(old, new)
            old.terminate()
            exits.append(old.wait(timeout=args.step_bound))
            time.sleep(args.pause)
        rollout_end = time.time()
        time.sleep(args.after)
        load.send_signal(signal.SIGINT)
        summary = json.loads(load.stdout.read().strip().splitlines()[-1])
        load.wait(timeout=30)
        notes = target.notes()
    finally:
        stop(load)
        target.stop()
        for b in backends + new_backends:
            b.kill()
    windows = {"before": [], "during": [], "after": []}
    failures = {}
    for line in log.read_text().splitlines():
        offset, latency, outcome = line.split(" ", 2)
        at = t0 + int(offset) / 1e6
        if at < t0 + 1:
            continue  # the first second warms the connections up
        window = "before" if at < rollout_start else "during" if at <= rollout_end else "after"
        windows[window].append((int(latency), outcome))
        if outcome != "ok":
            failures[outcome] = failures.get(outcome, 0) + 1
    row = {"target": target.name, "how": target.how, "sent": summary["sent"],
           "rollout_s": round(rollout_end - rollout_start, 2), "drained": sum(1 for e in exits if e == 0),
           "failures": failures, "notes": notes}
    for name, calls in windows.items():
        row[f"calls_{name}"] = len(calls)
        row[f"failed_{name}"] = sum(1 for _, o in calls if o != "ok")
        row[f"p99_{name}_ms"] = p99([lat for lat, o in calls if o == "ok"])
    return row


def combine(rows):
    """The rounds of one target: calls and failures added up, latencies and
    durations as medians."""
    out = dict(rows[0])
    for key in ["sent", "drained"] + [f"{w}_{n}" for w in ("calls", "failed") for n in ("before", "during", "after")]:
        out[key] = sum(r[key] for r in rows)
    for key in ["p99_before_ms", "p99_during_ms", "p99_after_ms", "rollout_s"]:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    out["failures"] = {}
    for r in rows:
        for kind, n in r["failures"].items():
            out["failures"][kind] = out["failures"].get(kind, 0) + n
    out["notes"] = "; ".join(r["notes"] for r in rows if r["notes"])
    return out


def fmt(v):
    return "—" if v is None else f"{v:.2f}"


def section(rows, args, started):
    lines = [
        BEGIN,
        "## Rolling restart under load",
        "",
        f"Written by `bench/rollout.py` (`make bench`) on {started}, same machine ({os.cpu_count()} cores: {cpu_model()}). "
        f"{args.rate} unary calls/s over 4 client connections through each target, each call taking {args.delay} ms at "
        f"its backend (so about {args.rate * args.delay // 1000} are in flight), while the {BACKENDS} backends are "
        "replaced one by one; a call counts as failed unless its grpc-status is 0.",
        "",
        f"Each target rolled {args.rounds} times, interleaved: calls and failures are totals, p99s and the rollout's "
        "length medians.",
        "",
        "| target | told by | calls sent | failed before / during / after | p99 ms before | p99 ms during | rollout s | old backends drained | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kinds = ", ".join(f"{n}× {k}" for k, n in sorted(r["failures"].items(), key=lambda kv: -kv[1])) or "none"
        lines.append(
            f"| {r['target']} | {r['how']} | {r['sent']} | {r['failed_before']} / {r['failed_during']} / {r['failed_after']} "
            f"| {fmt(r['p99_before_ms'])} | {fmt(r['p99_during_ms'])} | {r['rollout_s']} "
            f"| {r['drained']} of {BACKENDS * args.rounds} | {kinds} |")
    notes = [f"- {r['target']}, per round: {r['notes']}." for r in rows if r["notes"]]
    lines += [
        "",
        "How it was run:",
        "",
        f"- Backends: `sidelb-test-backend` (tonic), {BACKENDS} at a time, pinned with the load to core {LOAD_CORE}; "
        "on SIGTERM each closes its listener, sends GOAWAY, finishes its calls and exits. Targets pinned to core "
        f"{PROXY_CORE}, one worker each, configured as in the table above.",
        f"- Each step: a new backend starts on a new port, the target is told (column *told by*), the old backend gets "
        f"SIGTERM at once and the next step starts {args.pause} s after it has exited.",
        f"- Load: `grpc-load` (bench/src/bin/grpc-load.rs), open loop at a fixed rate; it reconnects when a "
        "connection closes and resends a call only if it provably never reached the server (refused, "
        "`REFUSED_STREAM`, above a `GOAWAY`), as gRPC clients do. *Before* is from 1 s after the start to the "
        f"first step ({args.before} s of load), *during* from the first step until the last old backend exited.",
        "- HAProxy and nginx run with the configuration in bench/targets.py (no health checks, their default retries: "
        "connection failures only); HAProxy also has its admin socket.",
        f"- sidelb: {targets.sidelb_build()}.",
    ] + notes + [END]
    return "\n".join(lines) + "\n"


def write_section(text):
    results = ROOT / "bench" / "RESULTS.md"
    current = results.read_text() if results.exists() else "# Benchmark results\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        current = head + text + tail
    else:
        current = current.rstrip("\n") + "\n\n" + text
    results.write_text(current)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=2000, help="calls/s of the load")
    parser.add_argument("--delay", type=int, default=10,
                        help="ms each call takes at the backend, so calls are in flight when one goes")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before the rollout")
    parser.add_argument("--after", type=float, default=2.0, help="seconds of load after it")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between one backend's exit and the next step")
    parser.add_argument("--step-bound", type=float, default=30.0, help="longest wait for an old backend to exit")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rollouts per target, interleaved; calls and failures add up, p99s are medians")
    parser.add_argument("--only", help="comma-separated subset: sidelb,haproxy,nginx")
    parser.add_argument("--bin", help="directory of the binaries (default target/release)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = parser.parse_args()
    if args.bin:
        global BIN
        BIN = pathlib.Path(args.bin).resolve()
    for tool in ["nginx", "haproxy", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"rollout: `{tool}` is missing; install Debian packages nginx haproxy util-linux")
    for binary in ["sidelb-test-backend", "sidelb-proxy", "grpc-load"]:
        if not (BIN / binary).exists():
            sys.exit(f"rollout: {BIN / binary} is missing; run `make release` (or `make bench`)")
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    kinds = {"sidelb": Sidelb, "haproxy": Haproxy, "nginx": Nginx}
    chosen = args.only.split(",") if args.only else list(kinds)
    runs = {key: [] for key in chosen}
    with tempfile.TemporaryDirectory(prefix="sidelb-rollout-") as tmp:
        for round_no in range(1, args.rounds + 1):
            for key in chosen:
                work = pathlib.Path(tmp) / f"{key}-{round_no}"
                work.mkdir()
                print(f"rollout: round {round_no}/{args.rounds}: {kinds[key].name} …", flush=True)
                row = roll(kinds[key], work, args)
                print(json.dumps(row), flush=True)
                runs[key].append(row)
                (OUT / f"rollout-{key}-{round_no}.log").write_text((work / "calls.log").read_text())
    (OUT / "rollout.json").write_text(json.dumps(runs, indent=2))
    rows = [combine(runs[key]) for key in chosen]
    text = section(rows, args, started)
    if not args.no_write:
        write_section(text)
    print(text)


if __name__ == "__main__":
    main()
