# sidelb: build, test, demo, bench, images.
#
#   make demo    the proxy balancing one gRPC connection over changing backends, no cluster needed
#   make test    everything: unit, end-to-end, other-language clients, chart
#   make pgo     sidelb-proxy built with a profile of its own gRPC traffic (faster)
#   make bench   sidelb against a direct connection, nginx and HAProxy, and a rolling restart
#                through each; writes bench/RESULTS.md
#   make bench-scale  a proxy's memory with 1,000s of endpoints, and 200 proxies watching one
#                Service of 1,000 endpoints on a real control plane while it rolls (about 2 min once built);
#                writes its section of bench/RESULTS.md
#   make fuzz    the property-based fuzz targets (fuzz/) with many cases (PROPTEST_CASES)
#   make cluster a local Kubernetes control plane built from source (cluster/Makefile.inc)
#   make demo-cluster  the chart, the real webhook, injected pods and a scale-up on that control plane
#   make compare the workarounds (ClusterIP, headless + round_robin, ...) run beside sidelb
#                on that control plane; prints their table (docs/compare.md)
#   make deps    what `make test` needs beyond the toolchains (each target sets up its own)

.DEFAULT_GOAL := all
include charts/Makefile.inc
include cluster/Makefile.inc

CARGO ?= cargo

# Set-up, once and then reused (scripts/ensure.sh says how): every target that
# runs Python, Node or a system tool depends on the deps-* target for it.
#   deps-python  target/venv from tests/requirements.txt; PYTHON=... uses another
#                interpreter instead (it must have those packages)
#   deps-node    node_modules/ from package-lock.json
#   deps-apps    the apps of tests/apps that are built (Go with protoc from apt,
#                Java with Maven) into target/apps
#   deps-rust    the rustfmt and clippy components
#   deps-tools   the system tools of TEST_TOOLS (CMD:DEBIAN-PACKAGE), with apt-get
#   deps-bench   those of BENCH_TOOLS (h2load, nginx, HAProxy)
# A target that needs another tool runs `$(ENSURE) apt CMD:PACKAGE`, or adds
# it to TEST_TOOLS when `make test` needs it.
ENSURE := scripts/ensure.sh
VENV_PYTHON := $(CURDIR)/target/venv/bin/python
PYTHON ?= $(VENV_PYTHON)
# The tests' interpreter (sidelb-test-env reads it).
export SIDELB_PYTHON := $(PYTHON)
TEST_TOOLS := kubectl:kubernetes-client chromium:chromium
BENCH_TOOLS := h2load:nghttp2-client nginx:nginx haproxy:haproxy taskset:util-linux curl:curl

.PHONY: all build release pgo test test-rust test-python lint demo compare bench bench-scale fuzz images clean \
	deps deps-python deps-node deps-apps deps-rust deps-tools deps-bench

all: build

deps: deps-python deps-node deps-apps deps-rust deps-tools

deps-python:
ifeq ($(PYTHON),$(VENV_PYTHON))
	@$(ENSURE) python
else
	@echo "using PYTHON=$(PYTHON) (it needs the packages of tests/requirements.txt)"
endif

deps-node:
	@$(ENSURE) node

deps-apps:
	@$(ENSURE) go-app
	@$(ENSURE) java-app

deps-rust:
	@$(ENSURE) rustup rustfmt clippy

deps-tools:
	@$(ENSURE) apt $(TEST_TOOLS)

deps-bench:
	@$(ENSURE) apt $(BENCH_TOOLS)

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release -p sidelb-proxy -p sidelb-injector -p sidelb-bench --bins
	$(CARGO) build --release -p sidelb-tests --bin sidelb-test-backend

# sidelb-proxy built with a profile of gRPC traffic through it (bench/pgo.sh):
# target/pgo/release/sidelb-proxy, what `make bench` measures.
pgo:
	CARGO=$(CARGO) sh bench/pgo.sh

test: deps build lint cluster-build test-rust test-python

test-rust: deps
	$(CARGO) test --workspace -- --test-threads=2

test-python: deps-python
	@if [ -d charts/tests ]; then $(PYTHON) -m pytest -q charts/tests; fi

lint: deps-rust
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The demo's figures are shares of requests, not speed: a debug build does.
demo:
	$(CARGO) build -p sidelb-proxy -p sidelb-tests --bins
	./target/debug/sidelb-demo

# A control plane of its own with CoreDNS (target/compare), wiped first and
# stopped after, as demo-cluster does; about 9 minutes warm (docs/compare.md).
# COMPARE_FLAGS="--quick --systems round-robin,sidelb" passes flags on.
COMPARE_CLUSTER_DIR := $(CURDIR)/target/compare

compare: deps-python deps-tools deps-apps
	@$(ENSURE) apt haproxy:haproxy
	$(CARGO) build --workspace --bins
	SIDELB_CLUSTER_DIR=$(COMPARE_CLUSTER_DIR) cluster/cluster.sh wipe
	SIDELB_CLUSTER_DIR=$(COMPARE_CLUSTER_DIR) cluster/cluster.sh dns
	status=0; timeout 1500 ./target/debug/sidelb-compare --cluster-dir $(COMPARE_CLUSTER_DIR) $(COMPARE_FLAGS) || status=$$?; \
	  SIDELB_CLUSTER_DIR=$(COMPARE_CLUSTER_DIR) cluster/cluster.sh down; exit $$status

bench: deps-python deps-bench release pgo
	$(PYTHON) bench/run.py
	$(PYTHON) bench/rollout.py

# Not part of `make test`: minutes of CPU, a control plane of its own
# (target/bench-scale/cluster, stopped at the end).
bench-scale: deps-python cluster-build
	$(CARGO) build --release -p sidelb-proxy -p sidelb-bench --bins
	$(PYTHON) bench/scale.py

# `make test` runs every fuzz target briefly; this runs them long, optimised
# but with overflow checks (profile `fuzz`). PROPTEST_CASES=N to choose.
PROPTEST_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(PROPTEST_CASES) $(CARGO) test --profile fuzz -p sidelb-fuzz -- --test-threads=2

clean:
	$(CARGO) clean
