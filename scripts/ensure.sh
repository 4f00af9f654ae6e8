#!/usr/bin/env bash
# What the make targets need, set up once and reused: the one place that knows
# how sidelb's tests, demos and benchmarks get their tools on a machine that
# has only the toolchains (Rust, Python 3, Node + npm, Debian's apt).
#
#   scripts/ensure.sh python                 target/venv from tests/requirements.txt
#   scripts/ensure.sh node                   node_modules/ from package-lock.json
#   scripts/ensure.sh go-app                 target/apps/bin/go-echo-client and go-compare
#                                            (make compare's client and server) from tests/apps/go
#   scripts/ensure.sh java-app               target/apps/bin/java-echo-client.jar from tests/apps/java
#   scripts/ensure.sh rustup COMPONENT...    e.g. rustfmt clippy
#   scripts/ensure.sh apt CMD:PACKAGE...     e.g. kubectl:kubernetes-client h2load:nghttp2-client
#   scripts/ensure.sh apt PACKAGE...         a Debian package with no command to look for
#
# Each step does nothing when what it sets up is already there, so a second
# run costs a few file checksums. The Python and Node environments are keyed
# by the checksum of their lists (and the interpreter's version): change a
# requirements file or package-lock.json and the next run rebuilds them; the
# apps of tests/apps are keyed by their sources, tests/proto and the
# toolchain's version in the same way.
# Python and Node stay inside the clone; system tools come from apt-get
# (run as root, or through password-less sudo); when neither is possible the
# step stops, naming the package to install.
#
# SIDELB_BASE_PYTHON names the interpreter the venv is made from (python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/target/venv
REQUIREMENTS=$ROOT/tests/requirements.txt
BASE_PYTHON=${SIDELB_BASE_PYTHON:-python3}

say() { echo "ensure: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# Holds an exclusive lock on target/.ensure-NAME.lock for the rest of the
# process, so that two make runs at once do not build the same thing twice.
lock() {
    mkdir -p "$ROOT/target"
    if command -v flock >/dev/null; then
        exec 9>"$ROOT/target/.ensure-$1.lock"
        flock 9
    fi
}

# The requirements file and every file it includes (-r / --requirement),
# each once, in the order pip reads them.
requirement_files() {
    local file=$1 dir line include
    case " ${SEEN:-} " in *" $file "*) return ;; esac
    SEEN="${SEEN:-} $file"
    [ -f "$file" ] || die "requirements file $file is missing"
    echo "$file"
    dir=$(dirname "$file")
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
        -r\ * | --requirement\ * | --requirement=*)
            include=${line#*[ =]}
            include=${include%%#*}
            include=$(echo "$include" | tr -d '[:space:]')
            case "$include" in /*) ;; *) include=$dir/$include ;; esac
            requirement_files "$(cd "$(dirname "$include")" && pwd)/$(basename "$include")"
            ;;
        esac
    done <"$file"
}

ensure_python() {
    command -v "$BASE_PYTHON" >/dev/null ||
        die "no $BASE_PYTHON on PATH: install Python 3.9 or newer (or set SIDELB_BASE_PYTHON to one)"
    local files key stamp=$VENV/.sidelb-requirements
    files=$(requirement_files "$REQUIREMENTS")
    key=$({
        "$BASE_PYTHON" -c 'import sys; print(sys.version, sys.executable)'
        for f in $files; do
            echo "$f"
            cat "$f"
        done
    } | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && "$VENV/bin/python" -c '' 2>/dev/null; then
        return
    fi
    lock python
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && "$VENV/bin/python" -c '' 2>/dev/null; then
        return
    fi
    if ! "$BASE_PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        # Debian's own python3 ships venv's pip bootstrap separately.
        ensure_apt python3-venv
    fi
    say "setting up ${VENV#"$ROOT"/} from ${REQUIREMENTS#"$ROOT"/} (once; again only when a requirements list changes)"
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV" ||
        die "$BASE_PYTHON -m venv $VENV failed (on Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" ||
        die "installing ${REQUIREMENTS#"$ROOT"/} into ${VENV#"$ROOT"/} failed (see pip's message above); run make again once it is fixed"
    echo "$key" >"$stamp"
}

ensure_node() {
    local lockfile=$ROOT/package-lock.json stamp=$ROOT/node_modules/.sidelb-package-lock key
    command -v npm >/dev/null && command -v node >/dev/null ||
        die "no node and npm on PATH: install Node.js 20 or newer with npm (on Debian: apt-get install nodejs npm)"
    [ -f "$lockfile" ] || die "package-lock.json is missing: run npm install in $ROOT once and commit it"
    key=$({
        node --version
        cat "$ROOT/package.json" "$lockfile"
    } | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        return
    fi
    lock node
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        return
    fi
    say "installing the npm packages of package-lock.json into node_modules/ (once; again only when it changes)"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed (see npm's message above); run make again once it is fixed"
    echo "$key" >"$stamp"
}

# The checksum of the files named (directories: every file under them, in
# name order) and of the lines given on stdin.
checksum() {
    {
        cat
        find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
}

# tests/apps/go, built with its go.mod's grpc-go. Its stubs are generated by
# protoc with the go.mod's protoc-gen-go and protoc-gen-go-grpc (`tool`
# lines) into a copy of the module under target/apps/build, so that nothing
# generated lands in the clone; Go's module and build caches (~/go,
# ~/.cache/go-build) make a second build nearly free.
ensure_go_app() {
    local src=$ROOT/tests/apps/go build=$ROOT/target/apps/build/go bin=$ROOT/target/apps/bin
    local out=$bin/go-echo-client compare=$bin/go-compare stamp=$ROOT/target/apps/.go-app key
    command -v go >/dev/null ||
        die "no go on PATH: install Go 1.26 or newer (it builds the Go app of tests/apps/go)"
    ensure_apt protoc:protobuf-compiler
    key=$({
        go version
        protoc --version
    } | checksum "$src" "$ROOT/tests/proto")
    if [ -x "$out" ] && [ -x "$compare" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        return
    fi
    lock go-app
    if [ -x "$out" ] && [ -x "$compare" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        return
    fi
    say "building the Go apps of tests/apps/go into ${out#"$ROOT"/} and ${compare#"$ROOT"/} (again only when its sources change)"
    rm -rf "$build"
    mkdir -p "$build/echopb" "$bin"
    cp -R "$src/." "$build/"
    (
        cd "$build"
        export GOFLAGS=-mod=readonly
        GOBIN=$bin go install tool
        local module=sidelb.test/apps/echo-client/echopb
        protoc -I"$ROOT/tests/proto" \
            --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
            --go_out=echopb --go_opt=paths=source_relative --go_opt=Mecho.proto=$module \
            --go-grpc_out=echopb --go-grpc_opt=paths=source_relative --go-grpc_opt=Mecho.proto=$module \
            "$ROOT/tests/proto/echo.proto"
        go build -trimpath -o "$out" .
        go build -trimpath -o "$compare" ./compare
    ) || die "building the Go app failed (see above); run make again once it is fixed"
    echo "$key" >"$stamp"
}

# tests/apps/java, a Maven project whose build directory is
# target/apps/build/java; Maven's repository (~/.m2) keeps what it downloaded,
# so a second build only compiles.
ensure_java_app() {
    local src=$ROOT/tests/apps/java out=$ROOT/target/apps/bin/java-echo-client.jar
    local stamp=$ROOT/target/apps/.java-app key
    ensure_apt javac:default-jdk-headless mvn:maven
    key=$({
        java -version 2>&1
        mvn -v 2>&1 | sed -n 1p
    } | checksum "$src" "$ROOT/tests/proto")
    if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        return
    fi
    lock java-app
    if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
        return
    fi
    say "building the Java app of tests/apps/java into ${out#"$ROOT"/} with Maven (again only when its sources change)"
    rm -rf "$ROOT/target/apps/build/java"
    mkdir -p "$(dirname "$out")"
    mvn -q -B -f "$src/pom.xml" package >&2 ||
        die "building the Java app failed (see Maven's message above); run make again once it is fixed"
    cp "$ROOT/target/apps/build/java/echo-client.jar" "$out"
    echo "$key" >"$stamp"
}

ensure_rustup() {
    local missing=() component installed
    installed=$(rustup component list --installed 2>/dev/null) ||
        die "rustup is not available to add ${*}: install them for your Rust toolchain (they are needed for fmt and clippy)"
    for component in "$@"; do
        grep -q "^$component\(-\|$\)" <<<"$installed" || missing+=("$component")
    done
    [ ${#missing[@]} -eq 0 ] && return
    say "adding the Rust components ${missing[*]}"
    rustup component add "${missing[@]}" >&2 ||
        die "rustup component add ${missing[*]} failed; add them by hand and run make again"
}

# Each argument is CMD:PACKAGE (present when CMD is on PATH, or, for an
# absolute CMD, when that file is executable) or PACKAGE (present when dpkg
# has it installed).
ensure_apt() {
    local spec cmd package missing=() wanted=()
    for spec in "$@"; do
        case "$spec" in
        *:*)
            cmd=${spec%%:*}
            package=${spec#*:}
            if [ "${cmd#/}" != "$cmd" ]; then
                [ -x "$cmd" ] && continue
            else
                command -v "$cmd" >/dev/null && continue
            fi
            wanted+=("$cmd (Debian package $package)")
            ;;
        *)
            package=$spec
            dpkg_has "$package" && continue
            wanted+=("the Debian package $package")
            ;;
        esac
        case " ${missing[*]:-} " in *" $package "*) ;; *) missing+=("$package") ;; esac
    done
    [ ${#missing[@]} -eq 0 ] && return

    local sudo=""
    if ! command -v apt-get >/dev/null; then
        die "needed: $(list "${wanted[@]}"). There is no apt-get here: install them with this system's package manager and run make again"
    fi
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            die "needed: $(list "${wanted[@]}"). Installing them needs root or password-less sudo: as root, run \`apt-get update && apt-get install ${missing[*]}\`, then make again"
        fi
    fi
    say "installing ${missing[*]} with apt-get, for $(list "${wanted[@]}")"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2 ||
        die "apt-get update failed; install ${missing[*]} by hand and run make again"
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed (see above); install them by hand and run make again"
    for spec in "$@"; do
        case "$spec" in
        *:*)
            cmd=${spec%%:*}
            command -v "$cmd" >/dev/null || [ -x "$cmd" ] ||
                die "installed ${spec#*:}, but $cmd is still not found"
            ;;
        esac
    done
}

dpkg_has() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

list() {
    local IFS=,
    echo "$*" | sed 's/,/, /g'
}

[ $# -ge 1 ] || die "usage: $0 python | node | go-app | java-app | rustup COMPONENT... | apt CMD:PACKAGE|PACKAGE..."
step=$1
shift
case "$step" in
python) ensure_python ;;
node) ensure_node ;;
go-app) ensure_go_app ;;
java-app) ensure_java_app ;;
rustup) ensure_rustup "$@" ;;
apt) ensure_apt "$@" ;;
*) die "unknown step '$step': python, node, go-app, java-app, rustup or apt" ;;
esac
