# sidelb: build, test, demo, bench, images.
#
#   make demo    the proxy balancing one gRPC connection over changing backends, no cluster needed
#   make test    everything: unit, end-to-end, other-language clients, chart
#   make bench   sidelb against a direct connection, nginx and HAProxy; writes bench/RESULTS.md

.DEFAULT_GOAL := all
include charts/Makefile.inc

CARGO ?= cargo
PYTHON ?= python3

.PHONY: all build release test test-rust test-python lint demo bench images clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release -p sidelb-proxy -p sidelb-injector -p sidelb-bench --bins

test: build lint test-rust test-python

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

bench: release
	$(PYTHON) bench/run.py

clean:
	$(CARGO) clean
