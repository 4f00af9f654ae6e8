#!/usr/bin/env python3
"""sidelb against a direct connection, nginx and HAProxy, in one run.

The same three lean gRPC backends (bench-backend) serve every target; the
same h2load loads hit every target:

- saturation: unary calls as fast as the target takes them (requests/s),
  with the target's CPU seconds per 10k requests and its peak RSS;
- fixed rate: a moderate, steady rate, for p50/p99 latency (from h2load's
  per-request log) and CPU per request where a sidecar usually lives;
- streaming: server-streaming calls of 10 messages each, at saturation;
- share: how the target spread the saturation run over the backends.

This machine is shared and its speed moves by tens of percent from one second
to the next. So that a slow moment hits every target alike, all targets run
side by side and each load is cut into short slices taken in turn (targets
A, B, C, ..., then B, C, ..., A, and so on); a target's figure pools its slices, and the
table shows the median over rounds. A target is idle while another is
measured.

The targets run on core 0; h2load and the backends share core 1, the same for
every target. Results go to bench/RESULTS.md (and bench/out/). Every load is
bounded in time; all traffic stays on 127.0.0.1.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from targets import (BIN, LOAD_CORE, OUT, PGO_BIN, PROXY_CORE, ROOT, Backends, Direct, Haproxy, Nginx,  # noqa: E402
                     Sidelb, SidelbPlain, cpu_model, cpu_seconds, pinned, sidelb_binary, sidelb_build, status_kib)

UNARY_PATH = "/sidelb.test.Echo/Unary"
STREAM_PATH = "/sidelb.test.Echo/ServerStream"
TARGETS = {"direct": Direct, "nginx": Nginx, "haproxy": Haproxy, "sidelb": Sidelb, "sidelb-plain": SidelbPlain}


def h2load(port, path, body, *, clients, streams, seconds=None, requests=None, rps=None, log=None):
    argv = ["h2load", "-t", "1", "-c", str(clients), "-m", str(streams),
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)]
    if seconds:
        argv += ["-D", f"{round(seconds * 1000)}ms"]
    if requests:
        argv += ["-n", str(requests)]
    if rps:
        argv += ["--rps", str(rps)]
    if log:
        argv += ["--log-file", str(log)]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, timeout=120).stdout
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not done:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    return {"succeeded": int(done.group(4)), "failed": int(done.group(5)) + int(done.group(6))}


def percentiles(logs):
    """p50 and p99 in ms of the successful calls in h2load's `--log-file`s."""
    durations = []
    for log in logs:
        for line in pathlib.Path(log).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "200":
                durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    if not durations:
        return None, None
    p = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))]
    return p(0.50), p(0.99)


class Tally:
    """One target's load in one round, summed over its slices."""

    def __init__(self, backends):
        self.calls = self.failed = 0
        self.seconds = self.cpu = 0.0
        self.served = [0] * len(backends.addrs)
        self.logs = []

    def rps(self):
        return self.calls / self.seconds if self.seconds else 0.0

    def cpu_per_10k(self):
        return self.cpu / (self.calls + self.failed or 1) * 10_000


def in_turns(targets, backends, args, seconds, load):
    """Runs `load(target, seconds, slice_no)` on every target, `args.slices`
    times in rotating order; each target's figures summed over its slices."""
    keys = list(targets)
    tallies = {key: Tally(backends) for key in keys}
    for slice_no in range(args.slices):
        turn = slice_no % len(keys)
        for key in keys[turn:] + keys[:turn]:
            target, tally = targets[key], tallies[key]
            pids = target.pids()
            served0, cpu0 = backends.served(), cpu_seconds(pids)
            result = load(target, seconds, slice_no, tally)
            tally.cpu += cpu_seconds(pids) - cpu0
            tally.served = [t + b - a for t, a, b in zip(tally.served, served0, backends.served())]
            tally.calls += result["succeeded"]
            tally.failed += result["failed"]
            tally.seconds += seconds
    return tallies


def measure_round(round_no, chosen, backends, work, args, body):
    """All chosen targets started side by side, measured in turns, stopped."""
    targets = {}
    try:
        for key in chosen:
            home = work / f"{key}-{round_no}"
            home.mkdir()
            targets[key] = TARGETS[key](backends, home)
        idle_rss = {}
        for key, target in targets.items():
            h2load(target.port, UNARY_PATH, body, clients=1, streams=1, requests=10)
            pids = target.pids()
            idle_rss[key] = status_kib(pids, "VmRSS") / 1024 if pids else None
            h2load(target.port, UNARY_PATH, body, clients=4, streams=32, requests=args.warmup)

        def saturation(target, seconds, _slice_no, _tally):
            return h2load(target.port, UNARY_PATH, body, clients=args.clients, streams=args.streams, seconds=seconds)

        def fixed_rate(target, seconds, slice_no, tally):
            log = work / f"latency-{round_no}-{type(target).__name__}-{slice_no}.log"
            tally.logs.append(log)
            return h2load(target.port, UNARY_PATH, body, clients=4, streams=1, seconds=seconds,
                          rps=args.rate // 4, log=log)

        def streaming(target, seconds, _slice_no, _tally):
            return h2load(target.port, STREAM_PATH, body, clients=args.clients, streams=args.streams, seconds=seconds)

        sat = in_turns(targets, backends, args, args.duration / args.slices, saturation)
        fixed = in_turns(targets, backends, args, args.duration / args.slices, fixed_rate)
        stream = in_turns(targets, backends, args, stream_seconds(args) / args.slices, streaming)
        rows = {}
        for key, target in targets.items():
            pids = target.pids()
            p50, p99 = percentiles(fixed[key].logs)
            total = sum(sat[key].served) or 1
            rows[key] = {
                "target": target.name, "rps": sat[key].rps(), "p50_ms": p50, "p99_ms": p99,
                "failed": sat[key].failed + fixed[key].failed + stream[key].failed,
                "fixed_rps": fixed[key].rps(),
                "cpu_s_per_10k": sat[key].cpu_per_10k() if pids else None,
                "fixed_cpu_s_per_10k": fixed[key].cpu_per_10k() if pids else None,
                "peak_rss_mib": status_kib(pids, "VmHWM") / 1024 if pids else None,
                "idle_rss_mib": idle_rss[key],
                "stream_rps": stream[key].rps(),
                "share": [round(100 * s / total, 1) for s in sat[key].served],
            }
        return rows
    finally:
        for target in targets.values():
            target.stop()


def stream_seconds(args):
    return max(3, args.duration // 2)


def slice_text(seconds, args):
    return f"{seconds / args.slices:g} s"


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
    s = by.get(Sidelb.name)
    h = by.get(Haproxy.name)
    n = by.get(Nginx.name)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`bench/run.py`) on {started}, one run, one machine "
        f"({os.cpu_count()} cores: {cpu_model()}). All targets run side by side and take each load in turns of "
        f"{args.slices} short slices (A B C …, then B C … A, and so on), so a slow moment of the machine hits every target alike; "
        f"every figure is the median of {args.rounds} such rounds.",
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
        f"- Saturation: `h2load -t 1 -c {args.clients} -m {args.streams}` on `{UNARY_PATH}` for {args.duration} s per target "
        f"and round ({args.slices} slices of {slice_text(args.duration, args)}), after {args.warmup} warm-up calls. "
        "CPU is user+system seconds of the target's processes during its slices, per 10k requests "
        "(also measured during the fixed-rate run, where a sidecar usually lives: little batching, a wake-up per request).",
        f"- Fixed rate: `h2load -c 4 -m 1 --rps {args.rate // 4}` ({args.rate} calls/s in all) for {args.duration} s per target "
        f"and round ({args.slices} slices of {slice_text(args.duration, args)}); p50/p99 from the `--log-file` per-request times "
        "of all its slices.",
        f"- Streaming: `{STREAM_PATH}` answering 10 messages per call, at saturation for {stream_seconds(args)} s per target "
        f"and round ({args.slices} slices of {slice_text(stream_seconds(args), args)}).",
        f"- sidelb: {sidelb_build()}."
        + (f" *{SidelbPlain.name}* is `{SidelbPlain.binary.relative_to(ROOT)}` from a plain `cargo build --release`, "
           "for comparison; the targets above are checked against the first." if SidelbPlain.name in by else ""),
        "- RSS: `VmRSS` after 10 calls (idle) and `VmHWM` after all loads (peak), summed over the target's processes.",
        "- Share: calls each backend counted during the saturation run.",
        "",
        "Each round's figures are in `bench/out/results.json` after a run.",
    ]
    write_keeping_sections("\n".join(lines) + "\n")


def write_keeping_sections(text):
    """Writes RESULTS.md, keeping the sections other scripts own (between
    `<!-- NAME:begin -->` and `<!-- NAME:end -->`, e.g. bench/rollout.py's)."""
    results = ROOT / "bench" / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    sections = [m.group(0) for m in re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->\n?", old, flags=re.S)]
    results.write_text(text + "".join("\n" + s.rstrip("\n") + "\n" for s in sections))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of saturation and of fixed-rate load per target and round")
    parser.add_argument("--slices", type=int, default=5,
                        help="each load is cut into this many slices, taken by the targets in turn")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=32, help="concurrent streams per client")
    parser.add_argument("--rate", type=int, default=2000, help="calls/s of the fixed-rate run")
    parser.add_argument("--warmup", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all targets; the table shows each figure's median")
    parser.add_argument("--only", help="comma-separated subset: " + ",".join(TARGETS))
    args = parser.parse_args()
    # The plain build runs too when the measured one is profile-guided.
    default = [key for key in TARGETS if key != "sidelb-plain" or sidelb_binary().parent == PGO_BIN]
    chosen = args.only.split(",") if args.only else default
    unknown = [key for key in chosen if key not in TARGETS]
    if unknown or args.rounds < 1 or args.slices < 1 or args.duration < 1:
        sys.exit(f"bench: --only takes {','.join(TARGETS)}; --rounds, --slices and --duration at least 1"
                 + (f" (unknown: {','.join(unknown)})" if unknown else ""))
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
    backends = Backends(3)
    runs = {key: [] for key in chosen}
    try:
        with tempfile.TemporaryDirectory(prefix="sidelb-bench-") as tmp:
            for round_no in range(1, args.rounds + 1):
                print(f"bench: round {round_no}/{args.rounds}: {', '.join(chosen)} in turns …", flush=True)
                rows = measure_round(round_no, chosen, backends, pathlib.Path(tmp), args, body)
                for key in chosen:
                    print(json.dumps(rows[key]), flush=True)
                    runs[key].append(rows[key])
    finally:
        backends.stop()
    (OUT / "results.json").write_text(json.dumps(runs, indent=2))
    write_results([median_row(runs[key]) for key in chosen], args, started)
    print((ROOT / "bench" / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
