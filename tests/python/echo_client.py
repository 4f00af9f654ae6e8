#!/usr/bin/env python3
"""A Python gRPC app for sidelb's tests: grpcio on ONE channel to a target.

It plays a user's app written in another language than the proxy: it dials
the target (a test backend, or the proxy on localhost) exactly as an app
would, runs N unary calls and one call of each streaming kind plus metadata,
large-message, failure, deadline and cancellation checks, and prints the JSON
summary every app in tests/apps prints (tests/apps/README.md):

    {"language": "python", "target": "...",
     "unary": {"calls": N, "by_backend": {...}, "statuses": {...}},
     "checks": {"server_stream": {"ok": true, "detail": "...", "backends": [...]}, ...}}

The stubs are generated at run time from tests/proto/echo.proto into a
temporary directory (grpcio-tools), so nothing generated is committed.

Needs: pip install grpcio grpcio-tools   (see tests/python/requirements.txt)
"""

import argparse
import json
import os
import sys
import tempfile

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
BACKEND_HEADER = "x-sidelb-backend"


def load_stubs(out_dir):
    """Generates echo_pb2 / echo_pb2_grpc into out_dir and imports them."""
    from grpc_tools import protoc

    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(PROTO_DIR, "echo.proto"),
        ]
    )
    if status != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with {status}")
    sys.path.insert(0, out_dir)
    import echo_pb2
    import echo_pb2_grpc

    return echo_pb2, echo_pb2_grpc


def check(ok, detail, backends=()):
    return {"ok": bool(ok), "detail": detail, "backends": sorted(set(backends))}


def header(metadata, key):
    return [v for (k, v) in (metadata or ()) if k == key]


class Checks:
    def __init__(self, grpc, pb, stub, timeout):
        self.grpc, self.pb, self.stub, self.timeout = grpc, pb, stub, timeout

    def unary(self, calls):
        by_backend, statuses = {}, {}
        for i in range(calls):
            try:
                reply = self.stub.Unary(
                    self.pb.EchoRequest(payload=f"py-{i}".encode()), timeout=self.timeout
                )
                backend, code = reply.backend, "OK"
            except self.grpc.RpcError as e:
                found = header(e.trailing_metadata(), BACKEND_HEADER)
                backend, code = (found[0] if found else None), e.code().name
            statuses[code] = statuses.get(code, 0) + 1
            if backend is not None:
                by_backend[backend] = by_backend.get(backend, 0) + 1
        return {"calls": calls, "by_backend": by_backend, "statuses": statuses}

    def server_stream(self, replies=5):
        request = self.pb.EchoRequest(payload=b"ss", reply_count=replies)
        got = list(self.stub.ServerStream(request, timeout=self.timeout))
        sequences = [r.sequence for r in got]
        ok = sequences == list(range(replies)) and all(r.payload == b"ss" for r in got)
        return check(ok, f"sequences {sequences}", [r.backend for r in got])

    def client_stream(self, messages=4):
        requests = (self.pb.EchoRequest(payload=b"0123456789") for _ in range(messages))
        reply = self.stub.ClientStream(requests, timeout=self.timeout)
        ok = reply.received == messages and reply.received_bytes == 10 * messages
        return check(ok, f"received {reply.received} messages, {reply.received_bytes} bytes", [reply.backend])

    def bidi(self, messages=3, replies_each=2):
        requests = (
            self.pb.EchoRequest(payload=f"b{i}".encode(), reply_count=replies_each)
            for i in range(messages)
        )
        got = list(self.stub.Bidi(requests, timeout=self.timeout))
        # Replies to the k-th message (1-based) carry its payload and received == k.
        expected = [(f"b{i}".encode(), i + 1) for i in range(messages) for _ in range(replies_each)]
        actual = [(r.payload, r.received) for r in got]
        ok = actual == expected and [r.sequence for r in got] == list(range(len(got)))
        return check(ok, f"{len(got)} replies", [r.backend for r in got])

    def metadata(self):
        call = self.stub.Unary.with_call(
            self.pb.EchoRequest(payload=b"md"),
            metadata=(("x-echo-trace", "py-123"), ("x-other", "not-echoed")),
            timeout=self.timeout,
        )
        reply, outcome = call
        headers, trailers = outcome.initial_metadata(), outcome.trailing_metadata()
        ok = (
            header(headers, "x-echo-trace") == ["py-123"]
            and header(trailers, "x-echo-trace") == ["py-123"]
            and not header(headers, "x-other")
            and header(headers, BACKEND_HEADER) == [reply.backend]
        )
        shown = lambda md: ", ".join(f"{k}={v}" for (k, v) in md)
        return check(ok, f"headers [{shown(headers)}], trailers [{shown(trailers)}]", [reply.backend])

    def large(self, size):
        up = self.stub.Unary(self.pb.EchoRequest(payload=b"u" * size), timeout=self.timeout)
        down = self.stub.Unary(self.pb.EchoRequest(reply_size=size), timeout=self.timeout)
        ok = len(up.payload) == size and up.payload[:1] == b"u" and len(down.payload) == size
        return check(ok, f"echoed {len(up.payload)} bytes, received {len(down.payload)} bytes", [up.backend, down.backend])

    def failure(self):
        try:
            self.stub.Unary(
                self.pb.EchoRequest(fail_code=9, fail_message="asked to fail"), timeout=self.timeout
            )
            return check(False, "the call succeeded")
        except self.grpc.RpcError as e:
            code, details = e.code().name, e.details()
            backends = header(e.trailing_metadata(), BACKEND_HEADER)
            ok = code == "FAILED_PRECONDITION" and details == "asked to fail" and backends
            return check(ok, f"{code}: {details}", backends)

    def afterwards(self):
        """A plain call on the same channel: (backend or None, status name)."""
        try:
            reply = self.stub.Unary(self.pb.EchoRequest(payload=b"after"), timeout=self.timeout)
            return reply.backend, "OK"
        except self.grpc.RpcError as e:
            return None, e.code().name

    def deadline(self):
        try:
            self.stub.Unary(self.pb.EchoRequest(payload=b"slow", delay_ms=5000), timeout=0.2)
            code = "OK"
        except self.grpc.RpcError as e:
            code = e.code().name
        backend, next_code = self.afterwards()
        ok = code == "DEADLINE_EXCEEDED" and next_code == "OK"
        return check(ok, f"200 ms deadline on a 5 s call: {code}; next call: {next_code}", [backend] if backend else [])

    def cancel(self):
        request = self.pb.EchoRequest(payload=b"c", reply_count=50, delay_ms=200)
        call = self.stub.ServerStream(request, timeout=self.timeout)
        first = next(call)
        call.cancel()
        try:
            for _ in call:
                pass
            code = "OK"
        except self.grpc.RpcError as e:
            code = e.code().name
        backend, next_code = self.afterwards()
        ok = code == "CANCELLED" and next_code == "OK"
        backends = [first.backend] + ([backend] if backend else [])
        return check(ok, f"cancelled after the first reply: {code}; next call: {next_code}", backends)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to dial")
    parser.add_argument("--authority", help=":authority to send (default: the target)")
    parser.add_argument("--calls", type=int, default=100, help="unary calls to tally")
    parser.add_argument("--large-bytes", type=int, default=5 * 1024 * 1024,
                        help="size of the large-message check (0: skip it)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    args = parser.parse_args()

    try:
        import grpc
    except ImportError:
        sys.exit("echo_client.py needs grpcio and grpcio-tools: pip install grpcio grpcio-tools")

    with tempfile.TemporaryDirectory(prefix="sidelb-py-stubs-") as stubs:
        pb, pb_grpc = load_stubs(stubs)
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if args.authority:
            options.append(("grpc.default_authority", args.authority))
        with grpc.insecure_channel(args.target, options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
            checks = Checks(grpc, pb, pb_grpc.EchoStub(channel), args.timeout)
            summary = {"language": "python", "target": args.target, "unary": checks.unary(args.calls), "checks": {}}
            kinds = ["server_stream", "client_stream", "bidi", "metadata", "failure", "deadline", "cancel"]
            for kind in kinds:
                try:
                    summary["checks"][kind] = getattr(checks, kind)()
                except grpc.RpcError as e:
                    summary["checks"][kind] = check(False, f"{e.code().name}: {e.details()}")
            if args.large_bytes > 0:
                try:
                    summary["checks"]["large"] = checks.large(args.large_bytes)
                except grpc.RpcError as e:
                    summary["checks"]["large"] = check(False, f"{e.code().name}: {e.details()}")
    json.dump(summary, sys.stdout)
    print()


if __name__ == "__main__":
    main()
