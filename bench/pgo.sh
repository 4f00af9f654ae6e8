#!/bin/sh
# Profile-guided release build of sidelb-proxy.
#
# Most of the proxy's time per request goes to HTTP/2 framing and HPACK in
# crates it links; LLVM lays that code out far better when it knows which
# branches traffic takes. So: build the proxy instrumented, send it gRPC
# traffic like a sidecar's (unary calls at saturation and at a low rate,
# server-streaming calls) over three bench backends on 127.0.0.1, merge the
# counts and build again with them. The result behaves exactly like a plain
# release build; it only runs faster.
#
#   bench/pgo.sh [OUT]     binary: OUT/release/sidelb-proxy (OUT: target/pgo)
#
# OUT/release/sidelb-proxy.build says how the binary was built. Without
# llvm-profdata (rustup component llvm-tools), or if training fails, the
# binary is a plain release build and that file says why. POSIX sh, so that
# the image build (Alpine) runs it too.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/target/pgo}
CARGO=${CARGO:-cargo}
PROFILES="$OUT/profiles"
WORK="$OUT/training"
PIDS=""

say() { echo "pgo: $*" >&2; }
# Not every sleep(1) takes fractions (BusyBox may not).
nap() { sleep 0.1 2>/dev/null || sleep 1; }

plain() {
    stop_all
    say "$1; building sidelb-proxy without a profile"
    env -u RUSTFLAGS "$CARGO" build --release --locked -p sidelb-proxy --bin sidelb-proxy --target-dir "$OUT"
    echo "plain release build ($1)" > "$OUT/release/sidelb-proxy.build"
    exit 0
}

# SIGTERM, then wait: the proxy writes its counts as it exits.
stop_all() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
    PIDS=""
}
trap stop_all EXIT INT TERM

# within TRIES COMMAND...: runs COMMAND until it succeeds, at most TRIES times.
within() {
    tries=$1
    shift
    until "$@"; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || return 1
        nap
    done
}

mkdir -p "$OUT"
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ] && command -v rustup >/dev/null 2>&1; then
    rustup component add llvm-tools >/dev/null 2>&1 || true
fi
[ -x "$PROFDATA" ] || plain "llvm-profdata is missing (rustup component add llvm-tools)"

say "building the load tools and an instrumented sidelb-proxy"
"$CARGO" build --release --locked -p sidelb-bench --bin bench-backend --bin grpc-load ||
    plain "the load tools did not build"
TOOLS="$ROOT/target/release"
RUSTFLAGS="-Cprofile-generate=$PROFILES" \
    "$CARGO" build --release --locked -p sidelb-proxy --bin sidelb-proxy --target-dir "$OUT/gen" ||
    plain "the instrumented build failed"
# Build scripts ran instrumented too; only the proxy's own counts are wanted.
rm -rf "$PROFILES" "$WORK"
mkdir -p "$PROFILES" "$WORK"

ADDRS=""
for name in b1 b2 b3; do
    "$TOOLS/bench-backend" --name "$name" --addr 127.0.0.1:0 > "$WORK/$name.out" &
    PIDS="$PIDS $!"
done
for name in b1 b2 b3; do
    within 100 grep -q '^listening ' "$WORK/$name.out" || plain "bench-backend $name did not start"
    ADDRS="$ADDRS${ADDRS:+, }\"$(sed -n 's/^listening //p' "$WORK/$name.out")\""
done
printf 'services:\n  - name: bench\n    namespace: default\n    port: 50051\n    endpoints: [%s]\n' \
    "$ADDRS" > "$WORK/endpoints.yaml"

# Ports from a range the kernel does not hand out for outgoing connections.
BASE=$(( ($$ * 7919 + $(date +%s)) % 20000 + 12000 ))
PORT=$BASE
ADMIN=$((BASE + 1))
SIDELB_DISCOVERY="file:$WORK/endpoints.yaml" \
    SIDELB_UPSTREAMS="bench.default:50051=$PORT" \
    SIDELB_OUTBOUND_ADDR="127.0.0.1:$((BASE + 2))" \
    SIDELB_ADMIN_ADDR="127.0.0.1:$ADMIN" \
    SIDELB_WORKERS=1 SIDELB_LOG=warn \
    LLVM_PROFILE_FILE="$PROFILES/sidelb-%p-%m.profraw" \
    "$OUT/gen/release/sidelb-proxy" 2> "$WORK/sidelb.log" &
PIDS="$PIDS $!"

# load PATH CALLS_PER_S MS [CONNECTIONS]: succeeds if some calls succeeded.
load() {
    "$TOOLS/grpc-load" --target "127.0.0.1:$PORT" --authority bench.default:50051 \
        --path "$1" --rate "$2" --duration-ms "$3" --connections "${4:-4}" \
        --log "$WORK/calls.log" > "$WORK/load.out" 2>/dev/null &&
        grep -q '"ok": [1-9]' "$WORK/load.out"
}
summary() { tail -n 1 "$WORK/load.out" >&2; }

# The first calls wait until the proxy is up and has read its endpoints.
within 50 load /sidelb.test.Echo/Unary 10 100 1 ||
    plain "the instrumented proxy did not serve calls (see $WORK/sidelb.log)"

say "training: unary calls at saturation and at a low rate, server-streaming calls"
{ load /sidelb.test.Echo/Unary 15000 4000 && summary &&
    load /sidelb.test.Echo/Unary 2000 2000 && summary &&
    load /sidelb.test.Echo/ServerStream 5000 2000 && summary; } ||
    plain "the training load failed"

stop_all
ls "$PROFILES"/sidelb-*.profraw > /dev/null 2>&1 || plain "the instrumented proxy wrote no profile"
"$PROFDATA" merge -o "$WORK/merged.profdata" "$PROFILES"/sidelb-*.profraw ||
    plain "llvm-profdata could not merge the profile"
# Named by content: cargo rebuilds when RUSTFLAGS change, not when a file does.
SUM=$(cksum < "$WORK/merged.profdata" | cut -d' ' -f1)
rm -f "$OUT"/sidelb-proxy-*.profdata
PROFILE="$OUT/sidelb-proxy-$SUM.profdata"
mv "$WORK/merged.profdata" "$PROFILE"

say "building sidelb-proxy with the profile"
RUSTFLAGS="-Cprofile-use=$PROFILE" \
    "$CARGO" build --release --locked -p sidelb-proxy --bin sidelb-proxy --target-dir "$OUT" ||
    plain "the build with the profile failed"
echo "profile-guided (trained on unary and server-streaming gRPC through 3 backends)" \
    > "$OUT/release/sidelb-proxy.build"
say "done: $OUT/release/sidelb-proxy"
