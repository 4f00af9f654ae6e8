# sidelb: build, test, demo, bench, images.
#
#   make demo    the proxy balancing one gRPC connection over changing backends, no cluster needed
#   make test    everything: unit, end-to-end, other-language clients, chart
#   make pgo     sidelb-proxy built with a profile of its own gRPC traffic (faster)
#   make bench   sidelb against a direct connection, nginx and HAProxy, and a rolling restart
#                through each; writes bench/RESULTS.md
#   make fuzz    the property-based fuzz targets (fuzz/) with many cases (PROPTEST_CASES)
#   make cluster a local Kubernetes control plane built from source (cluster/Makefile.inc)

.DEFAULT_GOAL := all
include charts/Makefile.inc
include cluster/Makefile.inc

CARGO ?= cargo
PYTHON ?= python3

.PHONY: all build release pgo test test-rust test-python lint demo bench fuzz images clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release -p sidelb-proxy -p sidelb-injector -p sidelb-bench --bins
	$(CARGO) build --release -p sidelb-tests --bin sidelb-test-backend

# sidelb-proxy built with a profile of gRPC traffic through it (bench/pgo.sh):
# target/pgo/release/sidelb-proxy, what `make bench` measures.
pgo:
	CARGO=$(CARGO) sh bench/pgo.sh

test: build lint cluster-build test-rust test-python

test-rust:
	$(CARGO) test --workspace -- --test-threads=2

test-python:
	@if [ -d charts/tests ]; then $(PYTHON) -m pytest -q charts/tests; fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The demo's figures are shares of requests, not speed: a debug build does.
demo:
	$(CARGO) build -p sidelb-proxy -p sidelb-tests --bins
	./target/debug/sidelb-demo

bench: release pgo
	$(PYTHON) bench/run.py
	$(PYTHON) bench/rollout.py

# `make test` runs every fuzz target briefly; this runs them long, optimised
# but with overflow checks (profile `fuzz`). PROPTEST_CASES=N to choose.
PROPTEST_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(PROPTEST_CASES) $(CARGO) test --profile fuzz -p sidelb-fuzz -- --test-threads=2

clean:
	$(CARGO) clean
