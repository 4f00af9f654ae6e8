#!/usr/bin/env bash
# Builds the control plane's components from source, each at the release its
# Go module under cluster/build/ pins, into a cache outside the clone:
#
#   $SIDELB_CACHE_DIR/<component>-<version>/bin/     (default ~/.cache/sidelb)
#
#   cluster/build.sh                  kubernetes, etcd and coredns
#   cluster/build.sh etcd coredns     only those
#
# For each component it prints one line on stdout, `<component> <version>
# <bin dir>`, which is what cluster/cluster.sh reads. A component already in
# the cache, built by the same recipe (the module's files and the linker
# flags, written to bin/.recipe), is not built again: a warm run takes well
# under a second. Modules come from the Go module proxy only (GOPROXY), go.sum
# is the module's own and is not changed (-mod=readonly). Two builds of the
# same component at once wait for each other (flock).
#
#   kubernetes  kube-apiserver, kube-controller-manager, kubectl from k8s.io/kubernetes,
#               each k8s.io/* staging module replaced by its published release;
#               version stamped as Kubernetes' own build does (hack/lib/version.sh)
#   etcd        etcd from go.etcd.io/etcd/server/v3 (etcdmain)
#   coredns     coredns from github.com/coredns/coredns, its default plugin set
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SIDELB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelb}

say() { echo "cluster/build: $*" >&2; }
die() {
    say "$*"
    exit 1
}

command -v go >/dev/null || die "go is not on PATH; the control plane is built from source with Go (1.25 or newer)"

export GOPROXY=https://proxy.golang.org
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

# The module each component's version is read from, the packages built and
# the binaries they make.
main_module() {
    case $1 in
    kubernetes) echo k8s.io/kubernetes ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    coredns) echo github.com/coredns/coredns ;;
    *) die "unknown component '$1' (known: kubernetes etcd coredns)" ;;
    esac
}
packages() {
    case $1 in
    kubernetes) echo k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl ;;
    etcd) echo . ;;
    coredns) echo github.com/coredns/coredns ;;
    esac
}
binaries() {
    case $1 in
    kubernetes) echo kube-apiserver kube-controller-manager kubectl ;;
    etcd) echo etcd ;;
    coredns) echo coredns ;;
    esac
}

# Linker flags: stripped, and for Kubernetes the version variables its own
# build sets, so that /version and `kubectl version` report the release. The
# build date is the release's own (the module's publication time), so that a
# rebuild of one version makes the same binaries.
ldflags() {
    local component=$1 version=$2 module_dir=$3
    local flags="-s -w"
    if [ "$component" = kubernetes ]; then
        local major minor date package
        major=${version#v}
        minor=${major#*.}
        minor=${minor%%.*}
        major=${major%%.*}
        date=$(cd "$module_dir" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
        for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            flags="$flags -X $package.gitVersion=$version -X $package.gitMajor=$major -X $package.gitMinor=$minor"
            flags="$flags -X $package.gitTreeState=clean -X $package.gitCommit= -X $package.buildDate=$date"
        done
    fi
    echo "$flags"
}

# What a cached build must match: the module's files and the linker flags.
recipe() {
    local module_dir=$1 flags=$2
    {
        echo "ldflags: $flags"
        (cd "$module_dir" && sha256sum go.mod go.sum ./*.go)
    }
}

build() {
    local component=$1 module_dir=$HERE/build/$1 module version dir flags want binary start
    module=$(main_module "$component")
    [ -f "$module_dir/go.mod" ] || die "$module_dir/go.mod is missing"
    version=$(cd "$module_dir" && go list -m -f '{{.Version}}' "$module") ||
        die "cannot read the version of $module from $module_dir/go.mod"
    dir=$CACHE/$component-$version
    mkdir -p "$dir"
    exec 8>"$dir/.lock"
    flock 8
    flags=$(ldflags "$component" "$version" "$module_dir")
    want=$(recipe "$module_dir" "$flags")
    if [ -f "$dir/bin/.recipe" ] && [ "$(cat "$dir/bin/.recipe")" = "$want" ] && present "$component" "$dir/bin"; then
        echo "$component $version $dir/bin"
        exec 8>&-
        return
    fi
    say "building $component $version into $dir/bin, once for this version (see the README for how long it takes)"
    start=$(date +%s)
    rm -rf "$dir/bin.new"
    mkdir -p "$dir/bin.new"
    # shellcheck disable=SC2046
    (cd "$module_dir" && go build -ldflags="$flags" -o "$dir/bin.new/" $(packages "$component")) ||
        die "building $component $version failed (output above)"
    for binary in $(binaries "$component"); do
        [ -x "$dir/bin.new/$binary" ] || die "building $component made no $binary in $dir/bin.new"
    done
    echo "$want" >"$dir/bin.new/.recipe"
    rm -rf "$dir/bin"
    mv "$dir/bin.new" "$dir/bin"
    say "built $component $version in $(($(date +%s) - start)) s"
    echo "$component $version $dir/bin"
    exec 8>&-
}

present() {
    local binary
    for binary in $(binaries "$1"); do
        [ -x "$2/$binary" ] || return 1
    done
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kubernetes etcd coredns)
for component in "${components[@]}"; do
    main_module "$component" >/dev/null
    build "$component"
done
